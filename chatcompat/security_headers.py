"""The headers every response carries, whoever writes it (the app, or the gunicorn
worker answering a request its parser refused), as OpenClaw's gateway sends them: no
content sniffing of a JSON or event-stream body, and no Referer carrying a URL on."""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Response

SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def init_app(app: Flask) -> None:
    """Put :data:`SECURITY_HEADERS` on every response of ``app``, errors included."""
    app.after_request(_add_security_headers)


def _add_security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response
