"""The ``/v1`` blueprint: chat completions and models. Thin views, in SPEC 3's order."""

from __future__ import annotations

import json
import math
import re
import typing as t

from flask import Blueprint
from flask import Request
from flask import Response
from flask import g
from flask import request

from . import errors
from . import idempotency
from . import metrics
from .gateway import Gateway
from .gateway import current_gateway
from .history import MissingUserMessage
from .history import split_request
from .protocol import chat_completions as chat_protocol
from .protocol.jsonenc import json_response
from .protocol.models import model_entry
from .protocol.models import model_list
from .protocol.sse import SSE_CONTENT_TYPE
from .protocol.sse import SSE_HEADERS
from .request_body import mark_read_whole
from .request_body import read_body
from .request_end import on_request_end
from .routing import agent_id_from_model
from .routing import resolve_agent
from .routing import session_key
from .run import Run
from .sessions.base import IdempotencyRecord
from .sessions.base import StoreUnavailable as StoreUnreachable
from .validation import check_backend_fields
from .validation import forwarded_params
from .validation import validate_request

bp = Blueprint("v1", __name__, url_prefix="/v1")

# Every method is routed to the views so they can answer 404 (disabled) before 405.
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@bp.route("/chat/completions", methods=ANY_METHOD)
def chat_completions() -> Response:
    gateway = _enabled_gateway(allowed="POST")
    body = read_json_body(
        request, gateway.settings.max_body_bytes, gateway.settings.body_timeout_seconds
    )
    validate_request(body)
    try:  # part of the body's checks (SPEC 3 step 5), so before routing
        conversation = split_request(body["messages"])
    except MissingUserMessage as exc:
        raise errors.InvalidRequest(str(exc), param="messages") from exc
    idempotency_key = idempotency.read_key(request.headers.get(idempotency.HEADER))
    agent_config = resolve_agent(
        gateway.settings,
        request.headers.get("x-openclaw-agent-id", request.headers.get("x-openclaw-agent")),
        body.get("model"),
    )
    agent = gateway.agents.get(agent_config.id)
    # Before anything runs: a field this backend cannot take is refused, not dropped.
    check_backend_fields(
        body,
        agent.request_fields,
        agent.takes_extension_fields,
        agent_config.id,
        agent_config.backend,
    )
    key, sticky = session_key(
        agent_config.id, request.headers.get("x-openclaw-session-key"), body.get("user")
    )
    record = g.record
    record.agent = agent_config.id
    record.session_key = key
    record.stream = body.get("stream") is True
    include_usage = (body.get("stream_options") or {}).get("include_usage") is True
    keyed = None
    if idempotency_key is not None:
        named_session = key if sticky else None
        keyed = idempotency.for_request(
            g.principal, idempotency_key, agent_config.id, named_session, body
        )
    run = Run(
        settings=gateway.settings,
        store=gateway.store,
        agent=agent,
        agent_config=agent_config,
        session_key=key,
        sticky=sticky,
        model=body.get("model", "openclaw"),
        client_socket=request.environ.get("gunicorn.socket"),
        record=record,
        idempotency=keyed,
    )
    stored = run.claim()
    if stored is not None:
        return _replay(stored, include_usage)
    run.start(conversation, forwarded_params(body))
    if not record.stream:
        return json_response(chat_protocol.complete(run))
    # The generator may never start (client gone before the first byte, a failure
    # after this view): the lock and the gauge are given back when the request ends.
    on_request_end(request.environ, run.close)
    metrics.ACTIVE_STREAMS.inc()
    on_request_end(request.environ, metrics.ACTIVE_STREAMS.dec)
    body = chat_protocol.stream(run, include_usage)
    return Response(body, content_type=SSE_CONTENT_TYPE, headers=SSE_HEADERS)


def _replay(stored: IdempotencyRecord, include_usage: bool) -> Response:
    """The stored reply of an earlier request with the same Idempotency-Key, in the
    form this request asks for; nothing runs."""
    assert stored.reply is not None and stored.session_key is not None
    g.record.session_key = stored.session_key
    g.record.outcome = "replayed"
    if g.record.stream:
        body = chat_protocol.replay_stream(stored.reply, include_usage)
        response = Response(body, content_type=SSE_CONTENT_TYPE, headers=SSE_HEADERS)
    else:
        response = json_response(stored.reply)
    response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.route("/models", methods=ANY_METHOD)
def list_models() -> Response:
    gateway = _enabled_gateway(allowed="GET")
    ids = ["openclaw", "openclaw/default"] + [f"openclaw/{a.id}" for a in gateway.settings.agents]
    return json_response(model_list(ids))


@bp.route("/models/<path:model_id>", methods=ANY_METHOD)
def get_model(model_id: str) -> Response:
    gateway = _enabled_gateway(allowed="GET")
    agent_id = agent_id_from_model(model_id)
    if agent_id != "default" and (agent_id is None or gateway.settings.agent(agent_id) is None):
        raise errors.ModelNotFound(f"The model {model_id!r} does not exist.", param="model")
    return json_response(model_entry(model_id))


def _enabled_gateway(allowed: str) -> Gateway:
    """SPEC 3 steps 1-3: disabled → 404, wrong method → 405, then authentication."""
    gateway = current_gateway()
    if not gateway.settings.chat_completions_enabled:
        raise errors.EndpointDisabled()
    if request.method != allowed and not (allowed == "GET" and request.method == "HEAD"):
        raise errors.MethodNotAllowed([allowed])
    authenticator = gateway.authenticator
    client = authenticator.client_address(
        request.remote_addr, request.headers.get("x-forwarded-for")
    )
    try:
        # The principal scopes per-credential state (Idempotency-Key) in the views.
        g.principal = authenticator.check(
            request.headers.get("authorization"), client, gateway.store
        )
    except errors.TooManyAuthFailures:
        metrics.AUTH_FAILURES.labels("locked_out").inc()
        raise
    except errors.AuthenticationFailed:
        sent = bool(request.headers.get("authorization"))
        metrics.AUTH_FAILURES.labels("invalid" if sent else "missing").inc()
        raise
    except StoreUnreachable as exc:
        raise errors.StoreUnavailable() from exc
    return gateway


def read_json_body(req: Request, limit: int, timeout_seconds: float) -> t.Any:
    """Read and parse the body (SPEC 3 step 4).

    :param timeout_seconds: the total time the body may take to arrive.
    :raise errors.PayloadTooLarge: over ``limit`` bytes (by Content-Length before
        reading, else while reading).
    :raise errors.RequestTimeout: not all there within ``timeout_seconds``.
    :raise errors.InvalidBody: malformed (chunked encoding) or cut off.
    :raise errors.InvalidJSON: not JSON (an empty body counts as ``{}``).
    """
    if req.content_length is not None and req.content_length > limit:
        raise _too_large(limit)
    raw = read_body(
        req.stream,
        limit + 1,
        content_length=req.content_length,
        sock=req.environ.get("gunicorn.socket"),
        timeout_seconds=timeout_seconds,
    )
    if len(raw) > limit:
        raise _too_large(limit)
    mark_read_whole(req.environ)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise errors.InvalidJSON("The request body is not valid UTF-8 JSON.") from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        message = f"The request body is not valid JSON: {exc.msg} at {where}."
        raise errors.InvalidJSON(message) from exc
    except (ValueError, RecursionError) as exc:
        raise errors.InvalidJSON(f"The request body is not valid JSON: {exc}.") from exc
    # JSON may escape a lone UTF-16 surrogate ("\ud800"): not Unicode, so no store,
    # session key or upstream can take it. Only bodies with such an escape are checked.
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(body):
        raise errors.InvalidJSON(
            "The request body contains a lone UTF-16 surrogate escape (\\ud800-\\udfff), "
            "which is not valid Unicode."
        )
    return body


def _has_lone_surrogate(body: t.Any) -> bool:
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> t.NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    # 1e999 is valid JSON syntax but overflows to inf: no store or upstream takes it.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range for a number")
    return value


def _too_large(limit: int) -> errors.PayloadTooLarge:
    return errors.PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
