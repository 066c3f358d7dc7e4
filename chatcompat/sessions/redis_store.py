"""The Redis session store: one Redis shared by every worker of every gateway host.

Data model (``P`` is the key prefix, ``chatcompat:`` by default; ``{k}`` is the
session key in braces, a Redis Cluster hash tag keeping one session in one slot)::

    P{k}:meta      hash: agent_id, sticky (1/0), created, updated, expires (µs),
                   turns, messages
    P{k}:msgs      list: the transcript, one compact JSON message per item
    P{k}:turns     list: one "<created µs>:<message count after the turn>" per turn
    P{k}:turn-ids  set: the id of every stored turn (a resent turn is stored once)
    P{k}:replies   set: the names of the session's finished idempotency records
    P{k}:responses     hash: response id -> "<turn>:<position>:<created µs>:<JSON of
                       agent_id, owner, document, input_items>", the stored responses
    P{k}:response-ids  set: the ids of the session's responses (no expiry)
    P{k}:lock      string: the run lock's owner token, with PX expiry
    Pidem:{s}      hash: the idempotency record of scope s: a claim (fingerprint,
                   owner; PX = the claim's expiry) or a finished reply (fingerprint,
                   session, reply; the session's expiry)
    Pauth:{c}:fails    sorted set: failed-auth times of client c (µs), expiry = window
    Pauth:{c}:lockout  string with PX = the lockout: exists while c is locked out
    Psessions:by-updated   sorted set of session keys by last update (for listing)
    Psessions:by-expiry    sorted set of session keys by expiry (for purging)
    Presponses:by-id       hash: response id -> session key (no expiry)

A turn is one Lua script (see :mod:`.redis_lua`): the messages, the turn boundary,
the turn id, the counters, the request's finished reply, the same ``PEXPIRE`` on the
session keys and on every finished reply of the session (one command per reply,
each turn), and both index entries go in together or not at all. Expiry is Redis's
own: an expired session's keys are gone and it reads as absent everywhere;
``purge_expired`` (also run from ``append_turn`` at most once a minute per process)
only drops index entries of sessions that Redis has expired. Timestamps come from
the Redis server's clock, so hosts with skewed clocks still agree. The three index
keys and the idempotency records are the only keys outside a session's hash slot: a
future Redis Cluster mode would have to update them separately.

Stored responses (SPEC 15): the record lives in the session's ``responses`` hash,
which gets the session's ``PEXPIRE`` on every turn like its other keys (one command
however many responses it holds), so a response lives exactly as long as its session
without a key of its own whose TTL would have to follow every refresh. Finding one by
id alone, from any host, goes through ``responses:by-id`` (id -> session key; one
script reads both). That entry cannot expire with the session (Redis has no per-field
expiry here), so it has none: a stale entry is harmless (the session's hash is gone,
the lookup says None), and ``response-ids`` (no expiry either) lists what to remove
when the session's keys are deleted, pruned (``purge_expired``) or start afresh.

The client is built lazily with :meth:`redis.Redis.from_url`, once per process (it is
rebuilt after a fork), so nothing connects at import or in the gunicorn master and
sockets are made after gevent has patched them. Socket timeouts are short so an
unreachable Redis fails fast with :class:`StoreUnreachable`; a command whose
connection broke is resent once on a fresh connection (what makes a restarted Redis
usable at once), which the writes are made idempotent for. URL query options such
as ``?socket_timeout=5`` override the defaults here.

Behind Redis Sentinel (``redis+sentinel://`` URLs) the client is redis-py's
:meth:`redis.sentinel.Sentinel.master_for`: every new connection asks the sentinels
for the current primary, and a connection to a primary that was demoted (a
``READONLY`` reply) or died is dropped, so the next command goes to the new one.
Replication is asynchronous, so a write the dead primary acknowledged may never have
reached the replica that replaces it. Turn writes are therefore sent with Redis's
``WAIT`` on the same connection (:meth:`RedisStore._confirmed`): a turn counts as
stored once ``min_replicas`` replicas have it too; fewer within the timeout raises
:class:`NotReplicated` (the outcome is unknown: the caller answers as for a
timeout). Locks, idempotency claims and auth counters are not waited for: a failover
may lose them (a session may then run twice at once for the seconds it takes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import typing as t
import urllib.parse
import uuid

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..messages import Message
from ..settings import REDIS_SCHEMES
from ..settings import REDIS_URL_FORM
from ..settings import SENTINEL_SCHEMES
from ..settings import SENTINEL_URL_FORM
from ..settings import RedisOptions
from ..settings import StoreURL
from . import redis_lua
from .base import KEY_WINDOW_SECONDS
from .base import Admission
from .base import IdempotencyRecord
from .base import KeyedReply
from .base import NotReplicated
from .base import ResponseRecord
from .base import SessionInfo
from .base import SessionStore
from .base import StoredResponse
from .base import StoreError
from .base import StoreUnreachable
from .base import Turn
from .base import WindowCount
from .sqlite_db import decode
from .sqlite_db import decode_many
from .sqlite_db import encode

if t.TYPE_CHECKING:
    from ..settings import RateLimit

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 1.0
SOCKET_TIMEOUT_SECONDS = 2.0
PURGE_INTERVAL_SECONDS = 60.0
PURGE_BATCH = 100
LIST_BATCH = 100
FAILOVER_PAUSE_SECONDS = 0.1
_T = t.TypeVar("_T")
_NOT_REDIS = f"a redis session store URL must look like {REDIS_URL_FORM}"
_NOT_SENTINEL = f"a Redis Sentinel session store URL must look like {SENTINEL_URL_FORM}"
# Query options of a Sentinel URL meant for the sentinels themselves (the others are
# redis-py's, for the connections to the primary).
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")

# Errors meaning "cannot be used right now" (HTTP 503) rather than a bug (500).
_UNAVAILABLE = (
    redis.ConnectionError,  # also AuthenticationError, BusyLoadingError
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica after failover
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)


class _Scripts:
    """The Lua scripts registered on one client."""

    def __init__(self, client: redis.Redis) -> None:
        self.append = client.register_script(redis_lua.APPEND)
        self.delete = client.register_script(redis_lua.DELETE)
        self.prune = client.register_script(redis_lua.PRUNE)
        self.acquire = client.register_script(redis_lua.ACQUIRE_LOCK)
        self.release = client.register_script(redis_lua.RELEASE_LOCK)
        self.auth_failure = client.register_script(redis_lua.AUTH_FAILURE)
        self.claim = client.register_script(redis_lua.CLAIM)
        self.release_claim = client.register_script(redis_lua.RELEASE_CLAIM)
        self.get_response = client.register_script(redis_lua.GET_RESPONSE)
        self.delete_response = client.register_script(redis_lua.DELETE_RESPONSE)
        self.admit = client.register_script(redis_lua.ADMIT)
        self.record_tokens = client.register_script(redis_lua.RECORD_TOKENS)
        self.acquire_slot = client.register_script(redis_lua.ACQUIRE_SLOT)


class RedisStore(SessionStore):
    """Session store in the Redis named by ``url`` (``redis://[:password@]host:port/db``
    or ``rediss://`` for TLS). Nothing connects until the first call.

    :param prefix: prepended to every key (tests use one per store family).
    :raises ValueError: the URL is malformed (the message does not repeat it).
    """

    def __init__(
        self, url: str, *, prefix: str = "chatcompat:", redis_options: RedisOptions | None = None
    ) -> None:
        self._url = url
        parsed = StoreURL.parse(url)  # a StoreURLError is a ValueError
        problems = self.check_url(parsed) if parsed.scheme in REDIS_SCHEMES else [_NOT_REDIS]
        if problems:
            raise ValueError(problems[0])
        self._parsed = parsed
        self._options = redis_options or RedisOptions()
        self._secrets = sorted(parsed.secrets, key=len, reverse=True)
        # What messages name: never the password (nor the user name).
        self.location = parsed.location
        self.prefix = prefix
        self._by_updated = f"{prefix}sessions:by-updated"
        self._by_expiry = f"{prefix}sessions:by-expiry"
        self._fence = f"{prefix}replication-fence"
        self._responses_by_id = f"{prefix}responses:by-id"
        # Never held across I/O: building a client does not connect.
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._scripts: _Scripts | None = None
        self._sentinel: Sentinel | None = None
        # sessions.redis.minReplicas, or what it resolved to in this process.
        self._min_replicas = self._options.min_replicas
        wait = self._options.failover_wait_seconds
        self._failover_wait = (10.0 if parsed.sentinels else 0.0) if wait is None else wait
        self._outage_since: float | None = None
        self._pid = 0
        self._last_purge = float("-inf")

    @classmethod
    def check_url(cls, url: StoreURL) -> list[str]:
        try:
            if url.sentinels:
                _sentinel_options(url)
            else:
                redis.connection.parse_url(url.url)  # type: ignore[no-untyped-call]  # as from_url
        except ValueError as exc:  # its messages name an option, never a value
            return [f"{_NOT_SENTINEL if url.sentinels else _NOT_REDIS} ({exc})"]
        return []

    @classmethod
    def from_url(cls, url: StoreURL, redis_options: RedisOptions | None = None) -> RedisStore:
        return cls(url.url, redis_options=redis_options)

    def __repr__(self) -> str:
        return f"<RedisStore {self.location}>"

    # -- plumbing -----------------------------------------------------------------

    def _redis(self) -> tuple[redis.Redis, _Scripts]:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                # A client inherited over fork is dropped, not closed: redis-py leaves
                # the parent's sockets alone in a child, and this process gets its own.
                self._client = self._connect()
                self._scripts = _Scripts(self._client)
                self._min_replicas = self._options.min_replicas
                self._pid = os.getpid()
            assert self._scripts is not None
            return self._client, self._scripts

    def _connect(self) -> redis.Redis:
        """A client of the Redis (the primary, behind Sentinel); connects to nothing."""
        timeouts: dict[str, t.Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
            # A WAIT blocks for up to its timeout before it answers.
            "socket_timeout": max(SOCKET_TIMEOUT_SECONDS, self._options.wait_timeout_seconds + 1),
            # One resend on a fresh connection when the pooled one broke (a restarted
            # Redis, a primary that went away); none on timeouts: a slow Redis fails fast.
            "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        }
        if not self._parsed.sentinels:
            self._sentinel = None
            return redis.Redis.from_url(self._url, decode_responses=True, **timeouts)
        primary, sentinels = _sentinel_options(self._parsed)
        self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
            self._parsed.sentinels,
            sentinel_kwargs={**timeouts, **sentinels},
        )
        client: redis.Redis = self._sentinel.master_for(  # type: ignore[no-untyped-call]
            self._parsed.service, decode_responses=True, **{**timeouts, **primary}
        )
        return client

    def _needed_replicas(self) -> int:
        """How many replicas must confirm a write: ``sessions.redis.minReplicas``, by
        default 1 when the sentinels know a replica of the primary (asked once per
        process), else 0."""
        if self._min_replicas is None:
            self._redis()
            if self._sentinel is None:
                self._min_replicas = 0
            else:
                self._min_replicas = 1 if self._known_replicas(self._sentinel) else 0
        return self._min_replicas

    def _known_replicas(self, sentinel: Sentinel) -> int:
        """The replicas the first sentinel that answers knows of, up or down."""
        failure: redis.RedisError | None = None
        for node in sentinel.sentinels:
            try:
                return len(node.sentinel_slaves(self._parsed.service))
            except redis.RedisError as exc:
                failure = exc
        assert failure is not None  # a Sentinel URL names at least one sentinel
        raise failure

    def _confirmed(self, client: redis.Redis, write: t.Callable[[t.Any], None]) -> list[t.Any]:
        """Send the commands ``write`` queues on a pipeline, then ``WAIT`` for the
        replicas on the same connection (a WAIT covers its own connection's writes).

        The commands must be safe to send again (a turn with its id, the fence):
        :meth:`_patiently` sends them again during a failover.

        :return: the replies to the commands, in order.
        :raise NotReplicated: fewer replicas than required confirmed in time.
        :raise redis.RedisError: a command failed (the first error).
        """
        return self._patiently(lambda: self._confirmed_once(client, write))

    def _patiently(self, call: t.Callable[[], _T]) -> _T:
        """``call()``, made again every :data:`FAILOVER_PAUSE_SECONDS` while there is
        no primary or too few replicas confirm (a failover, a replica resyncing),
        until ``failover_wait_seconds`` after the first failure of this outage in
        this process. Only for commands that are safe to repeat. A slow Redis (a
        timeout) still fails at once.
        """
        while True:
            try:
                result = call()
            except (redis.ConnectionError, NotReplicated) as exc:
                if isinstance(exc, redis.AuthenticationError):
                    raise  # a wrong password does not heal by waiting
                now = time.monotonic()
                since = self._outage_since = self._outage_since or now
                if now + FAILOVER_PAUSE_SECONDS - since > self._failover_wait:
                    raise
                log.info("waiting for the session store's failover: %s", self._scrubbed(exc))
                time.sleep(FAILOVER_PAUSE_SECONDS)  # cooperative (gevent)
                if isinstance(exc, NotReplicated):
                    self._follow_primary()
                continue
            self._outage_since = None
            return result

    def _confirmed_once(self, client: redis.Redis, write: t.Callable[[t.Any], None]) -> list[t.Any]:
        """One try of :meth:`_confirmed`. Scripts go as ``EVALSHA`` (:meth:`_eval`); a
        primary that does not know them yet (a restart, a failover) gets them loaded
        and the commands sent again."""
        needed = self._needed_replicas()
        timeout_ms = _ms(self._options.wait_timeout_seconds)
        for attempt in (1, 2):
            pipe = client.pipeline(transaction=False)
            write(pipe)
            if needed:
                pipe.wait(needed, timeout_ms)
            replies: list[t.Any] = pipe.execute(raise_on_error=False)
            missing = any(isinstance(r, redis.exceptions.NoScriptError) for r in replies)
            if not missing or attempt == 2:
                break
            for script in vars(self._redis()[1]).values():
                client.script_load(script.script)
        acked = replies.pop() if needed else 0
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        if isinstance(acked, Exception):
            raise acked
        if acked < needed:
            raise NotReplicated(
                f"the session store {self.location}: {acked} of {needed} replica(s)"
                f" confirmed a write within {self._options.wait_timeout_seconds:g} s;"
                " a failover may lose it"
            )
        return replies

    def _replicated(self, client: redis.Redis) -> None:
        """Wait until every write the primary has now is on enough replicas (a write
        of the fence key, replicated after them, then WAIT).

        :raise NotReplicated: not in time.
        """
        if self._needed_replicas():
            self._confirmed(client, lambda pipe: pipe.set(self._fence, "1", px=60_000))

    def _follow_primary(self) -> None:
        """Ask the sentinels for the primary now. One that moved drops the idle pooled
        connections to the former (a deposed primary that has not yet been made a
        replica still takes writes, which no replica confirms)."""
        client = self._client
        if self._sentinel is None or client is None:
            return
        pool = t.cast(redis.sentinel.SentinelConnectionPool, client.connection_pool)
        with contextlib.suppress(redis.RedisError):
            pool.get_master_address()  # type: ignore[no-untyped-call]

    @staticmethod
    def _eval(pipe: t.Any, script: t.Any, keys: list[str], args: list[t.Any]) -> None:
        """Queue a registered script on a pipeline of :meth:`_confirmed`."""
        pipe.evalsha(script.sha, len(keys), *keys, *args)

    @contextlib.contextmanager
    def _boundary(self, action: str) -> t.Iterator[None]:
        """Turn every redis-py error into :class:`StoreError` or :class:`StoreUnreachable`."""
        try:
            yield
        except redis.RedisError as exc:
            detail = self._scrubbed(exc)
            if isinstance(exc, _UNAVAILABLE):
                message = f"the session store {self.location} is unavailable ({detail})"
                raise StoreUnreachable(message) from exc
            message = f"the session store {self.location} failed to {action} ({detail})"
            raise StoreError(message) from exc

    def _scrubbed(self, exc: Exception) -> str:
        """``Type: message`` of an error, without the URL's secrets."""
        detail = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:
            detail = detail.replace(secret, "***")
        return detail

    def _session_keys(self, key: str) -> list[str]:
        """The KEYS of the session scripts (the Lua scripts build the same names)."""
        base = f"{self.prefix}{{{key}}}"
        parts = ("meta", "msgs", "turns", "turn-ids", "replies")
        return [
            *(f"{base}:{part}" for part in parts),
            self._by_updated,
            self._by_expiry,
            f"{base}:responses",
            f"{base}:response-ids",
            self._responses_by_id,
        ]

    def _record_key(self, scope: str) -> str:
        return f"{self.prefix}idem:{{{scope}}}"

    def _auth_keys(self, client: str) -> list[str]:
        base = f"{self.prefix}auth:{{{client}}}"
        return [f"{base}:fails", f"{base}:lockout"]

    def _lock_key(self, key: str) -> str:
        return f"{self.prefix}{{{key}}}:lock"

    def ping(self) -> str:
        """Ping the primary; return its ``host:port`` (the sentinels' current one)."""
        with self._boundary("answer a ping"):
            client = self._redis()[0]
            if self._sentinel is None:
                client.ping()
                host, port = self._parsed.host, self._parsed.port
            else:
                # Asking the sentinels also drops idle connections to a former primary.
                pool = t.cast(redis.sentinel.SentinelConnectionPool, client.connection_pool)
                host, port = pool.get_master_address()  # type: ignore[no-untyped-call]
                client.ping()
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def min_replicas(self) -> int:
        """How many replicas must confirm each turn write (asks the sentinels once
        when ``sessions.redis.minReplicas`` is not set)."""
        with self._boundary("ask the sentinels for replicas"):
            return self._needed_replicas()

    def close(self) -> None:
        with self._lock:
            client, self._client, self._scripts = self._client, None, None
            sentinel, self._sentinel = self._sentinel, None
        if client is not None and self._pid == os.getpid():
            with contextlib.suppress(redis.RedisError):
                client.close()
                if sentinel is not None:
                    sentinel.close()

    # -- sessions -----------------------------------------------------------------

    def load_history(self, key: str, limit: int, upto: int | None = None) -> list[Message] | None:
        meta, msgs = self._session_keys(key)[:2]
        # LRANGE from the end (-limit .. -1), or of messages upto - limit .. upto - 1.
        if upto is None:
            first, last = -limit, -1
        else:
            first, last = max(0, upto - limit), upto - 1
        wanted = limit > 0 and (upto is None or upto > 0)
        with self._boundary("load a history"):
            pipe = self._redis()[0].pipeline(transaction=True)  # one snapshot
            pipe.exists(meta)
            if wanted:
                pipe.lrange(msgs, first, last)
            replies = pipe.execute()
        if not replies[0]:
            return None
        return decode_many(replies[1]) if wanted else []

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
        """Append one turn atomically (one Lua script) and move the expiry of the whole
        session, its finished replies and responses included, to ``now + ttl_seconds``.

        :return: False (nothing stored) when the session already has ``turn_id`` or
            the scope of ``keyed_reply`` already holds a finished reply.
        :raises StoreError: when ``messages`` is empty or not JSON-serialisable, or the
            id of ``response`` is taken (nothing is stored).
        """
        if not messages:
            raise StoreError("a turn needs at least one message")
        bodies = [encode(message) for message in messages]
        keys = self._session_keys(key)
        fingerprint = reply = response_id = fields = ""
        if keyed_reply is not None:
            keys.append(self._record_key(keyed_reply.scope))
            fingerprint, reply = keyed_reply.fingerprint, encode(keyed_reply.reply)
        if response is not None:
            response_id = response.id
            fields = encode(
                {
                    "agent_id": agent_id,
                    "owner": response.owner,
                    "document": response.document,
                    "input_items": response.input_items,
                }
            )
        turn_id = turn_id or uuid.uuid4().hex
        args: list[t.Any] = [
            key,
            agent_id,
            int(sticky),
            _ms(ttl_seconds),
            turn_id,
            fingerprint,
            reply,
            response_id,
            fields,
            *bodies,
        ]
        with self._boundary("store a turn"):
            client, scripts = self._redis()
            replies = self._confirmed(
                client, lambda pipe: self._eval(pipe, scripts.append, keys, args)
            )
            stored = bool(replies[0])
            if not stored:
                # A resend of a turn that landed before: the WAIT above covered no
                # write of this turn; wait until what the primary has is replicated.
                self._replicated(client)
        now = time.monotonic()
        if now - self._last_purge >= PURGE_INTERVAL_SECONDS:
            self._last_purge = now  # keeps the indexes bounded without a purge job
            try:
                self.purge_expired()
            except StoreError:
                log.warning("purging expired sessions failed", exc_info=True)
        return stored

    def get_response(self, response_id: str) -> ResponseRecord | None:
        with self._boundary("read a response"):
            found = self._redis()[1].get_response(
                keys=[self._responses_by_id], args=[response_id, self.prefix]
            )
        if not found:
            return None
        key, record, turns = found
        turn, position, created, fields = record.split(":", 3)
        stored = decode(fields)
        return ResponseRecord(
            id=response_id,
            session_key=key,
            agent_id=stored["agent_id"],
            owner=stored["owner"],
            position=int(position),
            latest=int(turn) == int(turns),
            created=int(created) / 1e6,
            document=stored["document"],
            input_items=stored["input_items"],
        )

    def delete_response(self, response_id: str) -> bool:
        with self._boundary("delete a response"):
            return bool(
                self._redis()[1].delete_response(
                    keys=[self._responses_by_id], args=[response_id, self.prefix]
                )
            )

    def response_ids(self, key: str) -> list[str]:
        keys = self._session_keys(key)
        with self._boundary("list responses"):
            pipe = self._redis()[0].pipeline(transaction=True)
            pipe.exists(keys[0])
            pipe.hgetall(keys[7])
            live, records = pipe.execute()
        if not live:
            return []
        # By position (the field after the turn), then id.
        return sorted(records, key=lambda rid: (int(records[rid].split(":", 2)[1]), rid))

    def claim_idempotency(
        self, scope: str, owner: str, fingerprint: str, ttl_seconds: float
    ) -> IdempotencyRecord | None:
        args: list[t.Any] = [owner, fingerprint, _ms(ttl_seconds)]
        with self._boundary("claim an idempotency key"):
            client, scripts = self._redis()
            held = scripts.claim(keys=[self._record_key(scope)], args=args)
            if held and held[2] is not None:
                # A finished reply is about to be replayed as stored: it may be one whose
                # write was not confirmed (a 503 "may not have been stored").
                self._replicated(client)
        if not held:
            return None
        fingerprint, session_key, reply = held
        return IdempotencyRecord(fingerprint, session_key, None if reply is None else decode(reply))

    def release_idempotency(self, scope: str, owner: str) -> None:
        with self._boundary("release an idempotency key"):
            # Waits out a failover: a claim left behind answers 409 until it expires.
            scripts = self._redis()[1]
            self._patiently(
                lambda: scripts.release_claim(keys=[self._record_key(scope)], args=[owner])
            )

    def purge_expired(self) -> int:
        """Drop the index entries (and any leftover keys) of sessions Redis expired.

        Locks and auth counters expire in Redis by themselves.
        """
        total = 0
        with self._boundary("purge expired sessions"):
            client, scripts = self._redis()
            while True:
                seconds, micros = client.time()
                # The client decodes responses: members are str.
                due: list[str] = client.zrangebyscore(  # type: ignore[assignment]
                    self._by_expiry, "-inf", seconds * 1_000_000 + micros, start=0, num=PURGE_BATCH
                )
                pruned = self._prune(client, scripts, due)
                total += pruned
                if len(due) < PURGE_BATCH or not pruned:
                    return total
                time.sleep(0)  # let other greenlets run between batches

    def _prune(self, client: redis.Redis, scripts: _Scripts, keys: list[str]) -> int:
        if not keys:
            return 0
        pipe = client.pipeline(transaction=False)
        for key in keys:
            scripts.prune(keys=self._session_keys(key), args=[key], client=pipe)
        return sum(pipe.execute())

    def list_sessions(self, limit: int = 100) -> list[SessionInfo]:
        found: list[SessionInfo] = []
        start = 0
        with self._boundary("list sessions"):
            client, scripts = self._redis()
            while len(found) < limit:
                keys: list[str] = client.zrevrange(  # type: ignore[assignment]
                    self._by_updated, start, start + LIST_BATCH - 1
                )
                if not keys:
                    break
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.hgetall(self._session_keys(key)[0])
                gone: list[str] = []
                for key, fields in zip(keys, pipe.execute(), strict=True):
                    if fields:
                        found.append(_session_info(key, fields))
                    else:
                        gone.append(key)
                # Expired sessions leave the index here too, so reading stays cheap.
                start += len(keys) - self._prune(client, scripts, gone)
        found.sort(key=lambda info: (-info.updated, info.key))
        return found[: max(0, limit)]

    def get_session(self, key: str) -> SessionInfo | None:
        with self._boundary("read a session"):
            fields = self._redis()[0].hgetall(self._session_keys(key)[0])
        return _session_info(key, fields) if fields else None

    def transcript(self, key: str) -> list[Turn]:
        meta, msgs, turns = self._session_keys(key)[:3]
        with self._boundary("read a transcript"):
            pipe = self._redis()[0].pipeline(transaction=True)
            pipe.exists(meta)
            pipe.lrange(msgs, 0, -1)
            pipe.lrange(turns, 0, -1)
            live, bodies, bounds = pipe.execute()
        if not live:
            return []
        result, first = [], 0
        for bound in bounds:
            created, _, end = bound.partition(":")
            result.append(Turn(int(created) / 1e6, [decode(b) for b in bodies[first : int(end)]]))
            first = int(end)
        return result

    def delete_session(self, key: str) -> bool:
        """Delete a session (not its run lock); False when absent or expired."""
        with self._boundary("delete a session"):
            return bool(self._redis()[1].delete(keys=self._session_keys(key), args=[key]))

    # -- locks ------------------------------------------------------------------------

    def acquire_lock(self, key: str, owner: str, ttl_seconds: float) -> bool:
        with self._boundary("take a session lock"):
            scripts = self._redis()[1]
            return bool(scripts.acquire(keys=[self._lock_key(key)], args=[owner, _ms(ttl_seconds)]))

    def release_lock(self, key: str, owner: str) -> None:
        with self._boundary("release a session lock"):
            scripts = self._redis()[1]  # waits out a failover, as for a claim
            self._patiently(lambda: scripts.release(keys=[self._lock_key(key)], args=[owner]))

    # -- failed authentication ------------------------------------------------------

    def auth_lockout_remaining(self, client: str) -> float:
        with self._boundary("read an auth lockout"):
            remaining_ms = self._redis()[0].pttl(self._auth_keys(client)[1])
        return remaining_ms / 1000 if remaining_ms > 0 else 0.0

    def record_auth_failure(self, client: str, limit: RateLimit) -> None:
        """Count a failure. One that arrives during a lockout is ignored (no extension)."""
        args: list[t.Any] = [
            _ms(limit.window_seconds),
            limit.max_attempts,
            _ms(limit.lockout_seconds),
            uuid.uuid4().hex,
        ]
        with self._boundary("count an auth failure"):
            self._redis()[1].auth_failure(keys=self._auth_keys(client), args=args)

    def clear_auth_failures(self, client: str) -> None:
        with self._boundary("clear auth failures"):
            self._redis()[0].delete(*self._auth_keys(client))

    # -- the limits of named keys ---------------------------------------------------------

    def _key_keys(self, key_id: str) -> list[str]:
        base = f"{self.prefix}key:{{{key_id}}}"
        return [f"{base}:requests", f"{base}:tokens", f"{base}:tokens-sum", f"{base}:slots"]

    def admit_request(
        self,
        key_id: str,
        request_id: str,
        *,
        requests_limit: int | None,
        tokens_limit: int | None,
        window_seconds: float = KEY_WINDOW_SECONDS,
    ) -> Admission:
        """One script: the decision and the count are atomic on the Redis server, so
        every worker of every host sees the same window."""
        args: list[t.Any] = [
            _ms(window_seconds),
            requests_limit or 0,
            tokens_limit or 0,
            request_id,
        ]
        with self._boundary("admit a request"):
            scripts = self._redis()[1]
            admitted, count, reset_us, tokens, tokens_reset_us = scripts.admit(
                keys=self._key_keys(key_id)[:3], args=args
            )
        return Admission(
            admitted == 1,
            WindowCount(int(count), int(reset_us) / 1e6),
            WindowCount(int(tokens), int(tokens_reset_us) / 1e6),
        )

    def record_tokens(
        self, key_id: str, tokens: int, *, window_seconds: float = KEY_WINDOW_SECONDS
    ) -> None:
        args: list[t.Any] = [_ms(window_seconds), uuid.uuid4().hex, int(tokens)]
        with self._boundary("count tokens"):
            self._redis()[1].record_tokens(keys=self._key_keys(key_id)[1:3], args=args)

    def acquire_slot(self, key_id: str, owner: str, limit: int, ttl_seconds: float) -> bool:
        args: list[t.Any] = [owner, limit, _ms(ttl_seconds)]
        with self._boundary("take a run slot"):
            scripts = self._redis()[1]
            return bool(scripts.acquire_slot(keys=[self._key_keys(key_id)[3]], args=args))

    def release_slot(self, key_id: str, owner: str) -> None:
        with self._boundary("free a run slot"):
            self._redis()[0].zrem(self._key_keys(key_id)[3], owner)


def _ms(seconds: float) -> int:
    """A positive whole number of milliseconds (Redis expiries are integers)."""
    return max(1, int(seconds * 1000 + 0.999))


def _session_info(key: str, fields: t.Mapping[t.Any, t.Any]) -> SessionInfo:
    return SessionInfo(
        key=key,
        agent_id=fields["agent_id"],
        sticky=fields["sticky"] == "1",
        created=int(fields["created"]) / 1e6,
        updated=int(fields["updated"]) / 1e6,
        expires=int(fields["expires"]) / 1e6,
        turns=int(fields["turns"]),
        messages=int(fields["messages"]),
    )


def _sentinel_options(url: StoreURL) -> tuple[dict[str, t.Any], dict[str, t.Any]]:
    """The redis-py options of a Sentinel URL: for the primary's connections (the
    password, the database, the URL's other query options, TLS), and for the
    sentinels' (``sentinel_username``/``sentinel_password``, TLS).

    :raise ValueError: an option redis-py does not accept (the message names it).
    """
    own: dict[str, str] = {}
    rest = []
    for name, value in urllib.parse.parse_qsl(url.query, keep_blank_values=True):
        if name in SENTINEL_OPTIONS:
            own[name.removeprefix("sentinel_")] = value
        else:
            rest.append((name, value))
    # The primary's part, read the way redis.Redis.from_url reads a plain URL.
    userinfo = url.url.partition("://")[2].partition("/")[0].rpartition("@")[0]
    tls = url.scheme == SENTINEL_SCHEMES[1]
    plain = f"{'rediss' if tls else 'redis'}://{userinfo + '@' if userinfo else ''}sentinel"
    plain += f"/{url.db}?{urllib.parse.urlencode(rest)}"
    primary: dict[str, t.Any] = redis.connection.parse_url(plain)  # type: ignore[no-untyped-call]
    for name in ("host", "port", "connection_class"):
        primary.pop(name, None)
    sentinels: dict[str, t.Any] = dict(own)
    if tls:
        primary["ssl"] = True
        sentinels["ssl"] = True
        sentinels.update((k, v) for k, v in primary.items() if k.startswith("ssl_"))
    return primary, sentinels
