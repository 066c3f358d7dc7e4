"""The headers every response carries, whoever writes it (the app, or the gunicorn
worker answering a request its parser refused), as OpenClaw's gateway sends them: no
content sniffing of a JSON or event-stream body, and no Referer carrying a URL on."""

from __future__ import annotations

SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
