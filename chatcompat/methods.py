"""What every ``/v1`` view checks first (SPEC 3 steps 1 and 2): the endpoint is
enabled, then the method is the route's."""

from __future__ import annotations

from flask import request

from . import errors

# Every method is routed to the views so they can answer 404 (disabled) before 405.
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

CHAT_SWITCH = "gateway.http.endpoints.chatCompletions.enabled"
RESPONSES_SWITCH = "gateway.http.endpoints.responses.enabled"


def require_enabled(enabled: bool, switch: str) -> None:
    """SPEC 3 step 1: a disabled endpoint answers 404, naming its switch.

    :raise errors.EndpointDisabled: ``enabled`` is false.
    """
    if not enabled:
        raise errors.EndpointDisabled(switch)


def require_method(*allowed: str) -> None:
    """SPEC 3 step 2: any other method is 405 with ``Allow`` (HEAD goes with GET).

    :raise errors.MethodNotAllowed: the request's method is none of ``allowed``.
    """
    method = request.method
    if method not in allowed and not (method == "HEAD" and "GET" in allowed):
        raise errors.MethodNotAllowed(allowed)
