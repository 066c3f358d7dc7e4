"""The SQLite session store: one database file shared by every worker of one host.

Tables: ``sessions`` (one row per session, with its expiry and counters),
``messages`` (the transcript, one compact JSON message per row, ordered by turn and
position, and numbered by ``pos`` across the session), ``turn_ids`` (the id of each
stored turn), ``idempotency`` (claims and finished replies by scope), ``responses``
(Responses API responses by id), ``locks`` (run locks) and ``auth_failures`` (per
client address). A finished reply and a response have no expiry of their own: each
is live while its session's row is, and goes when that row goes (expiry, purge,
delete). The connection handling, retries and the versioned DDL live in
:mod:`.sqlite_db`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import typing as t
import uuid

from ..messages import Message
from .base import KEY_WINDOW_SECONDS
from .base import Admission
from .base import IdempotencyRecord
from .base import KeyedReply
from .base import ResponseRecord
from .base import SessionInfo
from .base import SessionStore
from .base import StoredResponse
from .base import StoreError
from .base import Turn
from .base import WindowCount
from .group_commit import GroupCommit
from .sqlite_db import RETRY_BUDGET_SECONDS
from .sqlite_db import Database
from .sqlite_db import decode
from .sqlite_db import decode_many
from .sqlite_db import encode

if t.TYPE_CHECKING:
    from ..settings import RateLimit
    from ..settings import RedisOptions
    from ..settings import StoreURL

log = logging.getLogger(__name__)

PURGE_INTERVAL_SECONDS = 60.0
# Sessions deleted per purge transaction: bounds how long one purge blocks the worker.
PURGE_BATCH = 100

_COLUMNS = "key, agent_id, sticky, created, updated, expires, turns, messages"


class SQLiteStore(SessionStore):
    """Session store in the SQLite file ``path`` (created with its directory if missing).

    :param clock: the wall clock for timestamps and expiries (tests inject one).
    :param retry_budget: how long to keep retrying a locked database, in seconds.
    """

    def __init__(
        self,
        path: str,
        *,
        clock: t.Callable[[], float] = time.time,
        retry_budget: float = RETRY_BUDGET_SECONDS,
    ) -> None:
        self.path = os.path.abspath(path)
        self._db = Database(self.path, retry_budget=retry_budget)
        # Turns written together share a transaction (the commit is most of their cost).
        self._writes = GroupCommit(self._db)
        self._clock = clock
        self._last_purge = float("-inf")

    @classmethod
    def from_url(cls, url: StoreURL, redis_options: RedisOptions | None = None) -> SQLiteStore:
        """The store in the URL's file; a relative path is relative to the current
        directory (the loader has made the configured one absolute)."""
        if url.query:
            # The config accepts SQLAlchemy-style options; none applies here (a longer
            # busy timeout, say, would freeze gevent workers). Names only: no values.
            names = ", ".join(url.option_names)
            log.warning("the sqlite session store ignores the URL options %s", names)
        return cls(url.sqlite_file(os.getcwd()))

    def ping(self) -> None:
        self._db.read("SELECT count(*) FROM locks", ())

    def close(self) -> None:
        self._db.close()

    def load_history(self, key: str, limit: int, upto: int | None = None) -> list[Message] | None:
        """Return the last ``limit`` messages (of the first ``upto``), oldest first
        (``[]`` when ``limit <= 0``); read backwards through an index, ``limit`` rows.

        :return: None when the session has no live turn.
        """

        def op(conn: sqlite3.Connection) -> list[str] | None:
            with self._db.transaction(conn, "DEFERRED"):  # one snapshot for both queries
                if not _is_live(conn, key, self._clock()):
                    return None
                if upto is None:
                    sql = "SELECT body FROM messages WHERE key = ? ORDER BY pos DESC LIMIT ?"
                    params: tuple[t.Any, ...] = (key, max(0, limit))
                else:
                    sql = (
                        "SELECT body FROM messages WHERE key = ? AND pos < ?"
                        " ORDER BY pos DESC LIMIT ?"
                    )
                    params = (key, upto, max(0, limit))
                rows = conn.execute(sql, params).fetchall()
            return [body for (body,) in reversed(rows)]

        bodies = self._db.with_retries(op)
        return None if bodies is None else decode_many(bodies)

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
        """Append one turn atomically; ``sticky`` and ``agent_id`` take the latest value.

        A session whose expiry passed starts afresh (its old turns and replies are
        deleted). Expired sessions are purged from here at most every 60 s.

        :return: False (nothing stored) when the session already has ``turn_id`` or
            the scope of ``keyed_reply`` already holds a finished reply.
        :raises StoreError: when ``messages`` is empty or not JSON-serialisable, or the
            id of ``response`` is taken (nothing is stored).
        """
        if not messages:
            raise StoreError("a turn needs at least one message")
        bodies = [encode(message) for message in messages]  # before taking any lock
        reply = None if keyed_reply is None else encode(keyed_reply.reply)
        stored_response = None
        if response is not None:
            stored_response = (
                response.id,
                response.owner,
                encode(response.document),
                encode(response.input_items),
            )
        turn_id = turn_id or uuid.uuid4().hex

        # Inside the group's transaction (GroupCommit): reads see what it wrote so far.
        def op(conn: sqlite3.Connection) -> tuple[float, bool]:
            now = self._clock()
            if conn.execute(
                "SELECT 1 FROM turn_ids WHERE key = ? AND turn_id = ?", (key, turn_id)
            ).fetchone() or (
                keyed_reply is not None and _finished(conn, keyed_reply.scope, now) is not None
            ):
                return now, False
            row = conn.execute(
                "SELECT expires, turns, messages FROM sessions WHERE key = ?", (key,)
            ).fetchone()
            if row is not None and row[0] <= now:
                _delete_rows(conn, [key])
                row = None
            turn, first = (1, 0) if row is None else (row[1] + 1, row[2])
            conn.execute(
                f"INSERT INTO sessions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 1, ?)"
                " ON CONFLICT (key) DO UPDATE SET agent_id = excluded.agent_id,"
                " sticky = excluded.sticky, updated = excluded.updated,"
                " expires = excluded.expires, turns = turns + 1,"
                " messages = messages + excluded.messages",
                (key, agent_id, int(sticky), now, now, now + ttl_seconds, len(bodies)),
            )
            conn.executemany(
                "INSERT INTO messages (key, turn, seq, pos, created, body)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(key, turn, seq, first + seq, now, body) for seq, body in enumerate(bodies)],
            )
            conn.execute(
                "INSERT INTO turn_ids (key, turn_id, turn) VALUES (?, ?, ?)",
                (key, turn_id, turn),
            )
            if keyed_reply is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO idempotency"
                    " (scope, fingerprint, owner, expires, session_key, reply)"
                    " VALUES (?, ?, NULL, NULL, ?, ?)",
                    (keyed_reply.scope, keyed_reply.fingerprint, key, reply),
                )
            if stored_response is not None:
                # A plain INSERT: a taken id fails the whole turn (ids are random).
                conn.execute(
                    "INSERT INTO responses (id, session_key, turn, position, agent_id,"
                    " owner, created, document, input_items)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        stored_response[0],
                        key,
                        turn,
                        first + len(bodies),
                        agent_id,
                        stored_response[1],
                        now,
                        stored_response[2],
                        stored_response[3],
                    ),
                )
            return now, True

        now, stored = self._writes.write(op)
        if now - self._last_purge >= PURGE_INTERVAL_SECONDS:
            # So the file stays bounded even when nobody calls purge_expired.
            self._last_purge = now
            try:
                self.purge_expired()
            except StoreError:
                # The turn is stored: failing the request for housekeeping would lie.
                log.warning("purging expired sessions failed", exc_info=True)
        return stored

    def get_response(self, response_id: str) -> ResponseRecord | None:
        rows = self._db.read(
            "SELECT r.id, r.session_key, r.agent_id, r.owner, r.position, r.turn = s.turns,"
            " r.created, r.document, r.input_items FROM responses AS r"
            " JOIN sessions AS s ON s.key = r.session_key"
            " WHERE r.id = ? AND s.expires > ?",
            (response_id, self._clock()),
        )
        if not rows:
            return None
        rid, key, agent_id, owner, position, latest, created, document, items = rows[0]
        return ResponseRecord(
            id=rid,
            session_key=key,
            agent_id=agent_id,
            owner=owner,
            position=position,
            latest=bool(latest),
            created=created,
            document=decode(document),
            input_items=decode(items),
        )

    def delete_response(self, response_id: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            with self._db.transaction(conn):
                live = conn.execute(
                    "SELECT 1 FROM responses AS r JOIN sessions AS s ON s.key = r.session_key"
                    " WHERE r.id = ? AND s.expires > ?",
                    (response_id, self._clock()),
                ).fetchone()
                conn.execute("DELETE FROM responses WHERE id = ?", (response_id,))
            return live is not None

        return self._db.with_retries(op)

    def response_ids(self, key: str) -> list[str]:
        rows = self._db.read(
            "SELECT r.id FROM responses AS r JOIN sessions AS s ON s.key = r.session_key"
            " WHERE r.session_key = ? AND s.expires > ? ORDER BY r.position, r.id",
            (key, self._clock()),
        )
        return [rid for (rid,) in rows]

    def claim_idempotency(
        self, scope: str, owner: str, fingerprint: str, ttl_seconds: float
    ) -> IdempotencyRecord | None:
        def op(conn: sqlite3.Connection) -> IdempotencyRecord | None:
            now = self._clock()
            with self._db.transaction(conn):
                finished = _finished(conn, scope, now)
                if finished is not None:
                    return finished
                row = conn.execute(
                    "SELECT fingerprint, owner, expires FROM idempotency"
                    " WHERE scope = ? AND reply IS NULL",
                    (scope,),
                ).fetchone()
                if row is not None and row[1] != owner and row[2] > now:
                    return IdempotencyRecord(row[0], None, None)
                # Free, an expired claim, ours, or the reply of a session gone.
                conn.execute(
                    "INSERT OR REPLACE INTO idempotency"
                    " (scope, fingerprint, owner, expires, session_key, reply)"
                    " VALUES (?, ?, ?, ?, NULL, NULL)",
                    (scope, fingerprint, owner, now + ttl_seconds),
                )
            return None

        return self._db.with_retries(op)

    def release_idempotency(self, scope: str, owner: str) -> None:
        self._db.write(
            "DELETE FROM idempotency WHERE scope = ? AND owner = ? AND reply IS NULL",
            (scope, owner),
        )

    def acquire_lock(self, key: str, owner: str, ttl_seconds: float) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            with self._db.transaction(conn):
                # Takes a free or expired lock, refreshes our own, leaves another's.
                cursor = conn.execute(
                    "INSERT INTO locks (key, owner, expires) VALUES (?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET owner = excluded.owner,"
                    " expires = excluded.expires"
                    " WHERE locks.expires <= ? OR locks.owner = excluded.owner",
                    (key, owner, now + ttl_seconds, now),
                )
                return cursor.rowcount == 1

        return self._db.with_retries(op)

    def release_lock(self, key: str, owner: str) -> None:
        self._db.write("DELETE FROM locks WHERE key = ? AND owner = ?", (key, owner))

    def purge_expired(self) -> int:
        """Delete expired rows, :data:`PURGE_BATCH` sessions per transaction."""

        def op(conn: sqlite3.Connection, first: bool) -> int:
            now = self._clock()
            with self._db.transaction(conn):
                if first:
                    conn.execute("DELETE FROM locks WHERE expires <= ?", (now,))
                    conn.execute("DELETE FROM idempotency WHERE expires <= ?", (now,))
                    conn.execute("DELETE FROM auth_failures WHERE expires <= ?", (now,))
                    conn.execute("DELETE FROM key_slots WHERE expires <= ?", (now,))
                    # Admissions drop their key's old rows; this catches idle keys.
                    _expire_usage(conn, None, now - 10 * KEY_WINDOW_SECONDS)
                sql = "SELECT key FROM sessions WHERE expires <= ? LIMIT ?"
                keys = [key for (key,) in conn.execute(sql, (now, PURGE_BATCH))]
                _delete_rows(conn, keys)
            return len(keys)

        def checkpoint(conn: sqlite3.Connection) -> None:
            # A purge dirties many pages: left to SQLite's automatic checkpoint, some
            # commit (a batch of ours, or a turn) copies 1,000 of them back into the
            # file at once, 35-60 ms in which the worker does nothing else. Copied
            # after each batch, a checkpoint is one batch's pages.
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        total = batch = self._db.with_retries(lambda conn: op(conn, True))
        while batch >= PURGE_BATCH:
            time.sleep(0)  # let other greenlets run between batches
            self._db.with_retries(checkpoint)
            time.sleep(0)
            batch = self._db.with_retries(lambda conn: op(conn, False))
            total += batch
        if total:
            self._db.with_retries(checkpoint)
        return total

    def list_sessions(self, limit: int = 100) -> list[SessionInfo]:
        rows = self._db.read(
            f"SELECT {_COLUMNS} FROM sessions WHERE expires > ? ORDER BY updated DESC, key LIMIT ?",
            (self._clock(), max(0, limit)),
        )
        return [_session_info(row) for row in rows]

    def get_session(self, key: str) -> SessionInfo | None:
        rows = self._db.read(
            f"SELECT {_COLUMNS} FROM sessions WHERE key = ? AND expires > ?",
            (key, self._clock()),
        )
        return _session_info(rows[0]) if rows else None

    def transcript(self, key: str) -> list[Turn]:
        def op(conn: sqlite3.Connection) -> list[tuple[t.Any, ...]]:
            with self._db.transaction(conn, "DEFERRED"):
                if not _is_live(conn, key, self._clock()):
                    return []
                return conn.execute(
                    "SELECT turn, created, body FROM messages WHERE key = ? ORDER BY turn, seq",
                    (key,),
                ).fetchall()

        turns: list[Turn] = []
        last = None
        for turn, created, body in self._db.with_retries(op):
            if turn != last:
                turns.append(Turn(created=created, messages=[]))
                last = turn
            turns[-1].messages.append(decode(body))
        return turns

    def delete_session(self, key: str) -> bool:
        """Delete a session (not its run lock); False when absent or expired."""

        def op(conn: sqlite3.Connection) -> bool:
            with self._db.transaction(conn):
                live = _is_live(conn, key, self._clock())
                _delete_rows(conn, [key])  # the rows of an expired session go too
            return live

        return self._db.with_retries(op)

    def auth_lockout_remaining(self, client: str) -> float:
        rows = self._db.read("SELECT locked_until FROM auth_failures WHERE client = ?", (client,))
        return max(0.0, rows[0][0] - self._clock()) if rows else 0.0

    def record_auth_failure(self, client: str, limit: RateLimit) -> None:
        """Count a failure. One that arrives during a lockout is ignored (no extension)."""

        def op(conn: sqlite3.Connection) -> None:
            now = self._clock()
            with self._db.transaction(conn):
                row = conn.execute(
                    "SELECT failures, locked_until FROM auth_failures WHERE client = ?", (client,)
                ).fetchone()
                failures, locked_until = ("[]", 0.0) if row is None else row
                if locked_until > now:
                    return
                times = [f for f in decode(failures) if f > now - limit.window_seconds]
                times.append(now)
                if len(times) >= limit.max_attempts:
                    times, locked_until = [], now + limit.lockout_seconds
                expires = max(locked_until, now + limit.window_seconds)
                conn.execute(
                    "INSERT OR REPLACE INTO auth_failures (client, failures, locked_until, expires)"
                    " VALUES (?, ?, ?, ?)",
                    (client, encode(times), locked_until, expires),
                )

        self._db.with_retries(op)

    def clear_auth_failures(self, client: str) -> None:
        # Called on every authenticated request: a read finds the usual case (nothing
        # to clear) without a write transaction.
        if self._db.read("SELECT 1 FROM auth_failures WHERE client = ?", (client,)):
            self._db.write("DELETE FROM auth_failures WHERE client = ?", (client,))

    # -- the limits of named keys ------------------------------------------------------

    def admit_request(
        self,
        key_id: str,
        request_id: str,
        *,
        requests_limit: int | None,
        tokens_limit: int | None,
        window_seconds: float = KEY_WINDOW_SECONDS,
    ) -> Admission:
        """Count and decide in one write transaction (BEGIN IMMEDIATE): the workers
        that admit at the same time take turns, so the count is exact."""

        def op(conn: sqlite3.Connection) -> Admission:
            now = self._clock()
            with self._db.transaction(conn):
                _expire_usage(conn, key_id, now - window_seconds)
                used = dict(
                    conn.execute("SELECT kind, used FROM key_totals WHERE key_id = ?", (key_id,))
                )
                count, tokens = used.get("requests", 0), used.get("tokens", 0)
                admitted = not (
                    (requests_limit is not None and count >= requests_limit)
                    or (tokens_limit is not None and tokens >= tokens_limit)
                )
                if admitted:
                    count += _add_usage(conn, key_id, "requests", 1, now, request_id)
                # A window without a limit has no headers: its reset is not needed.
                request_reset = (
                    None
                    if requests_limit is None
                    else _reset(conn, key_id, "requests", count, requests_limit)
                )
                token_reset = (
                    None
                    if tokens_limit is None
                    else _reset(conn, key_id, "tokens", tokens, tokens_limit)
                )
            return Admission(
                admitted,
                WindowCount(count, _until(request_reset, window_seconds, now)),
                WindowCount(tokens, _until(token_reset, window_seconds, now)),
            )

        return self._db.with_retries(op)

    def record_tokens(
        self, key_id: str, tokens: int, *, window_seconds: float = KEY_WINDOW_SECONDS
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with self._db.transaction(conn):
                _add_usage(conn, key_id, "tokens", tokens, self._clock(), uuid.uuid4().hex)

        self._db.with_retries(op)

    def acquire_slot(self, key_id: str, owner: str, limit: int, ttl_seconds: float) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            with self._db.transaction(conn):
                conn.execute(
                    "DELETE FROM key_slots WHERE key_id = ? AND expires <= ?", (key_id, now)
                )
                mine = conn.execute(
                    "SELECT 1 FROM key_slots WHERE key_id = ? AND owner = ?", (key_id, owner)
                ).fetchone()
                if mine is None:
                    (held,) = conn.execute(
                        "SELECT count(*) FROM key_slots WHERE key_id = ?", (key_id,)
                    ).fetchone()
                    if held >= limit:
                        return False
                conn.execute(
                    "INSERT OR REPLACE INTO key_slots (key_id, owner, expires) VALUES (?, ?, ?)",
                    (key_id, owner, now + ttl_seconds),
                )
            return True

        return self._db.with_retries(op)

    def release_slot(self, key_id: str, owner: str) -> None:
        self._db.write("DELETE FROM key_slots WHERE key_id = ? AND owner = ?", (key_id, owner))


def _expire_usage(conn: sqlite3.Connection, key_id: str | None, before: float) -> None:
    """Drop the window entries at or before ``before`` (of one key, or of all when
    ``key_id`` is None), and take them off the running totals."""
    # Per key: one range of the primary key (key_id, kind, at) for each kind.
    where, params = (
        ("key_id = ? AND kind IN ('requests', 'tokens') AND at <= ?", (key_id, before))
        if key_id
        else ("at <= ?", (before,))
    )
    gone = conn.execute(
        f"SELECT key_id, kind, sum(amount) FROM key_usage WHERE {where} GROUP BY key_id, kind",
        params,
    ).fetchall()
    if gone:
        conn.execute(f"DELETE FROM key_usage WHERE {where}", params)
        conn.executemany(
            "UPDATE key_totals SET used = used - ? WHERE key_id = ? AND kind = ?",
            [(amount, key, kind) for key, kind, amount in gone],
        )


def _add_usage(
    conn: sqlite3.Connection, key_id: str, kind: str, amount: int, at: float, entry_id: str
) -> int:
    """Add one window entry and its amount to the running total; what was added (0
    for an entry id already there: a resent call)."""
    cursor = conn.execute(
        "INSERT OR IGNORE INTO key_usage (key_id, kind, at, amount, request_id)"
        " VALUES (?, ?, ?, ?, ?)",
        (key_id, kind, at, amount, entry_id),
    )
    if cursor.rowcount != 1:
        return 0
    conn.execute(
        "INSERT INTO key_totals (key_id, kind, used) VALUES (?, ?, ?)"
        " ON CONFLICT (key_id, kind) DO UPDATE SET used = used + excluded.used",
        (key_id, kind, amount),
    )
    return amount


def _reset(
    conn: sqlite3.Connection, key_id: str, kind: str, used: int, limit: int | None
) -> float | None:
    """The time of the entry whose leaving changes what the window admits: when it is
    full, the one that brings it back under ``limit`` (oldest first); else the oldest.
    None when the window is empty."""
    if limit is not None and used >= limit:
        left = used
        rows = conn.execute(
            "SELECT at, amount FROM key_usage WHERE key_id = ? AND kind = ? ORDER BY at",
            (key_id, kind),
        )
        for at, amount in rows:
            left -= amount
            if left < limit:
                return float(at)
    row = conn.execute(
        "SELECT min(at) FROM key_usage WHERE key_id = ? AND kind = ?", (key_id, kind)
    ).fetchone()
    return None if row[0] is None else float(row[0])


def _until(at: float | None, window: float, now: float) -> float:
    return 0.0 if at is None else max(0.0, at + window - now)


def _is_live(conn: sqlite3.Connection, key: str, now: float) -> bool:
    sql = "SELECT 1 FROM sessions WHERE key = ? AND expires > ?"
    return conn.execute(sql, (key, now)).fetchone() is not None


def _finished(conn: sqlite3.Connection, scope: str, now: float) -> IdempotencyRecord | None:
    """The finished reply under ``scope`` while its session is live, else None."""
    row = conn.execute(
        "SELECT i.fingerprint, i.session_key, i.reply FROM idempotency AS i"
        " JOIN sessions AS s ON s.key = i.session_key"
        " WHERE i.scope = ? AND i.reply IS NOT NULL AND s.expires > ?",
        (scope, now),
    ).fetchone()
    return None if row is None else IdempotencyRecord(row[0], row[1], decode(row[2]))


def _delete_rows(conn: sqlite3.Connection, keys: list[str]) -> None:
    params = [(key,) for key in keys]
    conn.executemany("DELETE FROM messages WHERE key = ?", params)
    conn.executemany("DELETE FROM turn_ids WHERE key = ?", params)
    conn.executemany("DELETE FROM idempotency WHERE session_key = ?", params)
    conn.executemany("DELETE FROM responses WHERE session_key = ?", params)
    conn.executemany("DELETE FROM sessions WHERE key = ?", params)


def _session_info(row: tuple[t.Any, ...]) -> SessionInfo:
    key, agent_id, sticky, created, updated, expires, turns, messages = row
    return SessionInfo(key, agent_id, bool(sticky), created, updated, expires, turns, messages)
