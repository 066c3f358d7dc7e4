"""The ``/v1`` blueprint: chat completions and models.

Thin views: :func:`chat_completions` is SPEC 3's list of steps (README "How a request
is handled"), each one call into the module that owns it.
"""

from __future__ import annotations

import typing as t

from flask import Blueprint
from flask import Response
from flask import request

from . import access
from . import auth
from . import errors
from . import idempotency
from . import images
from . import metrics
from . import request_body
from . import requestlog
from . import routing
from . import validation
from .gateway import current_gateway
from .methods import ANY_METHOD
from .methods import CHAT_SWITCH
from .methods import require_enabled
from .methods import require_method
from .protocol import chat_completions as chat_protocol
from .protocol.jsonenc import json_response
from .protocol.models import model_entry
from .protocol.models import model_list
from .protocol.sse import sse_response
from .request_end import on_request_end
from .run import Run

if t.TYPE_CHECKING:
    from .settings import Settings

bp = Blueprint("v1", __name__, url_prefix="/v1")


@bp.route("/chat/completions", methods=ANY_METHOD)
def chat_completions() -> Response:
    """``POST /v1/chat/completions``, step by step; a failing step answers its error.

    :raise errors.APIError: the step's status (404, 405, 401/429, 413/408/400, 400,
        404, 400, 409/422, 409, 5xx), rendered by :mod:`chatcompat.errors`.
    """
    gateway = current_gateway()
    settings = gateway.settings
    # 1. Endpoint disabled → 404. 2. Not POST → 405 (both before authentication).
    require_enabled(settings.chat_completions_enabled, CHAT_SWITCH)
    require_method("POST")
    # 3. Authentication: the principal scopes the Idempotency-Key; a named key's
    # scope and request-rate limit are checked before the body is read (SPEC 16.1).
    principal = _authorize("chat")
    # 4. The body: within its size and time limits, JSON.
    body = request_body.read_json_body(
        request, settings.max_body_bytes, settings.body_timeout_seconds
    )
    # 5. The schema, then what it cannot say: a new turn to answer, the key's form.
    validation.validate_request(body)
    conversation = validation.split_conversation(body)
    idempotency_key = idempotency.read_key(request.headers.get(idempotency.HEADER))
    # 6. The agent, and whether its backend takes every field: refused, never dropped.
    agent_config = routing.resolve_allowed_agent(
        settings,
        principal.agents,
        request.headers.get("x-openclaw-agent-id", request.headers.get("x-openclaw-agent")),
        body.get("model"),
    )
    agent = gateway.agents.get(agent_config.id)
    validation.check_backend_fields(
        body,
        agent.request_fields,
        agent.takes_extension_fields,
        agent_config.id,
        agent_config.backend,
    )
    # 6b. The agent's image policy: every image part that reaches it (400 naming the part).
    new_images = images.check_images(
        body["messages"], agent_config.images, with_bytes=agent.needs_image_bytes
    )
    # The upstream model for this run (x-openclaw-model), if the agent lists it. An
    # API key's model_override scope is checked before this (403, SPEC 16.1).
    model_header = request.headers.get(routing.MODEL_HEADER)
    if model_header is not None and model_header.strip():
        principal.require_scope("model_override")
    model_override = routing.model_override(agent_config, model_header)
    # 7. The session key.
    key, sticky = routing.key_session_key(
        principal.key_id,
        agent_config.id,
        request.headers.get("x-openclaw-session-key"),
        body.get("user"),
        user_keys=settings.session_user_keys,
    )
    record = requestlog.current()
    record.routed(agent_config.id, key, stream=body.get("stream") is True)
    include_usage = (body.get("stream_options") or {}).get("include_usage") is True
    # 8. Idempotency-Key: a repeat of a finished request gets its stored reply.
    keyed = idempotency.for_request(
        principal.id,
        idempotency_key,
        agent_config.id,
        key if sticky else None,
        body,
        model_override=model_override,
    )
    run = Run(
        settings=settings,
        store=gateway.store,
        agent=agent,
        agent_config=agent_config,
        session_key=key,
        sticky=sticky,
        model=body.get("model", "openclaw"),
        client_socket=request.environ.get("gunicorn.socket"),
        record=record,
        idempotency=keyed,
        model_override=model_override,
        principal=principal,
        stream=record.stream,
    )
    stored = run.claim()
    if stored is not None:
        assert stored.session_key is not None
        record.replayed(stored.session_key)
        assert stored.reply is not None
        return chat_protocol.replay_response(stored.reply, record.stream, include_usage)
    # 9. The session lock, and the agent started.
    params = validation.forwarded_params(body)
    if not settings.session_user_keys and agent.takes_user and body.get("user") is not None:
        params["user"] = body["user"]  # it selected no session: the agent's to use
    run.start(conversation, params, new_images=new_images)
    # 10. The reply: JSON, or SSE.
    if not record.stream:
        return json_response(chat_protocol.complete(run))
    return _stream(run, include_usage)


def _stream(run: Run, include_usage: bool) -> Response:
    """The run's reply as an event stream."""
    # The generator may never start (client gone before the first byte, a failure
    # after this view): the lock and the gauge are given back when the request ends.
    on_request_end(request.environ, run.close)
    metrics.ACTIVE_STREAMS.inc()
    on_request_end(request.environ, metrics.ACTIVE_STREAMS.dec)
    return sse_response(chat_protocol.stream(run, include_usage))


@bp.route("/models", methods=ANY_METHOD)
def list_models() -> Response:
    gateway = current_gateway()
    _require_models_enabled(gateway.settings)
    require_method("GET")
    principal = _authorize("models")
    settings = gateway.settings
    ids = (
        ["openclaw", "openclaw/default"]
        if principal.allows_agent(settings.default_agent_id)
        else []
    )
    ids += [f"openclaw/{a.id}" for a in settings.agents if principal.allows_agent(a.id)]
    return json_response(model_list(ids))


@bp.route("/models/<path:model_id>", methods=ANY_METHOD)
def get_model(model_id: str) -> Response:
    gateway = current_gateway()
    _require_models_enabled(gateway.settings)
    require_method("GET")
    principal = _authorize("models")
    agent_id = routing.agent_id_from_model(model_id)
    if agent_id == "default":
        agent_id = gateway.settings.default_agent_id
    agent = gateway.settings.agent(agent_id) if agent_id is not None else None
    if agent is None or not principal.allows_agent(agent.id):
        raise errors.ModelNotFound(f"The model {model_id!r} does not exist.", param="model")
    return json_response(model_entry(model_id, agent.models))


def _authorize(scope: str) -> auth.Principal:
    """SPEC 3 step 3 and SPEC 16.1 (:func:`chatcompat.access.authorize`)."""
    gateway = current_gateway()
    return access.authorize(request, gateway.authenticator, gateway.store, scope)


def _require_models_enabled(settings: Settings) -> None:
    """``/v1/models`` is served with either endpoint, as in OpenClaw.

    :raise errors.EndpointDisabled: both are disabled (naming chat's switch).
    """
    if not settings.responses_enabled:
        require_enabled(settings.chat_completions_enabled, CHAT_SWITCH)
