"""The session store contract.

A session is an append-only transcript of turns. A turn holds the user (or tool)
messages of one request and the assistant reply, and is written in one atomic step
only when its run completed. Every turn carries a turn id: writing the same id to
the same session again stores nothing, so a write whose outcome was unknown (a
timeout) can be retried. The same store keeps the per-session run locks, the
idempotency records of requests sent with an ``Idempotency-Key`` and the
failed-authentication counters, so every gunicorn worker (and, with Redis, every
host) sees the same state.

An idempotency record lives under a *scope* (the caller's name for one credential's
key) and is first a claim of a running request (an owner token with an expiry,
renewed while it runs, like a run lock), then, written in the same atomic step as the
request's turn, the finished request's reply. A finished record lives as long as the
session its turn went to: it expires, is refreshed and is deleted with it.

Exceptions::

    StoreError                 anything the store could not do
    └── StoreUnreachable       the store cannot be reached or is too busy (HTTP 503)
        └── NotReplicated      a write was made but too few replicas confirmed it
"""

from __future__ import annotations

import dataclasses
import typing as t

from ..messages import Message

if t.TYPE_CHECKING:
    from ..settings import RateLimit
    from ..settings import RedisOptions
    from ..settings import StoreURL


class StoreError(Exception):
    """The session store failed."""


class StoreUnreachable(StoreError):
    """The session store cannot be reached (or stayed locked past the retry budget)."""


class NotReplicated(StoreUnreachable):
    """A write reached the primary, but fewer replicas than required confirmed it in
    time: a failover may still lose it, so its outcome is unknown."""


@dataclasses.dataclass(frozen=True)
class Turn:
    """One stored turn: the messages it added and when it was written (unix seconds)."""

    created: float
    messages: list[Message]


@dataclasses.dataclass(frozen=True)
class IdempotencyRecord:
    """What a scope holds: a running request's claim (``reply`` is None) or a
    finished request's reply and the session its turn went to."""

    fingerprint: str
    session_key: str | None
    reply: dict[str, t.Any] | None

    @property
    def running(self) -> bool:
        return self.reply is None


@dataclasses.dataclass(frozen=True)
class KeyedReply:
    """A finished request's reply, stored with its turn under ``scope``."""

    scope: str
    fingerprint: str
    reply: dict[str, t.Any]


@dataclasses.dataclass(frozen=True)
class StoredResponse:
    """A Responses API response (SPEC 15), written in the same step as its turn: it
    exists exactly when its turn does, and expires and is deleted with its session."""

    id: str  # "resp_..."
    owner: str  # the principal that created it (who may retrieve, continue, delete it)
    document: dict[str, t.Any]  # the Response object as it was returned
    input_items: list[dict[str, t.Any]]  # the request's input items, each with its "id"


@dataclasses.dataclass(frozen=True)
class ResponseRecord:
    """A stored response and its place in its session's transcript."""

    id: str
    session_key: str
    agent_id: str
    owner: str
    # Messages in the session's transcript once the response's turn was stored: the
    # history up to and including this response is the first ``position`` messages.
    position: int
    # No turn (of either endpoint) was stored in the session after this one.
    latest: bool
    created: float
    document: dict[str, t.Any]
    input_items: list[dict[str, t.Any]]


@dataclasses.dataclass(frozen=True)
class WindowCount:
    """One rolling window of a key (requests or tokens), as an admission left it.

    :param used: what the window holds (the admitted request included).
    :param reset_seconds: until the window admits again when it is full, else until
        its oldest entry leaves it (0.0 when empty; a store may leave it 0.0 for a
        window the call gave no limit, whose headers are not sent).
    """

    used: int
    reset_seconds: float


@dataclasses.dataclass(frozen=True)
class Admission:
    """What :meth:`SessionStore.admit_request` decided, and the windows after it."""

    admitted: bool
    requests: WindowCount
    tokens: WindowCount


#: The rolling window of a key's requests and tokens (SPEC 16.1).
KEY_WINDOW_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class SessionInfo:
    """What ``chatcompat sessions list`` shows about one session."""

    key: str
    agent_id: str
    sticky: bool
    created: float
    updated: float
    expires: float
    turns: int
    messages: int


class SessionStore:
    """Base class of the session stores.

    Implementations must be safe to share between the greenlets (gevent) or threads
    (gthread) of one worker process, and between worker processes. Every method may
    raise :class:`StoreUnreachable`; none may raise a foreign exception (translate
    ``sqlite3``/``redis`` errors at the boundary). Methods that wait must do it with
    ``time.sleep`` so gevent can switch greenlets: never block inside the database.

    A store is named by a URL (:class:`~chatcompat.settings.StoreURL`): the
    configuration loader calls :meth:`check_url` at start-up, and
    :func:`~chatcompat.sessions.open_store` opens it with :meth:`from_url`.
    """

    @classmethod
    def check_url(cls, url: StoreURL) -> list[str]:
        """What this store finds wrong with a parsed URL of its scheme, beyond the
        shared syntax (nothing by default). Connects to nothing.

        :param url: a URL :meth:`StoreURL.parse` accepted, of this store's scheme.
        :return: one message per problem; none quotes the URL (it may hold a password).
        """
        return []

    @classmethod
    def from_url(cls, url: StoreURL, redis_options: RedisOptions | None = None) -> SessionStore:
        """Build the store named by ``url``; nothing is opened before first use.

        :param url: a URL of this store's scheme.
        :param redis_options: ``sessions.redis`` (only the Redis store reads it).
        :raise ValueError: the URL cannot be used (the message does not repeat it).
        """
        raise NotImplementedError("The 'from_url' method must be implemented.")

    def ping(self) -> str | None:
        """Raise :class:`StoreUnreachable` unless the store answers.

        :return: the ``host:port`` of the server that answered, for a store on a
            network server (the current primary of a Redis behind Sentinel), else None.
        """
        raise NotImplementedError("The 'ping' method must be implemented.")

    def load_history(self, key: str, limit: int, upto: int | None = None) -> list[Message] | None:
        """Return the last ``limit`` messages of the session, oldest first.

        ``limit <= 0`` gives ``[]`` for a live session. With ``upto``, the last
        ``limit`` of the session's first ``upto`` messages (the history up to a
        stored response, :attr:`ResponseRecord.position`). The cost grows with
        ``limit``, never with the length of the whole transcript.

        :return: None when the session has no stored turn (new or expired).
        """
        raise NotImplementedError("The 'load_history' method must be implemented.")

    def append_turn(
        self,
        key: str,
        agent_id: str,
        messages: list[Message],
        *,
        sticky: bool,
        ttl_seconds: float,
        turn_id: str | None = None,
        keyed_reply: KeyedReply | None = None,
        response: StoredResponse | None = None,
    ) -> bool:
        """Append one turn atomically, creating the session when needed.

        Also moves the expiry of the session and of its idempotency records to
        ``now + ttl_seconds``; ``agent_id`` and ``sticky`` take the values of the
        latest turn. A session whose expiry has passed starts afresh, without its old
        turns, records and responses.

        :param turn_id: the turn's id (a fresh one when None). A turn with this id
            already in the session makes the call a no-op: a retried write lands once.
        :param keyed_reply: the request's reply, stored in the same step under its
            scope (replacing the claim, whoever holds it). A scope that already holds
            a finished reply makes the call a no-op: a request is stored once.
        :param response: the Responses API response of the turn, stored in the same
            step (its position is the session's message count after the append); a
            no-op call stores none.
        :return: True when the turn was stored, False for a no-op.
        :raises StoreError: ``messages`` is empty, it, the reply or the response is
            not JSON-serialisable, or the response's id is already stored (nothing
            of the turn is stored).
        """
        raise NotImplementedError("The 'append_turn' method must be implemented.")

    def get_response(self, response_id: str) -> ResponseRecord | None:
        """Return a stored response; None when unknown, deleted, or expired with its
        session. Works from any worker and (Redis) any host."""
        raise NotImplementedError("The 'get_response' method must be implemented.")

    def delete_response(self, response_id: str) -> bool:
        """Delete a stored response (its turn stays in the session's transcript);
        return whether it existed and was live."""
        raise NotImplementedError("The 'delete_response' method must be implemented.")

    def response_ids(self, key: str) -> list[str]:
        """Return the ids of a live session's stored responses, oldest first ([] when
        none); for ``chatcompat sessions show``."""
        raise NotImplementedError("The 'response_ids' method must be implemented.")

    def acquire_lock(self, key: str, owner: str, ttl_seconds: float) -> bool:
        """Take the run lock of a session without waiting.

        :return: True when ``owner`` now holds the lock (a lock whose expiry passed
            counts as free), False when somebody else holds it.
        """
        raise NotImplementedError("The 'acquire_lock' method must be implemented.")

    def release_lock(self, key: str, owner: str) -> None:
        """Release the lock if (and only if) ``owner`` still holds it."""
        raise NotImplementedError("The 'release_lock' method must be implemented.")

    def claim_idempotency(
        self, scope: str, owner: str, fingerprint: str, ttl_seconds: float
    ) -> IdempotencyRecord | None:
        """Claim ``scope`` for a request run by ``owner``, without waiting.

        A free scope, an expired claim and ``owner``'s own claim (refreshed to
        ``now + ttl_seconds``) become ``owner``'s.

        :return: None when ``owner`` now holds the claim, else what the scope holds:
            another owner's running claim or a finished reply.
        """
        raise NotImplementedError("The 'claim_idempotency' method must be implemented.")

    def release_idempotency(self, scope: str, owner: str) -> None:
        """Drop ``owner``'s claim of ``scope`` (after a failed run). A finished reply
        and another owner's claim stay."""
        raise NotImplementedError("The 'release_idempotency' method must be implemented.")

    def purge_expired(self) -> int:
        """Delete expired sessions (with their idempotency records and responses),
        locks, claims and auth counters; return how many sessions went."""
        raise NotImplementedError("The 'purge_expired' method must be implemented.")

    def list_sessions(self, limit: int = 100) -> list[SessionInfo]:
        """Return live sessions, most recently updated first."""
        raise NotImplementedError("The 'list_sessions' method must be implemented.")

    def get_session(self, key: str) -> SessionInfo | None:
        """Return one live session, or None."""
        raise NotImplementedError("The 'get_session' method must be implemented.")

    def transcript(self, key: str) -> list[Turn]:
        """Return every stored turn of a live session, oldest first ([] when none)."""
        raise NotImplementedError("The 'transcript' method must be implemented.")

    def delete_session(self, key: str) -> bool:
        """Delete a session, its idempotency records and its stored responses (not
        its run lock); return whether it existed and was live."""
        raise NotImplementedError("The 'delete_session' method must be implemented.")

    def auth_lockout_remaining(self, client: str) -> float:
        """Seconds left of the client's failed-auth lockout (0.0 when not locked out)."""
        raise NotImplementedError("The 'auth_lockout_remaining' method must be implemented.")

    def record_auth_failure(self, client: str, limit: RateLimit) -> None:
        """Count a failed credential; lock the client out once ``limit.max_attempts``
        failures fall within ``limit.window_seconds``.

        Reaching the limit starts a lockout of ``limit.lockout_seconds`` and resets the
        count. A failure recorded during a lockout is ignored: it neither extends the
        lockout nor counts afterwards. ``limit.exempt_loopback`` is the caller's job.
        """
        raise NotImplementedError("The 'record_auth_failure' method must be implemented.")

    def clear_auth_failures(self, client: str) -> None:
        """Forget the client's failures and lockout (after a successful authentication)."""
        raise NotImplementedError("The 'clear_auth_failures' method must be implemented.")

    # -- the limits of named keys (SPEC 16.1) ------------------------------------------

    def admit_request(
        self,
        key_id: str,
        request_id: str,
        *,
        requests_limit: int | None,
        tokens_limit: int | None,
        window_seconds: float = KEY_WINDOW_SECONDS,
    ) -> Admission:
        """Admit one request of ``key_id``, in one atomic step, unless the rolling
        window already holds ``requests_limit`` requests or ``tokens_limit`` tokens
        (None: no such limit). An admitted request is counted (``request_id`` makes a
        resent call count once); a refused one is not.
        """
        raise NotImplementedError("The 'admit_request' method must be implemented.")

    def record_tokens(
        self, key_id: str, tokens: int, *, window_seconds: float = KEY_WINDOW_SECONDS
    ) -> None:
        """Count the ``total_tokens`` of a finished run in the key's token window."""
        raise NotImplementedError("The 'record_tokens' method must be implemented.")

    def acquire_slot(self, key_id: str, owner: str, limit: int, ttl_seconds: float) -> bool:
        """Take one of ``key_id``'s ``limit`` concurrent-run slots for ``owner``, or
        refresh ``owner``'s own (whatever the count), until ``now + ttl_seconds``.
        Expired slots are free.

        :return: False when the key's live slots, none of them ``owner``'s, number
            ``limit`` or more.
        """
        raise NotImplementedError("The 'acquire_slot' method must be implemented.")

    def release_slot(self, key_id: str, owner: str) -> None:
        """Free ``owner``'s slot of ``key_id`` (no-op when it holds none)."""
        raise NotImplementedError("The 'release_slot' method must be implemented.")

    def close(self) -> None:
        """Release connections. The store may be used again afterwards (it reconnects)."""

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
