"""Group commit: turn writes that are ready together share one transaction, and each
still gets its own outcome (chatcompat.sessions.group_commit)."""

from __future__ import annotations

import json
import pathlib
import sqlite3
import subprocess
import sys
import threading
import time
import typing as t

import pytest

from chatcompat.sessions import SQLiteStore
from chatcompat.sessions import StoreError
from chatcompat.sessions import StoreUnreachable
from chatcompat.sessions.group_commit import GroupCommit
from chatcompat.sessions.sqlite_db import Database

REPO = pathlib.Path(__file__).resolve().parents[2]

# Runs in a gevent-patched interpreter, as a gevent worker does; prints one JSON line.
GEVENT_SCRIPT = """
import json
import sys

from gevent import monkey

monkey.patch_all()

import gevent

from chatcompat.sessions import SQLiteStore
from chatcompat.sessions import StoreError
from chatcompat.sessions.base import StoredResponse
from chatcompat.sessions import sqlite_db

transactions = []
real = sqlite_db.Database.transaction


def counted(self, conn, mode="IMMEDIATE"):
    transactions.append(mode)
    return real(self, conn, mode)


sqlite_db.Database.transaction = counted
store = SQLiteStore(sys.argv[1])
store.ping()
store._last_purge = float("inf")  # no housekeeping transactions in the count
transactions.clear()  # the schema's
scenario = sys.argv[2]


def response(rid):
    return StoredResponse(id=rid, owner="operator", document={"id": rid}, input_items=[])


def write(n, rid=None):
    try:
        store.append_turn(
            f"agent:main:openai:{n}",
            "main",
            [{"role": "user", "content": f"hi {n}"}, {"role": "assistant", "content": f"{n}"}],
            sticky=False,
            ttl_seconds=60,
            response=None if rid is None else response(rid),
        )
        return "stored"
    except StoreError as exc:
        return type(exc).__name__


if scenario == "together":
    writers = [gevent.spawn(write, n) for n in range(10)]
elif scenario == "one-fails":
    write("first", "resp_taken")
    transactions.clear()
    rids = [f"resp_{n}" for n in range(4)] + ["resp_taken"]
    writers = [gevent.spawn(write, n, rid) for n, rid in enumerate(rids)]
elif scenario == "follower-killed":
    from chatcompat.sessions import group_commit

    group_commit.let_others_run = lambda: gevent.sleep(0.5)
    leader = gevent.spawn(write, "leader")
    gone = gevent.spawn(write, "gone")
    follower = gevent.spawn(write, "follower")
    gevent.sleep(0.05)  # all three have queued; the leader waits for its group
    gone.kill()
    writers = [leader, follower]
elif scenario == "leader-killed":
    from chatcompat.sessions import group_commit

    # The leader waits long enough for its group to be killed in the wait.
    group_commit.let_others_run = lambda: gevent.sleep(0.5)
    leader = gevent.spawn(write, "leader")
    follower = gevent.spawn(write, "follower")
    gevent.sleep(0.05)  # both have queued their write; the leader waits for its group
    leader.kill()
    group_commit.let_others_run = lambda: gevent.sleep(0)
    writers = [follower, gevent.spawn(write, "after")]
gevent.joinall(writers, raise_error=True)
outcomes = [w.value for w in writers]
sessions = sorted(info.key for info in store.list_sessions(limit=100))
print(json.dumps({"outcomes": outcomes, "transactions": len(transactions), "sessions": sessions}))
"""


def run_gevent(db_path: pathlib.Path, scenario: str) -> dict[str, t.Any]:
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT, str(db_path), scenario],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, t.Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_writes_ready_together_share_one_transaction(tmp_path: pathlib.Path) -> None:
    result = run_gevent(tmp_path / "s.db", "together")
    assert result["outcomes"] == ["stored"] * 10
    assert result["transactions"] == 1
    assert result["sessions"] == sorted(f"agent:main:openai:{n}" for n in range(10))
    store = SQLiteStore(str(tmp_path / "s.db"))
    for n in range(10):
        stored = store.load_history(f"agent:main:openai:{n}", 10)
        assert stored == [
            {"role": "user", "content": f"hi {n}"},
            {"role": "assistant", "content": f"{n}"},
        ]


def test_a_write_that_fails_in_a_group_fails_alone(tmp_path: pathlib.Path) -> None:
    result = run_gevent(tmp_path / "s.db", "one-fails")
    # The group's transaction failed on the taken id; each write then went alone.
    assert result["outcomes"] == ["stored"] * 4 + ["StoreError"]
    assert result["transactions"] == 1 + 5
    assert result["sessions"] == sorted(
        ["agent:main:openai:first"] + [f"agent:main:openai:{n}" for n in range(4)]
    )
    store = SQLiteStore(str(tmp_path / "s.db"))
    assert store.load_history("agent:main:openai:4", 10) is None
    record = store.get_response("resp_taken")
    assert record is not None and record.session_key == "agent:main:openai:first"


def test_a_leader_killed_before_its_commit_hands_the_lead_on(tmp_path: pathlib.Path) -> None:
    result = run_gevent(tmp_path / "s.db", "leader-killed")
    # The killed writer's turn is not stored (nobody waits for its reply); the writer
    # that was waiting in its group is stored by the next leader, not left waiting.
    assert result["outcomes"] == ["stored", "stored"]
    assert result["sessions"] == ["agent:main:openai:after", "agent:main:openai:follower"]


def test_a_locked_database_fails_every_write_of_the_group(tmp_path: pathlib.Path) -> None:
    db = Database(str(tmp_path / "s.db"), retry_budget=0.2)
    db.with_retries(lambda conn: conn.execute("CREATE TABLE t (n INTEGER)"))
    writes = GroupCommit(db)
    other = sqlite3.connect(str(tmp_path / "s.db"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnreachable, match="stayed locked"):
            writes.write(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert writes.write(lambda conn: conn.execute("INSERT INTO t VALUES (2)").rowcount) == 1
    assert db.read("SELECT n FROM t", ()) == [(2,)]


def test_threads_writing_at_once_store_every_turn(tmp_path: pathlib.Path) -> None:
    """gthread workers: writes that arrive while a group commits form the next one."""
    store = SQLiteStore(str(tmp_path / "s.db"))
    store.ping()
    failures: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(20):
                # Each thread its own session, and all of them one shared session.
                for key in (f"agent:main:openai:{n}", "agent:main:shared"):
                    message = {"role": "user", "content": f"{n}.{i}"}
                    store.append_turn(key, "main", [message], sticky=True, ttl_seconds=60)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures
    for n in range(8):
        history = store.load_history(f"agent:main:openai:{n}", 100)
        assert [m["content"] for m in history or []] == [f"{n}.{i}" for i in range(20)]
    shared = store.get_session("agent:main:shared")
    assert shared is not None and shared.turns == 160 and shared.messages == 160
    contents = [m["content"] for m in store.load_history("agent:main:shared", 200) or []]
    assert sorted(contents) == sorted(f"{n}.{i}" for n in range(8) for i in range(20))


def test_an_op_error_that_is_not_sqlites_reaches_its_writer_alone(
    tmp_path: pathlib.Path,
) -> None:
    db = Database(str(tmp_path / "s.db"))
    writes = GroupCommit(db)

    def refuse(conn: sqlite3.Connection) -> None:
        raise StoreError("a stored message is not valid JSON")

    with pytest.raises(StoreError, match="not valid JSON"):
        writes.write(refuse)
    assert writes.write(lambda conn: 7) == 7


def test_a_leader_commits_its_own_group_and_hands_the_next_one_on(
    tmp_path: pathlib.Path,
) -> None:
    """Writes that arrive while a group commits form the next group, which one of
    their writers commits: the first leader's reply does not wait for it."""
    db = Database(str(tmp_path / "s.db"))
    db.with_retries(lambda conn: conn.execute("CREATE TABLE t (n INTEGER, thread TEXT)"))
    writes = GroupCommit(db)
    first_in = threading.Event()

    def op(n: int) -> t.Callable[[sqlite3.Connection], None]:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t VALUES (?, ?)", (n, threading.current_thread().name))
            if n == 0:
                first_in.set()
                time.sleep(0.3)  # the others queue meanwhile

        return insert

    threads = [threading.Thread(target=writes.write, args=(op(0),), name="w0")]
    threads[0].start()
    assert first_in.wait(5)
    threads += [
        threading.Thread(target=writes.write, args=(op(n),), name=f"w{n}") for n in (1, 2, 3)
    ]
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(10)
    rows = dict(db.read("SELECT n, thread FROM t", ()))
    assert sorted(rows) == [0, 1, 2, 3]
    assert rows[0] == "w0"
    committers = {rows[n] for n in (1, 2, 3)}
    assert len(committers) == 1 and committers != {"w0"}  # one group, led by one of them


def test_a_writer_killed_while_it_waits_leaves_the_group(tmp_path: pathlib.Path) -> None:
    result = run_gevent(tmp_path / "s.db", "follower-killed")
    assert result["outcomes"] == ["stored", "stored"]
    assert result["transactions"] == 1
    assert result["sessions"] == ["agent:main:openai:follower", "agent:main:openai:leader"]
