"""Browser access to ``/v1`` from other origins (``gateway.http.cors``), opt-in.

Off unless configured: then no response carries a CORS header and a browser keeps
every cross-origin response from the page. When on, for any path under ``/v1/``
(matched by prefix, so routes added later are covered too):

* a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from
  a listed origin is answered 204 before authentication (a browser never sends
  credentials with it), naming exactly that origin, the methods and the headers the
  API reads;
* every other response to a listed origin, errors and event streams included, names
  the origin in ``Access-Control-Allow-Origin`` and exposes the headers a client
  reads (session key, request id, rate limits);
* an unlisted origin gets nothing: its preflight goes on to the view (405, without
  CORS headers), so the browser refuses the call.

``Vary: Origin`` goes on every ``/v1`` response while CORS is on, so a cache never
hands one origin's answer to another.
"""

from __future__ import annotations

import typing as t

from flask import Response
from flask import request

from .gateway import current_gateway

if t.TYPE_CHECKING:
    from flask import Flask

    from .settings import Cors

PREFIX = "/v1/"
ALLOW_METHODS = "GET, POST, DELETE"
# What the API reads from a request, beyond the headers a browser may always send.
ALLOW_HEADERS = ", ".join(
    (
        "Authorization",
        "Content-Type",
        "Idempotency-Key",
        "x-request-id",
        "x-openclaw-agent-id",
        "x-openclaw-agent",
        "x-openclaw-session-key",
        "x-openclaw-model",
        "x-openclaw-message-channel",
    )
)
# What a page may read from a response (a browser shows it only the safelisted ones).
EXPOSE_HEADERS = ", ".join(
    (
        "x-openclaw-session-key",
        "x-request-id",
        "Retry-After",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    )
)


def init_app(app: Flask) -> None:
    """Answer preflights before the views (and their authentication); add the CORS
    headers to every ``/v1`` response of ``app``."""
    app.before_request(_answer_preflight)
    app.after_request(_add_headers)


def _policy() -> Cors | None:
    """The CORS settings when they apply to this request (a ``/v1`` path), else None."""
    if not request.path.startswith(PREFIX):
        return None
    return current_gateway().settings.cors


def _allowed_origin(cors: Cors) -> str | None:
    origin = request.headers.get("Origin")
    return origin if origin and cors.allows(origin) else None


def _answer_preflight() -> Response | None:
    """The 204 answer to a listed origin's preflight; None lets the request go on."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    cors = _policy()
    if cors is None or _allowed_origin(cors) is None:
        return None
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
    response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
    response.headers["Access-Control-Max-Age"] = str(cors.max_age_seconds)
    return response  # the after-request hook below adds the origin


def _add_headers(response: Response) -> Response:
    cors = _policy()
    if cors is None:
        return response
    response.vary.add("Origin")
    origin = _allowed_origin(cors)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        if request.method != "OPTIONS":
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return response
