"""The SQLite plumbing of :class:`~chatcompat.sessions.sqlite_store.SQLiteStore`.

Under gevent every ``sqlite3`` call is a blocking C call that freezes the whole worker
(SPEC section 14), so: WAL (readers never wait for the writer), transactions of a few
statements, a 1 ms busy timeout inside SQLite, and the real waiting for a busy
database done here with ``time.sleep`` (cooperative under gevent) for at most
``retry_budget`` seconds before :class:`StoreUnreachable`.

Each process has one connection, opened lazily and guarded by a lock. It is closed
before a fork and never used by the child, which opens its own: SQLite's file locks
do not survive ``fork()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import threading
import time
import typing as t
import weakref

from .base import StoreError
from .base import StoreUnreachable

_T = t.TypeVar("_T")

# SQLite's own busy wait blocks the whole gevent worker, and every greenlet that tries
# while another process writes pays it once per attempt (20 writers x 20 ms measured a
# 0.4 s freeze; x 1 ms: 28 ms). 1 ms still catches another worker's quick commit.
BUSY_TIMEOUT_SECONDS = 0.001
RETRY_BUDGET_SECONDS = 2.0
# Each step brings a file from version n to n + 1 in one transaction (PRAGMA
# user_version is the version): a file made by an older chatcompat is upgraded step
# by step when a worker first opens it, and a new file runs them all. Steps only add
# (tables, columns, indexes); a released step is never edited, a change is a new step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS sessions (
            key TEXT PRIMARY KEY, agent_id TEXT NOT NULL, sticky INTEGER NOT NULL,
            created REAL NOT NULL, updated REAL NOT NULL, expires REAL NOT NULL,
            turns INTEGER NOT NULL, messages INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires)",
        "CREATE INDEX IF NOT EXISTS sessions_updated ON sessions (updated)",
        # A rowid table: message bodies can be large (WITHOUT ROWID suits small rows).
        """CREATE TABLE IF NOT EXISTS messages (
            key TEXT NOT NULL, turn INTEGER NOT NULL, seq INTEGER NOT NULL,
            created REAL NOT NULL, body TEXT NOT NULL,
            PRIMARY KEY (key, turn, seq)
        )""",
        """CREATE TABLE IF NOT EXISTS locks (
            key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS locks_expires ON locks (expires)",
        # failures: JSON array of the failure times still inside the window;
        # expires: when the row stops mattering (purge does not know the window).
        """CREATE TABLE IF NOT EXISTS auth_failures (
            client TEXT PRIMARY KEY, failures TEXT NOT NULL,
            locked_until REAL NOT NULL, expires REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS auth_failures_expires ON auth_failures (expires)",
    ),
    (
        # The id of every stored turn: a retried write of the same turn stores nothing.
        """CREATE TABLE IF NOT EXISTS turn_ids (
            key TEXT NOT NULL, turn_id TEXT NOT NULL, turn INTEGER NOT NULL,
            PRIMARY KEY (key, turn_id)
        ) WITHOUT ROWID""",
        # Idempotency records: a claim (owner, expires; reply NULL) or a finished
        # reply (session_key, reply; it lives as long as that session's row).
        """CREATE TABLE IF NOT EXISTS idempotency (
            scope TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, owner TEXT,
            expires REAL, session_key TEXT, reply TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS idempotency_session ON idempotency (session_key)",
        "CREATE INDEX IF NOT EXISTS idempotency_expires ON idempotency (expires)",
    ),
    (
        # pos: the message's place in its session's transcript (0, 1, ...), so the
        # history up to a stored response reads through an index, at a cost that grows
        # with the limit and not with the transcript. Existing rows are numbered here,
        # in one pass through a temporary table (UPDATE ... FROM needs SQLite 3.33;
        # window functions 3.25, upserts already need 3.24).
        "ALTER TABLE messages ADD COLUMN pos INTEGER",
        "CREATE TEMP TABLE IF NOT EXISTS numbered (id INTEGER PRIMARY KEY, pos INTEGER)",
        """INSERT INTO numbered (id, pos) SELECT rowid,
            row_number() OVER (PARTITION BY key ORDER BY turn, seq) - 1 FROM messages""",
        "UPDATE messages SET pos = (SELECT pos FROM numbered WHERE id = messages.rowid)",
        "DROP TABLE numbered",
        "CREATE UNIQUE INDEX IF NOT EXISTS messages_pos ON messages (key, pos)",
        # Responses API responses (SPEC 15), written with their turn. No expiry of
        # their own: one is live while its session's row is, and goes when that row
        # goes. turn: the turn that stored it (latest while it is the session's last);
        # position: the session's message count once that turn was stored.
        """CREATE TABLE IF NOT EXISTS responses (
            id TEXT PRIMARY KEY, session_key TEXT NOT NULL, turn INTEGER NOT NULL,
            position INTEGER NOT NULL, agent_id TEXT NOT NULL, owner TEXT NOT NULL,
            created REAL NOT NULL, document TEXT NOT NULL, input_items TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS responses_session ON responses (session_key)",
    ),
    (
        # The rolling windows of named keys: one row per admitted request (kind
        # 'requests', amount 1, id the request's) or finished run ('tokens'), kept in
        # time order per key and kind, so what leaves a window is one range.
        """CREATE TABLE IF NOT EXISTS key_usage (
            key_id TEXT NOT NULL, kind TEXT NOT NULL, at REAL NOT NULL,
            amount INTEGER NOT NULL, request_id TEXT NOT NULL,
            PRIMARY KEY (key_id, kind, at, request_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS key_usage_at ON key_usage (at)",
        # What key_usage holds per key and kind, kept in step with it: an admission
        # reads two rows instead of summing its whole window.
        """CREATE TABLE IF NOT EXISTS key_totals (
            key_id TEXT NOT NULL, kind TEXT NOT NULL, used INTEGER NOT NULL,
            PRIMARY KEY (key_id, kind)
        ) WITHOUT ROWID""",
        # The concurrent-run slots of named keys: leases renewed like the run locks.
        """CREATE TABLE IF NOT EXISTS key_slots (
            key_id TEXT NOT NULL, owner TEXT NOT NULL, expires REAL NOT NULL,
            PRIMARY KEY (key_id, owner)
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS key_slots_expires ON key_slots (expires)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# Primary result codes meaning the file cannot be used at all (vs. a bug or bad data):
# PERM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOLFS, NOTADB.
_UNAVAILABLE_CODES = frozenset({3, 8, 10, 11, 13, 14, 15, 22, 26})
_BUSY_CODES = frozenset({5, 6})  # BUSY, LOCKED

_LIVE: weakref.WeakSet[Database] = weakref.WeakSet()
# Connections inherited across a fork stay referenced so the child never finalises
# them: closing one would run SQLite's unlock/checkpoint logic on the parent's files.
_INHERITED: list[sqlite3.Connection] = []


class Database:
    """One lazily opened connection per process to the SQLite file ``path``."""

    def __init__(self, path: str, *, retry_budget: float = RETRY_BUDGET_SECONDS) -> None:
        self.path = path
        self.retry_budget = retry_budget
        # Never held across a cooperative switch (sqlite3 calls do not yield), so even
        # a lock created before gevent's monkey-patching cannot deadlock a worker.
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        _LIVE.add(self)

    def with_retries(self, op: t.Callable[[sqlite3.Connection], _T]) -> _T:
        """Call ``op`` with the connection, again while the database is locked.

        :raises StoreUnreachable: the file cannot be opened or used, or it stayed
            locked for ``retry_budget`` seconds.
        :raises StoreError: any other SQLite error.
        """
        deadline = time.monotonic() + self.retry_budget
        delay = 0.002
        while True:
            try:
                with self._lock:
                    return op(self._connection())
            except sqlite3.Error as exc:
                if (_result_code(exc) & 0xFF) not in _BUSY_CODES:
                    raise _translate(exc, self.path) from exc
                if time.monotonic() >= deadline:
                    raise StoreUnreachable(
                        f"the session store {self.path} stayed locked for {self.retry_budget:g}s"
                    ) from exc
            except OSError as exc:
                raise StoreUnreachable(
                    f"cannot open the session store {self.path}: {exc.strerror or exc}"
                ) from exc
            # Outside the lock, so other greenlets can use the connection meanwhile;
            # jittered, so the greenlets that wait do not all wake and block together.
            pause = delay * random.uniform(0.5, 1.0)
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            delay = min(delay * 2, 0.1)

    @contextlib.contextmanager
    def transaction(self, conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> t.Iterator[None]:
        """Wrap a block in ``BEGIN mode`` … ``COMMIT``; roll back when it raises.

        IMMEDIATE (for writes) takes the write lock up front: a busy database fails
        here, before any work, never half-way through like a deferred upgrade.
        """
        conn.execute(f"BEGIN {mode}")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._conn = None  # state unknown: the next call opens a fresh one
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            raise

    def read(self, sql: str, params: tuple[t.Any, ...]) -> list[tuple[t.Any, ...]]:
        """Run one query (its own implicit read transaction)."""
        return self.with_retries(lambda conn: conn.execute(sql, params).fetchall())

    def write(self, sql: str, params: tuple[t.Any, ...]) -> None:
        """Run one statement in a write transaction."""

        def op(conn: sqlite3.Connection) -> None:
            with self.transaction(conn):
                conn.execute(sql, params)

        self.with_retries(op)

    def close(self) -> None:
        """Close the connection; the next call reopens it."""
        with self._lock:
            self._discard()

    def _open(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        # Create the file ourselves for its 0600 mode; SQLite gives -wal/-shm the same.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,  # autocommit: transactions are explicit BEGIN/COMMIT
            check_same_thread=False,
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL
            version = _user_version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} was created by a newer chatcompat")
            if version < SCHEMA_VERSION:
                self._migrate(conn)
        except BaseException:
            conn.close()  # also rolls back a half-run step
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Run the steps the file still lacks, one transaction each.

        The version is read again under the write lock: another worker may have run
        a step since this one looked.
        """
        for version, statements in enumerate(MIGRATIONS, start=1):
            with self.transaction(conn):
                if _user_version(conn) >= version:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid != os.getpid():
            # Opened by the parent of a fork that the at-fork hook could not close.
            _INHERITED.append(self._conn)
            self._conn = None
        if self._conn is None:
            self._conn = self._open()
            self._pid = os.getpid()
        return self._conn

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._pid == os.getpid():
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            else:
                _INHERITED.append(conn)

    def _close_for_fork(self) -> None:
        # Waits only for a call in progress in another thread (they take milliseconds).
        if self._lock.acquire(timeout=1.0):
            try:
                self._discard()
            finally:
                self._lock.release()

    def _forget_after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held the old one
        if self._conn is not None:
            _INHERITED.append(self._conn)
            self._conn = None


def encode(value: t.Any) -> str:
    """Compact JSON for a TEXT column.

    :raises StoreError: the value is not JSON-serialisable (or holds NaN/infinity).
    """
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (valid as a JSON \\u escape) cannot go into a TEXT column.
            text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:  # NaN, cycles, deep nesting
        raise StoreError(f"a message cannot be stored as JSON: {exc}") from exc
    return text


def decode(text: str) -> t.Any:
    """Parse what :func:`encode` stored; :class:`StoreError` when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StoreError("a stored message is not valid JSON") from exc


def decode_many(texts: t.Sequence[str]) -> list[t.Any]:
    """Parse many values :func:`encode` stored (a session's messages) in one go.

    One ``json.loads`` of the rows joined into an array gives the same values as one
    call per row (the same parser: integers stay exact) in a quarter of the time: a
    call's own cost is most of a short message's. Each row is a whole JSON value
    written by :func:`encode`; a damaged row makes the array fail to parse or change
    its length, and the rows are then parsed one by one, which names the fault as
    :func:`decode` always did. (Two damaged rows that cancel out, such as ``[1`` and
    ``2],3``, would not be told apart: nothing but :func:`encode` writes rows.)

    :raises StoreError: a row is not JSON.
    """
    if not texts:
        return []
    try:
        values = json.loads("[" + ",".join(texts) + "]")
    except ValueError:
        values = None
    if isinstance(values, list) and len(values) == len(texts):
        return values
    return [decode(text) for text in texts]


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _result_code(exc: sqlite3.Error) -> int:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code)
    # Errors raised by the sqlite3 module itself carry no code; match the text.
    message = str(exc)
    return 5 if "locked" in message or "busy" in message else 0


def _translate(exc: sqlite3.Error, path: str) -> StoreError:
    # SQLite's messages name no data (values are bound parameters): safe to show.
    if (_result_code(exc) & 0xFF) in _UNAVAILABLE_CODES:
        return StoreUnreachable(f"the session store {path} is unusable: {exc}")
    return StoreError(f"the session store {path} failed: {exc}")


def _before_fork() -> None:
    for database in list(_LIVE):
        database._close_for_fork()


def _after_fork_in_child() -> None:
    for database in list(_LIVE):
        database._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
