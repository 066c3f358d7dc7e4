"""API errors, each a class with its status, OpenAI ``type`` and ``code``.

Every error leaves the gateway as ``{"error": {"message", "type", "param", "code"}}``
with ``Content-Type: application/json``: views raise, :func:`init_app` renders.
What the layers below raise becomes one of them at one boundary each:
:func:`from_agent_error` for an agent's failures, :func:`map_store_errors` for the
session store's.

Tree::

    APIError                          500 api_error / internal_error
    ├── InvalidRequest                400 invalid_request_error / invalid_value
    │   ├── InvalidJSON               400 invalid_json
    │   ├── InvalidBody               400 invalid_body (cut off, unreadable)
    │   │   └── InvalidChunkedEncoding 400 invalid_chunked_encoding
    │   ├── BadRequestLine            400 invalid_request_line  (from gunicorn's parser)
    │   ├── BadHeader                 400 invalid_header        (from gunicorn's parser)
    │   ├── MissingParameter          400 missing_required_parameter
    │   ├── UnknownParameter          400 unknown_parameter (not a field of OpenAI's request)
    │   ├── UnsupportedParameter      400 unsupported_parameter (the gateway or the
    │   │                             routed agent's backend does not take the field)
    │   ├── UnsupportedValue          400 unsupported_value (modalities audio...)
    │   ├── InvalidImage              400 invalid_image (refused by the agent's image policy)
    │   ├── InvalidSessionKey         400 invalid_session_key
    │   │   └── ReservedSessionKey    400 reserved_session_key (subagent:, cron:, acp:)
    │   ├── ModelNotAllowed           400 model_not_allowed (x-openclaw-model)
    │   └── InvalidIdempotencyKey     400 invalid_idempotency_key
    ├── AuthenticationFailed          401 authentication_error / invalid_api_key
    ├── PermissionDenied              403 permission_error / permission_denied (a key's scope)
    ├── NotFound                      404 not_found
    │   ├── EndpointDisabled          404 endpoint_disabled
    │   ├── ModelNotFound             404 model_not_found
    │   ├── SessionNotFound           404 session_not_found (another key's session)
    │   ├── ResponseNotFound          404 response_not_found (GET/DELETE /v1/responses/{id})
    │   └── PreviousResponseNotFound  404 previous_response_not_found
    ├── MethodNotAllowed              405 method_not_allowed (+ Allow)
    ├── RequestTimeout                408 request_timeout (the body did not arrive in time)
    ├── SessionBusy                   409 session_busy
    ├── ResponseContinued             409 response_continued (continued meanwhile)
    ├── IdempotencyKeyInUse           409 idempotency_key_in_use
    ├── PayloadTooLarge               413 payload_too_large
    ├── RequestLineTooLong            414 request_line_too_long   (from gunicorn's parser)
    ├── ExpectationFailed             417 expectation_failed      (from gunicorn's parser)
    ├── IdempotencyKeyReused          422 idempotency_key_reused
    ├── TooManyAuthFailures           429 rate_limit_error (+ Retry-After)
    ├── RateLimitExceeded             429 rate_limit_error / rate_limit_exceeded (a key's
    │                                 limits; + Retry-After)
    ├── ClientGone                    499 client_closed_request (logged only: the client
    │                                 closed its connection and the run was cancelled)
    ├── HeaderFieldsTooLarge          431 header_fields_too_large (from gunicorn's parser)
    ├── UpstreamRejected              upstream's 4xx status, type and code
    ├── TransferCodingNotImplemented  501 unsupported_transfer_coding (from gunicorn's parser)
    ├── UpstreamFailed                502 api_error / upstream_error
    │   └── ToolChoiceNotSatisfied    502 tool_choice_not_satisfied (the reply did not
    │                                 call the tool the request's tool_choice demands)
    ├── StoreUnavailable              503 api_error / store_unavailable
    │   └── TurnMayNotBeStored        503 store_unavailable (the turn's write failed)
    ├── AgentUnavailable              503 api_error / agent_unavailable (+ Retry-After)
    └── GatewayTimeout                504 api_error / timeout
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import typing as t

from flask import Response
from werkzeug.exceptions import HTTPException

from . import redaction
from .agents import base as agents_base
from .sessions import base as sessions_base

if t.TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)


class APIError(Exception):
    """Base of the errors rendered as an OpenAI error envelope."""

    status: int = 500
    type: str = "api_error"
    code: str | None = "internal_error"
    message: str = "The server had an error while processing your request."

    def __init__(self, message: str | None = None, param: str | None = None) -> None:
        super().__init__(message or self.message)
        if message is not None:
            self.message = message
        self.param = param

    def to_dict(self) -> dict[str, t.Any]:
        """The envelope, without any configured secret (upstreams quote keys): the JSON
        error and the stream's error frame are both made from it."""
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"error": redaction.SECRETS.redact_value(error)}

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> bytes:
        """The envelope as sent: compact JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    def get_response(self) -> Response:
        return Response(
            self.body(),
            status=self.status,
            headers=self.headers(),
            content_type="application/json",
        )


class InvalidRequest(APIError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"
    message = "The request is invalid."


class InvalidJSON(InvalidRequest):
    code = "invalid_json"
    message = "The request body is not valid JSON."


class InvalidBody(InvalidRequest):
    code = "invalid_body"
    message = "The request body could not be read."


class InvalidChunkedEncoding(InvalidBody):
    code = "invalid_chunked_encoding"
    message = "The request body's chunked transfer encoding is malformed."


class BadRequestLine(InvalidRequest):
    code = "invalid_request_line"
    message = "The request line is not valid HTTP/1.1 ('METHOD target HTTP/1.1')."


class BadHeader(InvalidRequest):
    code = "invalid_header"
    message = "A request header is not valid HTTP/1.1."


class MissingParameter(InvalidRequest):
    code = "missing_required_parameter"


class UnknownParameter(InvalidRequest):
    code = "unknown_parameter"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class UnsupportedValue(InvalidRequest):
    code = "unsupported_value"


class InvalidImage(InvalidRequest):
    """An ``image_url`` part the routed agent's image policy refuses (``param`` names it)."""

    code = "invalid_image"


class InvalidSessionKey(InvalidRequest):
    code = "invalid_session_key"


class ReservedSessionKey(InvalidSessionKey):
    """A session key in one of OpenClaw's internal namespaces (its runs of sub-agents,
    cron jobs, ACP clients): an HTTP client must not write into those sessions."""

    code = "reserved_session_key"


class ModelNotAllowed(InvalidRequest):
    """``x-openclaw-model`` names a model the agent does not list in ``models``."""

    code = "model_not_allowed"


class InvalidIdempotencyKey(InvalidRequest):
    code = "invalid_idempotency_key"


class AuthenticationFailed(APIError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"
    message = "Missing or invalid credential. Send 'Authorization: Bearer <token>'."

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class PermissionDenied(APIError):
    status = 403
    type = "permission_error"
    code = "permission_denied"
    message = "This API key may not do this."


class NotFound(APIError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"
    message = "Not found."


class EndpointDisabled(NotFound):
    code = "endpoint_disabled"

    def __init__(self, switch: str = "gateway.http.endpoints.chatCompletions.enabled") -> None:
        super().__init__(
            f"This endpoint is disabled. Enable it with {switch}: true in the configuration."
        )


class ResponseNotFound(NotFound):
    code = "response_not_found"


class PreviousResponseNotFound(NotFound):
    code = "previous_response_not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class SessionNotFound(NotFound):
    code = "session_not_found"
    message = "No such session for this API key."


class MethodNotAllowed(APIError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"

    def __init__(self, allowed: t.Iterable[str], message: str | None = None) -> None:
        self.allowed = sorted(set(allowed))
        super().__init__(message or f"Method not allowed. Use {', '.join(self.allowed)}.")

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class RequestTimeout(APIError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"
    message = "Request body timeout: the request body did not arrive in time."


class SessionBusy(APIError):
    status = 409
    type = "invalid_request_error"
    code = "session_busy"
    message = "Another run on this session is still in progress; retry when it has finished."


class ResponseContinued(APIError):
    status = 409
    type = "invalid_request_error"
    code = "response_continued"
    message = (
        "previous_response_id was continued by another request while this one waited for "
        "the session; send the request again to branch off from it."
    )


class IdempotencyKeyInUse(APIError):
    status = 409
    type = "invalid_request_error"
    code = "idempotency_key_in_use"
    message = (
        "A request with this Idempotency-Key is still running; retry when it has finished "
        "to get its reply."
    )


class IdempotencyKeyReused(APIError):
    status = 422
    type = "invalid_request_error"
    code = "idempotency_key_reused"
    message = (
        "This Idempotency-Key was already used for a different request (another agent, "
        "session or body). Send a new key with a new request."
    )


class PayloadTooLarge(APIError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RequestLineTooLong(APIError):
    status = 414
    type = "invalid_request_error"
    code = "request_line_too_long"
    message = "The request line (method, target, version) is too long."


class ExpectationFailed(APIError):
    status = 417
    type = "invalid_request_error"
    code = "expectation_failed"
    message = "The Expect header asks for something this server does not do."


class ClientGone(APIError):
    """The client closed its connection; the run was cancelled (logged as 499, like nginx)."""

    status = 499
    code = "client_closed_request"
    message = "The client closed the connection."


class HeaderFieldsTooLarge(APIError):
    status = 431
    type = "invalid_request_error"
    code = "header_fields_too_large"
    message = "The request's header fields are too large or too many."


class TooManyAuthFailures(APIError):
    status = 429
    type = "rate_limit_error"
    code = "too_many_auth_failures"
    message = "Too many failed authentication attempts. Please try again later."

    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__()
        self.retry_after = max(1, math.ceil(retry_after_seconds))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RateLimitExceeded(APIError):
    """A named key is over one of its limits (requests or tokens per minute, runs)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after_seconds))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class UpstreamRejected(APIError):
    """The agent's upstream refused the request: its status and details pass through."""

    def __init__(
        self, status: int, message: str, type: str, code: str | None, param: str | None = None
    ) -> None:
        super().__init__(message, param)
        self.status = status
        self.type = type
        self.code = code


class UpstreamFailed(APIError):
    status = 502
    code = "upstream_error"
    message = "The agent failed to produce a reply."


class ToolChoiceNotSatisfied(UpstreamFailed):
    """The request's ``tool_choice`` demanded a tool call and the reply made none (or
    not of the named tool): the backend did not enforce it, so the gateway does."""

    code = "tool_choice_not_satisfied"
    message = "tool_choice=required was not satisfied by the agent's reply."


class TransferCodingNotImplemented(APIError):
    status = 501
    type = "invalid_request_error"
    code = "unsupported_transfer_coding"
    message = "The request's Transfer-Encoding is not supported; use chunked or none."


class StoreUnavailable(APIError):
    status = 503
    code = "store_unavailable"
    message = "The session store is unavailable; nothing was run or stored. Retry later."


class TurnMayNotBeStored(StoreUnavailable):
    """The store failed while (or after) the turn was written: the outcome is unknown."""

    def __init__(self, keyed: bool) -> None:
        retry = (
            "Retry with the same Idempotency-Key to get its reply without running it again."
            if keyed
            else "A retry runs it again; send an Idempotency-Key to make retries safe."
        )
        super().__init__(
            "The session store failed while saving this turn: the turn may not have been "
            f"stored. {retry}"
        )


class AgentUnavailable(APIError):
    status = 503
    code = "agent_unavailable"
    message = "The agent has no free capacity right now. Retry later."

    def __init__(self, message: str | None = None, retry_after_seconds: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after_seconds))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class GatewayTimeout(APIError):
    status = 504
    code = "timeout"
    message = "The agent did not answer in time."


def from_agent_error(exc: BaseException) -> APIError:
    """The error the client sees for what an agent's run raised.

    :param exc: the agent's :class:`~chatcompat.agents.base.AgentError`, an
        :class:`APIError` (kept as it is), or anything else (a bug: logged, 500).
    """
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, agents_base.AgentRejected):
        return UpstreamRejected(exc.status, exc.message, exc.type, exc.code, exc.param)
    if isinstance(exc, agents_base.AgentUnavailable):
        return AgentUnavailable(exc.message, exc.retry_after_seconds)
    if isinstance(exc, agents_base.AgentTimeout):
        return GatewayTimeout(exc.message)
    if isinstance(exc, agents_base.AgentError):
        return UpstreamFailed(exc.message)
    log.error("agent run raised an unexpected error", exc_info=exc)
    return APIError()


@contextlib.contextmanager
def map_store_errors(*, unknown_outcome: bool = False, keyed: bool = False) -> t.Iterator[None]:
    """Raise the session store's failures inside the block as API errors.

    :param unknown_outcome: the block sends a write again that an earlier attempt may
        have made: whatever fails now, the client learns it may have been stored.
    :param keyed: that write holds the reply to an Idempotency-Key (the 503 says how
        to retry).
    :raise StoreUnavailable: the store cannot be reached (503).
    :raise TurnMayNotBeStored: with ``unknown_outcome``, any failure (503).
    :raise APIError: the store refused the operation (500).
    """
    try:
        yield
    except sessions_base.StoreUnreachable as exc:
        log.warning("session store unavailable: %s", exc)
        if unknown_outcome:
            raise TurnMayNotBeStored(keyed=keyed) from exc
        raise StoreUnavailable() from exc
    except sessions_base.StoreError as exc:
        log.error("session store error: %s", exc)
        if unknown_outcome:
            raise TurnMayNotBeStored(keyed=keyed) from exc
        raise APIError("The session store could not save or read this turn.") from exc


def init_app(app: Flask) -> None:
    """Render every error, ours and werkzeug's routing errors, as the JSON envelope.

    Registered on the app, not a blueprint: blueprint handlers never see routing
    404/405.
    """

    @app.errorhandler(APIError)
    def render_api_error(error: APIError) -> Response:
        return error.get_response()

    @app.errorhandler(HTTPException)
    def render_http_exception(error: HTTPException) -> Response:
        return from_http_exception(error).get_response()

    @app.errorhandler(Exception)
    def render_unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return APIError().get_response()


def from_http_exception(error: HTTPException) -> APIError:
    """Translate werkzeug's routing and protocol errors into our classes."""
    code = error.code or 500
    if code == 404:
        return NotFound("Unknown path. See /openapi.json for the routes this gateway serves.")
    if code == 405:
        allowed = getattr(error, "valid_methods", None) or ()
        return MethodNotAllowed(allowed)
    if code == 413:
        return PayloadTooLarge("The request body is too large.")
    if 400 <= code < 500:
        generic = InvalidRequest(error.description or "Bad request.")
        generic.status = code
        return generic
    return APIError()
