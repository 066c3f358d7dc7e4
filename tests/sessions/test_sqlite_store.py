"""SQLite-specific behaviour: files, errors, atomicity, expiry and purge, open_store."""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import sqlite3
import stat
import typing as t

import pytest

from chatcompat.sessions import IdempotencyRecord
from chatcompat.sessions import KeyedReply
from chatcompat.sessions import SQLiteStore
from chatcompat.sessions import StoredResponse
from chatcompat.sessions import StoreError
from chatcompat.sessions import StoreUnreachable
from chatcompat.sessions import open_store
from chatcompat.sessions import sqlite_db
from chatcompat.sessions import sqlite_store
from chatcompat.settings import RateLimit
from tests.sessions.conftest import raw_rows

KEY = "agent:main:openai-user:alice"
# Made by chatcompat at 9c060c2 (schema version 1, before turn ids and idempotency
# records), with its clock at 1_700_000_000 and a TTL of 3600 s: alice's two turns,
# one stateless session, bob's run lock and one failed authentication.
OLD_DATABASE = pathlib.Path(__file__).parent / "data" / "sessions-v1.db"
# Made by chatcompat at 8ff6a32 (schema version 2, before stored responses and message
# positions), clock at 1_700_000_000, TTL 3600 s: alice's turns t1 (q1, a1) and t2 (q2,
# q2b, a2, with the finished reply of scope "scope-alice"), one stateless session
# (turn t9) and bob's run lock (30 s).
V2_DATABASE = pathlib.Path(__file__).parent / "data" / "sessions-v2.db"


def user(text: str) -> dict[str, t.Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, t.Any]:
    return {"role": "assistant", "content": text}


@pytest.fixture
def store(sqlite_store: SQLiteStore) -> SQLiteStore:
    """Here a plain SQLite store (``store`` in ``test_store.py`` is every backend's)."""
    return sqlite_store


# -- files -------------------------------------------------------------------------


def test_creates_private_directory_and_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "state" / "sub" / "sessions.db"
    with SQLiteStore(str(path)) as store:
        store.append_turn(KEY, "main", [user("q")], sticky=True, ttl_seconds=60)
        assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
        for name in ("sessions.db", "sessions.db-wal", "sessions.db-shm"):
            assert stat.S_IMODE((path.parent / name).stat().st_mode) & 0o077 == 0, name
        assert raw_rows(path, "PRAGMA journal_mode") == [("wal",)]


def test_messages_are_compact_json_in_order(store: SQLiteStore, db_path: pathlib.Path) -> None:
    store.append_turn(KEY, "main", [user("hé"), user("b")], sticky=True, ttl_seconds=60)
    rows = raw_rows(db_path, "SELECT turn, seq, body FROM messages ORDER BY turn, seq")
    assert rows == [
        (1, 0, '{"role":"user","content":"hé"}'),
        (1, 1, '{"role":"user","content":"b"}'),
    ]


@pytest.mark.parametrize(
    "rows",
    [
        [],
        ['{"role":"user","content":"a"}'],
        ['{"a":1}', "[1,2]", '"s"', "18446744073709551617", "null", '{"x":"\\ud800"}'],
    ],
)
def test_rows_decoded_in_one_parse_are_the_rows_decoded_one_by_one(rows: list[str]) -> None:
    decoded = sqlite_db.decode_many(rows)
    assert decoded == [sqlite_db.decode(row) for row in rows]


def test_integers_beyond_64_bits_stay_exact_in_one_parse() -> None:
    assert sqlite_db.decode_many(["18446744073709551617", "1"]) == [18446744073709551617, 1]


@pytest.mark.parametrize("damaged", ['{"role":', "1,2", "", "nope"])
def test_a_damaged_row_is_named_as_before(
    store: SQLiteStore, db_path: pathlib.Path, damaged: str
) -> None:
    store.append_turn(KEY, "main", [user("a"), assistant("b")], sticky=True, ttl_seconds=60)
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE messages SET body = ? WHERE seq = 0", (damaged,))
    with pytest.raises(StoreError, match="a stored message is not valid JSON"):
        store.load_history(KEY, 10)


def test_unwritable_location_is_unavailable(tmp_path: pathlib.Path) -> None:
    (tmp_path / "regular").write_text("a file, not a directory")
    with SQLiteStore(str(tmp_path / "regular" / "state" / "sessions.db")) as store:
        with pytest.raises(StoreUnreachable) as info:
            store.ping()
        assert isinstance(info.value.__cause__, OSError)
        with pytest.raises(StoreUnreachable):
            store.append_turn(KEY, "main", [user("q")], sticky=True, ttl_seconds=60)
        with pytest.raises(StoreUnreachable):
            store.acquire_lock(KEY, "run", 10)


def test_not_a_database_is_unavailable(db_path: pathlib.Path) -> None:
    db_path.write_bytes(b"this is not an SQLite file\n" * 200)
    with SQLiteStore(str(db_path)) as store:
        with pytest.raises(StoreUnreachable) as info:
            store.ping()
        assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_newer_schema_is_refused(db_path: pathlib.Path) -> None:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with SQLiteStore(str(db_path)) as store, pytest.raises(StoreError, match="newer"):
        store.ping()


# -- atomicity ---------------------------------------------------------------------


def test_failure_inside_the_transaction_rolls_back(
    store: SQLiteStore, db_path: pathlib.Path
) -> None:
    store.append_turn(KEY, "main", [user("q1"), user("a1")], sticky=True, ttl_seconds=60)
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        # Fails the second insert, after the session row and the first message.
        conn.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON messages WHEN NEW.body LIKE '%boom%'"
            " BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
    for key in (KEY, "fresh"):
        with pytest.raises(StoreError) as info:
            store.append_turn(
                key, "main", [user("fine"), user("boom")], sticky=False, ttl_seconds=9
            )
        assert not isinstance(info.value, StoreUnreachable)
    assert store.load_history(KEY, 100) == [user("q1"), user("a1")]
    info_ = store.get_session(KEY)
    assert info_ is not None and (info_.turns, info_.messages, info_.sticky) == (1, 2, True)
    assert store.get_session("fresh") is None
    assert raw_rows(db_path, "SELECT count(*) FROM messages") == [(2,)]
    store.append_turn(KEY, "main", [user("q2")], sticky=True, ttl_seconds=60)  # still usable
    assert store.get_session(KEY).turns == 2  # type: ignore[union-attr]


# -- expiry and purge (injected clock) ---------------------------------------------


def test_expired_rows_are_replaced_on_append(
    clocked: SQLiteStore, clock: t.Any, db_path: pathlib.Path
) -> None:
    clocked.append_turn(KEY, "main", [user("old"), user("old")], sticky=True, ttl_seconds=10)
    clock.advance(10)  # expires == now counts as expired
    assert clocked.load_history(KEY, 100) is None
    clocked.append_turn(KEY, "main", [user("new")], sticky=True, ttl_seconds=10)
    assert raw_rows(db_path, "SELECT turn, body FROM messages") == [
        (1, '{"role":"user","content":"new"}')
    ]


def test_a_purge_checkpoints_after_every_batch(
    clocked: SQLiteStore, clock: t.Any, db_path: pathlib.Path
) -> None:
    # Every batch's pages are copied into the file as the purge goes, not left for an
    # automatic checkpoint that would copy a thousand pages in one commit.
    for i in range(sqlite_store.PURGE_BATCH * 2 + 5):
        clocked.append_turn(f"s{i}", "main", [user("q")], sticky=False, ttl_seconds=10)
    clock.advance(20)
    calls: list[str] = []
    original = clocked._db.with_retries

    def watching(op: t.Callable[[sqlite3.Connection], t.Any]) -> t.Any:
        calls.append(op.__name__)
        return original(op)

    clocked._db.with_retries = watching  # type: ignore[method-assign]
    assert clocked.purge_expired() == sqlite_store.PURGE_BATCH * 2 + 5
    batch = "<lambda>"
    assert calls == [batch, "checkpoint", batch, "checkpoint", batch, "checkpoint"]
    assert raw_rows(db_path, "SELECT count(*) FROM sessions") == [(0,)]


def test_opportunistic_purge_at_most_every_minute(
    clocked: SQLiteStore, clock: t.Any, db_path: pathlib.Path
) -> None:
    clocked.append_turn("a", "main", [user("q")], sticky=False, ttl_seconds=10)
    clock.advance(30)
    clocked.append_turn("b", "main", [user("q")], sticky=False, ttl_seconds=1000)
    assert raw_rows(db_path, "SELECT key FROM sessions ORDER BY key") == [("a",), ("b",)]
    clock.advance(30)
    clocked.append_turn("c", "main", [user("q")], sticky=False, ttl_seconds=1000)
    assert raw_rows(db_path, "SELECT key FROM sessions ORDER BY key") == [("b",), ("c",)]
    assert raw_rows(db_path, "SELECT DISTINCT key FROM messages ORDER BY key") == [("b",), ("c",)]


def test_purge_removes_every_expired_row(
    clocked: SQLiteStore, clock: t.Any, db_path: pathlib.Path
) -> None:
    count = sqlite_store.PURGE_BATCH * 2 + 5  # several batches
    for n in range(count):
        clocked.append_turn(f"s{n}", "main", [user("q"), user("a")], sticky=False, ttl_seconds=1)
    clocked.append_turn("live", "main", [user("q")], sticky=True, ttl_seconds=100)
    assert clocked.acquire_lock("s0", "run", 1)
    assert clocked.acquire_lock("live", "run", 100)
    clocked.record_auth_failure("stale", RateLimit(max_attempts=5, window_seconds=1))
    clocked.record_auth_failure("locked", RateLimit(max_attempts=1, lockout_seconds=100))
    clock.advance(5)
    assert clocked.purge_expired() == count
    assert raw_rows(db_path, "SELECT key FROM sessions") == [("live",)]
    assert raw_rows(db_path, "SELECT DISTINCT key FROM messages") == [("live",)]
    assert raw_rows(db_path, "SELECT key FROM locks") == [("live",)]
    assert raw_rows(db_path, "SELECT client FROM auth_failures") == [("locked",)]


def test_lock_expiry_boundary(clocked: SQLiteStore, clock: t.Any) -> None:
    assert clocked.acquire_lock(KEY, "run-1", 10)
    clock.advance(9.5)
    assert clocked.acquire_lock(KEY, "run-2", 10) is False
    clock.advance(0.5)
    assert clocked.acquire_lock(KEY, "run-2", 10) is True


def test_auth_window_and_lockout(clocked: SQLiteStore, clock: t.Any) -> None:
    limit = RateLimit(max_attempts=3, window_seconds=60, lockout_seconds=300)
    clocked.record_auth_failure("c", limit)
    clock.advance(30)
    clocked.record_auth_failure("c", limit)
    clock.advance(31)  # the first failure is now outside the window
    clocked.record_auth_failure("c", limit)
    assert clocked.auth_lockout_remaining("c") == 0.0
    clock.advance(1)
    clocked.record_auth_failure("c", limit)
    assert clocked.auth_lockout_remaining("c") == 300.0
    clock.advance(100)
    clocked.record_auth_failure("c", limit)  # during the lockout: neither extended
    assert clocked.auth_lockout_remaining("c") == 200.0
    clock.advance(195)
    clocked.record_auth_failure("c", limit)  # ... nor counted for later
    assert clocked.auth_lockout_remaining("c") == 5.0
    clock.advance(5)
    assert clocked.auth_lockout_remaining("c") == 0.0
    clocked.record_auth_failure("c", limit)
    clocked.record_auth_failure("c", limit)
    assert clocked.auth_lockout_remaining("c") == 0.0  # counting started from zero


def test_clearing_no_failures_writes_nothing(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[str] = []
    original = store._db.write
    monkeypatch.setattr(store._db, "write", lambda sql, params: writes.append(sql))
    store.clear_auth_failures("10.0.0.1")  # the usual case: nothing recorded
    assert writes == []
    monkeypatch.setattr(store._db, "write", original)
    store.record_auth_failure("10.0.0.1", RateLimit(max_attempts=5, window_seconds=60))
    store.clear_auth_failures("10.0.0.1")
    assert store.auth_lockout_remaining("10.0.0.1") == 0
    assert raw_rows_of(store) == []


def raw_rows_of(store: SQLiteStore) -> list[tuple[t.Any, ...]]:
    return store._db.read("SELECT client FROM auth_failures", ())


def test_claim_expiry_boundary(clocked: SQLiteStore, clock: t.Any) -> None:
    assert clocked.claim_idempotency("scope", "run-1", "fp", 30) is None
    clock.advance(29.5)
    assert clocked.claim_idempotency("scope", "run-2", "fp", 30) == IdempotencyRecord(
        "fp", None, None
    )
    clock.advance(0.5)  # the worker that claimed it died: nobody renewed it
    assert clocked.claim_idempotency("scope", "run-2", "fp", 30) is None


def test_a_reply_lives_as_long_as_its_session(
    clocked: SQLiteStore, clock: t.Any, db_path: pathlib.Path
) -> None:
    reply = {"id": "chatcmpl-1"}
    keyed = KeyedReply("scope", "fp", reply)
    clocked.append_turn(KEY, "main", [user("q")], sticky=True, ttl_seconds=100, keyed_reply=keyed)
    clock.advance(90)
    clocked.append_turn(KEY, "main", [user("q2")], sticky=True, ttl_seconds=100)  # refreshes
    clock.advance(90)  # 180 s after the reply, 90 s after the last turn
    assert clocked.claim_idempotency("scope", "run", "fp", 30) == IdempotencyRecord(
        "fp", KEY, reply
    )
    clock.advance(10)  # the session expired: its reply went with it
    assert clocked.claim_idempotency("scope", "run", "fp", 30) is None
    clocked.release_idempotency("scope", "run")
    clocked.append_turn(KEY, "main", [user("new")], sticky=True, ttl_seconds=100)  # afresh
    assert clocked.claim_idempotency("scope", "run", "fp", 30) is None
    assert raw_rows(db_path, "SELECT count(*) FROM idempotency") == [(1,)]  # the new claim


def test_purge_removes_expired_replies_and_claims(
    clocked: SQLiteStore, clock: t.Any, db_path: pathlib.Path
) -> None:
    for n in range(3):
        keyed = KeyedReply(f"scope-{n}", "fp", {"n": n})
        clocked.append_turn(
            f"s{n}", "main", [user("q")], sticky=False, ttl_seconds=10 + n * 100, keyed_reply=keyed
        )
    assert clocked.claim_idempotency("claim-dead", "run", "fp", 5) is None
    assert clocked.claim_idempotency("claim-live", "run", "fp", 500) is None
    clock.advance(50)
    assert clocked.purge_expired() == 1
    assert raw_rows(db_path, "SELECT scope FROM idempotency ORDER BY scope") == [
        ("claim-live",),
        ("scope-1",),
        ("scope-2",),
    ]
    assert raw_rows(db_path, "SELECT DISTINCT key FROM turn_ids ORDER BY key") == [
        ("s1",),
        ("s2",),
    ]


# -- schema versions ---------------------------------------------------------------


def test_a_database_of_the_previous_version_is_migrated(
    tmp_path: pathlib.Path, clock: t.Any
) -> None:
    path = tmp_path / "sessions.db"
    shutil.copyfile(OLD_DATABASE, path)
    assert raw_rows(path, "PRAGMA user_version") == [(1,)]
    clock.now = 1_700_000_010.0  # bob's lock (30 s) is still held
    with SQLiteStore(str(path), clock=clock) as store:
        # What the old version stored reads as before.
        assert [turn.messages for turn in store.transcript(KEY)] == [
            [user("q1"), {"role": "assistant", "content": "a1"}],
            [user("q2"), {"role": "assistant", "content": "a2"}],
        ]
        assert store.acquire_lock("agent:main:openai-user:bob", "run", 10) is False
        # What the new version adds works on it.
        keyed = KeyedReply("scope", "fp", {"id": "chatcmpl-1"})
        assert store.append_turn(
            KEY,
            "main",
            [user("q3")],
            sticky=True,
            ttl_seconds=60,
            turn_id="t3",
            keyed_reply=keyed,
        )
        assert not store.append_turn(
            KEY, "main", [user("q3")], sticky=True, ttl_seconds=60, turn_id="t3"
        )
        assert store.claim_idempotency("scope", "run", "fp", 30) == IdempotencyRecord(
            "fp", KEY, {"id": "chatcmpl-1"}
        )
        assert store.get_session(KEY).turns == 3  # type: ignore[union-attr]
    assert raw_rows(path, "PRAGMA user_version") == [(sqlite_db.SCHEMA_VERSION,)]
    with SQLiteStore(str(path), clock=clock) as store:  # opening it again changes nothing
        assert len(store.transcript(KEY)) == 3


def test_a_database_of_version_2_is_migrated(tmp_path: pathlib.Path, clock: t.Any) -> None:
    path = tmp_path / "sessions.db"
    shutil.copyfile(V2_DATABASE, path)
    assert raw_rows(path, "PRAGMA user_version") == [(2,)]
    clock.now = 1_700_000_010.0
    alice = [user("q1"), assistant("a1"), user("q2"), user("q2b"), assistant("a2")]
    with SQLiteStore(str(path), clock=clock) as store:
        # What the old version stored reads as before, and by position too.
        assert store.load_history(KEY, 100) == alice
        assert store.load_history(KEY, 2, upto=3) == alice[1:3]
        assert store.load_history("agent:main:openai:0f1e", 1, upto=1) == [user("hi")]
        assert store.acquire_lock("agent:main:openai-user:bob", "run", 10) is False
        assert store.claim_idempotency("scope-alice", "run", "fp", 30) == IdempotencyRecord(
            "fp", KEY, {"id": "chatcmpl-2"}
        )
        assert not store.append_turn(
            KEY, "main", [user("q2")], sticky=True, ttl_seconds=60, turn_id="t2"
        )
        # What the new version adds works on it: the positions go on from the old ones.
        response = StoredResponse("resp_1", "key-1", {"id": "resp_1"}, [])
        assert store.append_turn(
            KEY, "main", [user("q3")], sticky=True, ttl_seconds=60, turn_id="t3", response=response
        )
        record = store.get_response("resp_1")
        assert record is not None and (record.position, record.latest) == (6, True)
        assert store.load_history(KEY, 2, upto=record.position) == [assistant("a2"), user("q3")]
    assert raw_rows(path, "PRAGMA user_version") == [(sqlite_db.SCHEMA_VERSION,)]
    assert raw_rows(path, f"SELECT pos FROM messages WHERE key = '{KEY}' ORDER BY turn, seq") == [
        (n,) for n in range(6)
    ]


def test_a_migration_interrupted_half_way_is_redone(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "sessions.db"
    shutil.copyfile(OLD_DATABASE, path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        # A worker that created one table of the next version, then died before the
        # version was written (each step is one transaction, so only a crash between
        # steps or a hand-made file gets here).
        conn.execute(
            "CREATE TABLE turn_ids (key TEXT, turn_id TEXT, turn INTEGER,"
            " PRIMARY KEY (key, turn_id)) WITHOUT ROWID"
        )
    with SQLiteStore(str(path)) as store:
        store.append_turn("k", "main", [user("q")], sticky=True, ttl_seconds=60, turn_id="t")
        assert store.claim_idempotency("scope", "run", "fp", 30) is None
    assert raw_rows(path, "PRAGMA user_version") == [(sqlite_db.SCHEMA_VERSION,)]


# -- open_store --------------------------------------------------------------------


def test_open_store_absolute_path(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "abs" / "sessions.db"
    with open_store(f"sqlite:///{path}") as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == str(path)
        assert not path.exists()  # nothing happens before first use
        store.ping()
    assert path.exists()


def test_open_store_relative_path(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///rel/sessions.db") as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == str(tmp_path / "rel" / "sessions.db")


@pytest.mark.parametrize("url", ["redis://:hunter2@localhost:6379/0", "rediss://cache:6380/1"])
def test_open_store_redis_opens_a_lazy_redis_store(url: str) -> None:
    store = open_store(url)  # nothing connects yet (tests/sessions/test_redis_store.py)
    assert type(store).__name__ == "RedisStore"
    assert "hunter2" not in repr(store)
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root:hunter2@db/x",
        "sqlite://",
        "sqlite:///",
        "sqlite:///?x=1",
        "sqlite://host/x.db",
        "/x.db",
        "",
    ],
)
def test_open_store_rejects_other_urls(url: str) -> None:
    with pytest.raises(ValueError) as info:
        open_store(url)
    assert "hunter2" not in str(info.value)


def test_open_store_ignores_url_options(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_store(f"sqlite:///{tmp_path}/s.db?timeout=5&secret=hunter2") as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == str(tmp_path / "s.db")
    assert "timeout" in caplog.text and "secret" in caplog.text
    assert "hunter2" not in caplog.text


def test_history_and_responses_are_read_through_indexes(
    store: SQLiteStore, db_path: pathlib.Path
) -> None:
    store.append_turn(KEY, "main", [user("q")], sticky=True, ttl_seconds=60)
    plans = {
        "SELECT body FROM messages WHERE key = 'k' AND pos < 9 ORDER BY pos DESC LIMIT 3": (
            "USING INDEX messages_pos"
        ),
        "SELECT body FROM messages WHERE key = 'k' ORDER BY pos DESC LIMIT 3": (
            "USING INDEX messages_pos"
        ),
        "SELECT * FROM responses WHERE id = 'resp_1'": "USING INDEX sqlite_autoindex_responses",
        "DELETE FROM responses WHERE session_key = 'k'": "USING INDEX responses_session",
    }
    for sql, index in plans.items():
        plan = " ".join(row[-1] for row in raw_rows(db_path, f"EXPLAIN QUERY PLAN {sql}"))
        assert index in plan and "TEMP B-TREE" not in plan, (sql, plan)
