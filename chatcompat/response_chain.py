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
from .run import Continuation

if t.TYPE_CHECKING:
    from .sessions.base import ResponseRecord
    from .sessions.base import SessionStore

PARAM = "previous_response_id"


class Chosen(t.NamedTuple):
    """The session of a request: its key, whether it is sticky, and where
    ``previous_response_id`` points (None without one)."""

    key: str
    sticky: bool
    continuation: Continuation | None


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
    :raise errors.InvalidRequest: the id belongs to another agent's session, or is not
        the latest response of the session the header names.
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
            raise errors.InvalidRequest(
                f"previous_response_id {previous_response_id!r} is not the latest response "
                f"of the session {routing.HEADER} names; leave the header out to branch "
                "off from it into a new session.",
                param=PARAM,
            )
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


def _may_see(principal: str, owner: str) -> bool:
    # The operator and the anonymous caller (auth off) see everything; a named key
    # (never named "operator" nor "anonymous") only its own.
    return principal == owner or principal in ("operator", "anonymous")
