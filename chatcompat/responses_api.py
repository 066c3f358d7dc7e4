"""The Responses API views: ``/v1/responses`` and the routes on a stored response.

Thin views, like :mod:`chatcompat.api`: :func:`create_response` is SPEC 3's list of
steps with SPEC 15's request in place of chat's, on the same :class:`~chatcompat.run.Run`
(the agent sees one history whichever endpoint a turn came from).
"""

from __future__ import annotations

from flask import Blueprint
from flask import Response
from flask import request

from . import access
from . import errors
from . import idempotency
from . import images
from . import metrics
from . import request_body
from . import requestlog
from . import response_chain
from . import responses_request
from . import routing
from .gateway import current_gateway
from .methods import ANY_METHOD
from .methods import RESPONSES_SWITCH
from .methods import require_enabled
from .methods import require_method
from .principal import Principal
from .protocol import responses as responses_protocol
from .protocol.jsonenc import json_response
from .protocol.sse import sse_response
from .request_end import on_request_end
from .run import Run

bp = Blueprint("responses", __name__, url_prefix="/v1")

ENDPOINT = "responses"


@bp.route("/responses", methods=ANY_METHOD)
def create_response() -> Response:
    """``POST /v1/responses``, step by step; a failing step answers its error.

    :raise errors.APIError: the step's status, rendered by :mod:`chatcompat.errors`.
    """
    gateway = current_gateway()
    settings = gateway.settings
    # 1. Endpoint disabled → 404. 2. Not POST → 405 (both before authentication).
    require_enabled(settings.responses_enabled, RESPONSES_SWITCH)
    require_method("POST")
    # 3. Authentication: the principal owns what the request stores; a named key's
    # scope and request-rate limit are checked before the body is read (SPEC 16.1).
    principal = _authorize("responses")
    # 4. The body: within its size and time limits, JSON.
    body = request_body.read_json_body(
        request, settings.responses_max_body_bytes, settings.body_timeout_seconds
    )
    # 5. The schema and what it cannot say, into the chat shapes the agents take.
    parsed = responses_request.parse(body)
    idempotency_key = idempotency.read_key(request.headers.get(idempotency.HEADER))
    # 6. The agent, and whether its backend takes every field: refused, never dropped.
    agent_config = routing.resolve_allowed_agent(
        settings,
        principal.agents,
        request.headers.get("x-openclaw-agent-id", request.headers.get("x-openclaw-agent")),
        parsed.model,
    )
    agent = gateway.agents.get(agent_config.id)
    responses_request.check_backend_fields(
        parsed,
        agent.request_fields,
        agent.takes_extension_fields,
        agent_config.id,
        agent_config.backend,
    )
    # 6a. Earlier output items the input names by id (item_reference), from the store.
    resolved = response_chain.resolve_item_references(gateway.store, body, principal.id)
    if resolved is not None:
        parsed = responses_request.parse(resolved)
    # 6b. The agent's image policy: every image part that reaches it (400 naming the part).
    new_images = images.check_images(
        parsed.messages,
        agent_config.images,
        param_for=lambda message, part: parsed.image_params[message, part],
        with_bytes=agent.needs_image_bytes,
    )
    # The upstream model for this run (x-openclaw-model), if the agent lists it. An
    # API key's model_override scope is checked before this (403, SPEC 16.1).
    model_header = request.headers.get(routing.MODEL_HEADER)
    if model_header is not None and model_header.strip():
        principal.require_scope("model_override")
    model_override = routing.model_override(agent_config, model_header)
    # 7. The session: header, previous_response_id, user, else a fresh one.
    chosen = response_chain.choose_session(
        gateway.store,
        agent_config.id,
        request.headers.get(routing.HEADER),
        parsed.previous_response_id,
        parsed.user,
        principal.id,
        principal.key_id,
        user_keys=settings.session_user_keys,
    )
    record = requestlog.current()
    record.routed(agent_config.id, chosen.key, stream=parsed.stream, endpoint=ENDPOINT)
    # 8. Idempotency-Key: a repeat of a finished request gets its stored reply. A
    # continuation is named by its previous_response_id (in the body) and the header:
    # the session its repeat would choose differs (a fork's key is new on every try,
    # and the first try made the response an earlier one).
    named_session = chosen.key if chosen.sticky else None
    if chosen.continuation is not None:
        header_key = request.headers.get(routing.HEADER)
        named_session = chosen.key if header_key is not None and header_key.strip() else None
    keyed = idempotency.for_request(
        principal.id,
        idempotency_key,
        agent_config.id,
        named_session,
        body,
        endpoint=ENDPOINT,
        model_override=model_override,
    )
    run = Run(
        settings=settings,
        store=gateway.store,
        agent=agent,
        agent_config=agent_config,
        session_key=chosen.key,
        sticky=chosen.sticky,
        model=parsed.model or "openclaw",
        client_socket=request.environ.get("gunicorn.socket"),
        record=record,
        idempotency=keyed if parsed.store else None,
        owner=principal.id,
        store_turn=parsed.store,
        model_override=model_override,
        principal=principal,
        stream=parsed.stream,
    )
    stored = run.claim()
    if stored is not None:
        assert stored.session_key is not None and stored.reply is not None
        response_chain.check_replayable(gateway.store, stored.reply)
        record.replayed(stored.session_key)
        return responses_protocol.replay_response(stored.reply, parsed.stream)
    if chosen.refusal is not None:
        run.close()
        raise chosen.refusal
    # 9. The session lock, and the agent started.
    params = parsed.params
    if not settings.session_user_keys and agent.takes_user and parsed.user is not None:
        params = {**params, "user": parsed.user}  # it selected no session: the agent's
    run.start(parsed.conversation, params, chosen.continuation, new_images=new_images)
    # 10. The reply: a Response object, or its events.
    if not parsed.stream:
        return json_response(responses_protocol.complete(run, parsed))
    on_request_end(request.environ, run.close)
    metrics.ACTIVE_STREAMS.inc()
    on_request_end(request.environ, metrics.ACTIVE_STREAMS.dec)
    return sse_response(responses_protocol.stream(run, parsed))


@bp.route("/responses/<response_id>", methods=ANY_METHOD)
def response_by_id(response_id: str) -> Response:
    """``GET`` the stored Response as it was returned; ``DELETE`` it."""
    gateway = current_gateway()
    require_enabled(gateway.settings.responses_enabled, RESPONSES_SWITCH)
    require_method("GET", "DELETE")
    principal = _authorize("responses")
    found = response_chain.find_response(gateway.store, response_id, principal.id)
    if request.method == "DELETE":
        with errors.map_store_errors():
            deleted = gateway.store.delete_response(found.id)
        if not deleted:  # deleted or expired since it was found
            raise errors.ResponseNotFound(f"Response with id {response_id!r} not found.")
        return json_response(responses_protocol.deleted(found.id))
    return json_response(found.document)


@bp.route("/responses/<response_id>/input_items", methods=ANY_METHOD)
def input_items(response_id: str) -> Response:
    """``GET`` the stored request's input items, a page at a time (OpenAI's list)."""
    gateway = current_gateway()
    require_enabled(gateway.settings.responses_enabled, RESPONSES_SWITCH)
    require_method("GET")
    principal = _authorize("responses")
    limit, order, after = responses_protocol.list_params(request.args)
    found = response_chain.find_response(gateway.store, response_id, principal.id)
    return json_response(responses_protocol.input_item_list(found.input_items, limit, order, after))


def _authorize(scope: str) -> Principal:
    """SPEC 3 step 3 and SPEC 16.1 (:func:`chatcompat.access.authorize`)."""
    gateway = current_gateway()
    return access.authorize(request, gateway.authenticator, gateway.store, scope)
