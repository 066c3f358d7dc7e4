"""Which session a Responses request runs on (SPEC 15 "Sessions").

The session header first, then ``previous_response_id``, then ``user``, else a fresh
stateless key, as :func:`chatcompat.routing.session_key` does for chat completions.
``previous_response_id`` names a stored response: the latest one of its session is
continued in that session, an earlier one forks a new session from it.
"""

from __future__ import annotations

import typing as t

from . import errors
from . import routing
from .protocol.responses import response_of_item
from .run import Continuation

if t.TYPE_CHECKING:
    from .sessions.base import ResponseRecord
    from .sessions.base import SessionStore

PARAM = "previous_response_id"


class Chosen(t.NamedTuple):
    """The session of a request: its key, whether it is sticky, where
    ``previous_response_id`` points (None without one), and why it cannot run there
    (None: it can).

    A refusal is raised by the caller after the ``Idempotency-Key`` claim: the repeat
    of a request that continued a response finds that response no longer the latest
    (its own first try made it so), and must get its stored reply all the same.
    """

    key: str
    sticky: bool
    continuation: Continuation | None
    refusal: errors.APIError | None = None


def choose_session(
    store: SessionStore,
    agent_id: str,
    header_key: str | None,
    previous_response_id: str | None,
    user: str | None,
    principal: str,
    key_id: str | None = None,
    *,
    user_keys: bool = True,
) -> Chosen:
    """The session a Responses request runs on.

    :param principal: the id of the request's principal (who may continue what).
    :param key_id: the named key's id, whose namespace the session keys are in
        (:func:`chatcompat.routing.key_session_key`); None for the operator.
    :param user_keys: whether ``user`` may select a session (``sessions.userKeys``).

    :raise errors.PreviousResponseNotFound: the id is unknown, expired, deleted, or
        (another credential's) not this principal's to continue.
    :raise errors.InvalidRequest: the id belongs to another agent's session, or to
        another session than the header names (one that is not the latest response of
        that session is the returned ``refusal``).
    :raise errors.InvalidSessionKey: a malformed header (as on chat completions).
    :raise errors.SessionNotFound: the header names another credential's session.
    :raise errors.StoreUnavailable: the store cannot say.
    """
    if previous_response_id is None:
        key, sticky = routing.key_session_key(
            key_id, agent_id, header_key, user, user_keys=user_keys
        )
        return Chosen(key, sticky, None)
    record = find_response(store, previous_response_id, principal, param=PARAM)
    if record.agent_id != agent_id:
        raise errors.InvalidRequest(
            f"previous_response_id {previous_response_id!r} belongs to a conversation with "
            f"agent {record.agent_id!r}, but this request runs on agent {agent_id!r}.",
            param=PARAM,
        )
    if header_key is not None and header_key.strip():
        key, _ = routing.key_session_key(key_id, agent_id, header_key, None)
        if key != record.session_key:
            raise errors.InvalidRequest(
                f"previous_response_id {previous_response_id!r} is not a response of the "
                f"session {routing.HEADER} names.",
                param=PARAM,
            )
        if not record.latest:
            refusal = errors.InvalidRequest(
                f"previous_response_id {previous_response_id!r} is not the latest response "
                f"of the session {routing.HEADER} names; leave the header out to branch "
                "off from it into a new session.",
                param=PARAM,
            )
            continuation = Continuation(record.id, key, record.position, fork=False)
            return Chosen(key, True, continuation, refusal)
    if record.latest:
        continuation = Continuation(record.id, record.session_key, record.position, fork=False)
        return Chosen(record.session_key, True, continuation)
    continuation = Continuation(record.id, record.session_key, record.position, fork=True)
    return Chosen(routing.key_fresh_session_key(key_id, agent_id), True, continuation)


def find_response(
    store: SessionStore, response_id: str, principal: str, param: str | None = None
) -> ResponseRecord:
    """The stored response ``response_id``, if ``principal`` may see it.

    Another credential's response is "not found", exactly as an unknown one: its
    existence is not given away.

    :raise errors.PreviousResponseNotFound: with ``param`` (a request's field).
    :raise errors.ResponseNotFound: without ``param`` (a route's id).
    """
    with errors.map_store_errors():
        record = store.get_response(response_id)
    if record is None or not _may_see(principal, record.owner):
        if param is None:
            raise errors.ResponseNotFound(f"Response with id {response_id!r} not found.")
        raise errors.PreviousResponseNotFound(
            f"Previous response with id {response_id!r} not found.", param=param
        )
    return record


def check_replayable(store: SessionStore, reply: dict[str, t.Any]) -> None:
    """A repeat (same ``Idempotency-Key``) gets the stored Response only while that
    response exists: one deleted since is gone for repeats too, as for ``GET``.

    :raise errors.ResponseNotFound: it was deleted (``param`` names the header).
    """
    response_id = reply.get("id")
    with errors.map_store_errors():
        record = store.get_response(response_id) if isinstance(response_id, str) else None
    if record is None:
        raise errors.ResponseNotFound(
            f"The response {response_id!r} stored for this Idempotency-Key was deleted.",
            param="Idempotency-Key",
        )


def resolve_item_references(
    store: SessionStore, body: dict[str, t.Any], principal: str
) -> dict[str, t.Any] | None:
    """``body`` with each ``item_reference`` of its ``input`` replaced by the stored
    output item it names; None when there is none (``body`` is used as it is).

    Clients that keep their conversation themselves send the assistant's earlier items
    back as references when the responses were stored (the Vercel AI SDK does, with
    ``store`` on): dropping them would lose those turns. An item id carries its
    response's id (:func:`chatcompat.protocol.responses.output_item_id`), so each
    reference costs one lookup of that response, one per response however many of its
    items are named.

    An id that names no item of a stored response this principal may see (unknown,
    expired, deleted, another key's) is dropped, as SPEC 15 says of every reference.

    :param body: a validated request body.
    """
    items = body.get("input")
    if not isinstance(items, list) or not any(
        item.get("type") == "item_reference" for item in items
    ):
        return None
    outputs: dict[str, list[dict[str, t.Any]] | None] = {}
    resolved: list[dict[str, t.Any]] = []
    replaced = False
    for item in items:
        if item.get("type") != "item_reference":
            resolved.append(item)
            continue
        item_id = item.get("id")
        named = response_of_item(item_id) if isinstance(item_id, str) else None
        found = None
        if named is not None:
            response_id, position = named
            if response_id not in outputs:
                outputs[response_id] = _output_of(store, response_id, principal)
            output = outputs[response_id]
            if output is not None and position < len(output):
                found = output[position]
        if found is not None and found.get("id") == item_id:
            resolved.append(found)
            replaced = True
        # else ignored, as SPEC 15 has every item_reference (OpenClaw's behaviour)
    return {**body, "input": resolved} if replaced else None


def _output_of(
    store: SessionStore, response_id: str, principal: str
) -> list[dict[str, t.Any]] | None:
    with errors.map_store_errors():
        record = store.get_response(response_id)
    if record is None or not _may_see(principal, record.owner):
        return None
    output = record.document.get("output")
    return output if isinstance(output, list) else None


def _may_see(principal: str, owner: str) -> bool:
    # The operator and the anonymous caller (auth off) see everything; a named key
    # (never named "operator" nor "anonymous") only its own.
    return principal == owner or principal in ("operator", "anonymous")
