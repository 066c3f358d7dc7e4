"""SQLite under concurrency: a busy database, fork, several processes, gevent."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pathlib
import sqlite3
import subprocess
import sys
import threading
import time
import typing as t

import pytest

from chatcompat.sessions import SQLiteStore
from chatcompat.sessions import StoreUnreachable
from chatcompat.sessions import sqlite_db
from tests.sessions.conftest import raw_rows

KEY = "agent:main:openai-user:alice"
REPO = pathlib.Path(__file__).resolve().parents[2]


def user(text: str) -> dict[str, t.Any]:
    return {"role": "user", "content": text}


@pytest.fixture
def store(sqlite_store: SQLiteStore) -> SQLiteStore:
    """Here a plain SQLite store (``store`` in ``test_store.py`` is every backend's)."""
    return sqlite_store


# -- busy database -----------------------------------------------------------------


@contextlib.contextmanager
def write_lock_held(path: pathlib.Path, seconds: float) -> t.Iterator[None]:
    """Hold SQLite's write lock from another connection for ``seconds`` (or the block)."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    done = threading.Event()

    def release() -> None:
        done.wait(seconds)
        holder.execute("ROLLBACK")

    thread = threading.Thread(target=release)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        holder.close()


@pytest.mark.live  # waits out real timeouts
def test_busy_database_is_waited_for(store: SQLiteStore, db_path: pathlib.Path) -> None:
    store.ping()
    with write_lock_held(db_path, 0.3):
        started = time.monotonic()
        store.append_turn(KEY, "main", [user("q")], sticky=True, ttl_seconds=60)
        waited = time.monotonic() - started
    assert 0.25 <= waited < 1.5
    assert store.load_history(KEY, 100) == [user("q")]


def test_readers_do_not_wait_for_a_writer(store: SQLiteStore, db_path: pathlib.Path) -> None:
    store.append_turn(KEY, "main", [user("q")], sticky=True, ttl_seconds=60)
    with write_lock_held(db_path, 10):
        started = time.monotonic()
        store.ping()
        assert store.load_history(KEY, 100) == [user("q")]
        assert store.auth_lockout_remaining("c") == 0.0
        assert time.monotonic() - started < 0.1


@pytest.mark.live  # waits out real timeouts
def test_busy_past_the_budget_is_unavailable(db_path: pathlib.Path) -> None:
    with SQLiteStore(str(db_path), retry_budget=0.5) as store:
        store.append_turn(KEY, "main", [user("q1")], sticky=True, ttl_seconds=60)
        with write_lock_held(db_path, 10):
            started = time.monotonic()
            with pytest.raises(StoreUnreachable, match="locked"):
                store.append_turn(KEY, "main", [user("q2")], sticky=True, ttl_seconds=60)
            assert 0.45 <= time.monotonic() - started < 1.5
            with pytest.raises(StoreUnreachable):
                store.acquire_lock(KEY, "run", 10)
        assert store.load_history(KEY, 100) == [user("q1")]
        assert store.acquire_lock(KEY, "run", 10) is True


# -- processes ---------------------------------------------------------------------


def test_child_of_a_fork_opens_its_own_connection(
    store: SQLiteStore, db_path: pathlib.Path
) -> None:
    store.append_turn(KEY, "main", [user("parent")], sticky=True, ttl_seconds=60)
    inherited = store._db._conn
    assert inherited is not None
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            store.append_turn(KEY, "main", [user("child")], sticky=True, ttl_seconds=60)
            mine = store._db._conn is not inherited and store._db._pid == os.getpid()
            seen = store.load_history(KEY, 100) == [user("parent"), user("child")]
            code = 0 if mine and seen else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with pytest.raises(sqlite3.ProgrammingError):
        inherited.execute("SELECT 1")  # closed in the parent before the fork
    store.append_turn(KEY, "main", [user("parent again")], sticky=True, ttl_seconds=60)
    expected = [user("parent"), user("child"), user("parent again")]
    assert store.load_history(KEY, 100) == expected
    assert raw_rows(db_path, "PRAGMA integrity_check") == [("ok",)]


def test_connection_of_another_process_is_neither_used_nor_closed(store: SQLiteStore) -> None:
    store.ping()
    foreign = store._db._conn
    assert foreign is not None
    store._db._pid = -1  # as if it had been opened before a fork
    store.ping()
    assert store._db._conn is not foreign
    assert foreign in sqlite_db._INHERITED
    sqlite_db._INHERITED.remove(foreign)
    assert foreign.execute("SELECT 1").fetchone() == (1,)  # still open
    foreign.close()


SHARED_KEY = "agent:main:shared"
UNLOCKED_KEY = "agent:main:unlocked"
TURNS_PER_PROCESS = 50


def _turn(name: str, n: int) -> list[dict[str, t.Any]]:
    return [
        user(f"{name}:{n}:q"),
        user(f"{name}:{n}:q2"),
        {"role": "assistant", "content": f"{name}:{n}:a"},
    ]


def _append_worker(path: str, name: str, rendezvous: str) -> None:
    """Run in a spawned process: append turns under the lock, and without it."""
    pathlib.Path(rendezvous, name).touch()
    while len(os.listdir(rendezvous)) < 2:  # start together
        time.sleep(0.005)
    with SQLiteStore(path) as store:
        for n in range(TURNS_PER_PROCESS):
            owner = f"{name}-{n}"
            deadline = time.monotonic() + 60
            while not store.acquire_lock(SHARED_KEY, owner, 60):
                if time.monotonic() > deadline:
                    raise RuntimeError("the lock was never released")
                time.sleep(0.001)
            try:
                before = store.get_session(SHARED_KEY)
                time.sleep(0.001)  # the other process would have to break in here
                store.append_turn(SHARED_KEY, "main", _turn(name, n), sticky=True, ttl_seconds=600)
                after = store.get_session(SHARED_KEY)
                if after is None or after.turns != (before.turns if before else 0) + 1:
                    raise RuntimeError("another run appended while the lock was held")
            finally:
                store.release_lock(SHARED_KEY, owner)
            # Without the lock only BEGIN IMMEDIATE keeps the turn numbering right.
            store.append_turn(UNLOCKED_KEY, "main", _turn(name, n), sticky=True, ttl_seconds=600)


@pytest.mark.live
def test_two_processes_append_to_one_session(store: SQLiteStore, tmp_path: pathlib.Path) -> None:
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_append_worker, args=(store.path, name, str(rendezvous)))
        for name in ("p1", "p2")
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [process.exitcode for process in processes] == [0, 0]
    for key in (SHARED_KEY, UNLOCKED_KEY):
        turns = [turn.messages for turn in store.transcript(key)]
        assert len(turns) == 2 * TURNS_PER_PROCESS
        expected = {(name, n): _turn(name, n) for name in ("p1", "p2") for n in range(50)}
        seen = [turn[0]["content"].split(":")[:2] for turn in turns]
        assert [expected[(name, int(n))] for name, n in seen] == turns  # each turn intact
        assert sorted((name, int(n)) for name, n in seen) == sorted(expected)  # none lost
        for name in ("p1", "p2"):  # each process's turns in its own order
            mine = [int(n) for who, n in seen if who == name]
            assert mine == sorted(mine)
        info = store.get_session(key)
        assert info is not None and (info.turns, info.messages) == (100, 300)
        assert store.load_history(key, 1000) == [m for turn in turns for m in turn]


# -- gevent ------------------------------------------------------------------------

GEVENT_WORKER = """
import json
import sys
import time

from gevent import monkey

monkey.patch_all()

import gevent

from chatcompat.sessions import SQLiteStore

store = SQLiteStore(sys.argv[1])
store.ping()
ticks = []


def ticker():
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        ticks.append(time.monotonic())
        gevent.sleep(0.005)


def writer(n):
    message = {"role": "user", "content": str(n)}
    store.append_turn("k", "main", [message], sticky=True, ttl_seconds=60)


print("ready", flush=True)
greenlets = [gevent.spawn(ticker)] + [gevent.spawn(writer, n) for n in range(20)]
gevent.joinall(greenlets, raise_error=True)
gaps = [b - a for a, b in zip(ticks, ticks[1:])]
print(json.dumps({"max_gap": max(gaps), "turns": store.get_session("k").turns}))
"""


@pytest.mark.live
def test_gevent_worker_keeps_running_while_the_database_is_busy(db_path: pathlib.Path) -> None:
    """20 greenlets wait for another process's write lock: the others must keep running."""
    pytest.importorskip("gevent")
    with SQLiteStore(str(db_path)) as store:
        store.ping()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-c", GEVENT_WORKER, str(db_path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as worker:
        try:
            with write_lock_held(db_path, 10):
                assert worker.stdout is not None
                assert worker.stdout.readline() == "ready\n"
                time.sleep(0.4)  # the writers retry meanwhile
            out, _ = worker.communicate(timeout=60)
        finally:
            worker.kill()
    assert worker.returncode == 0
    result = json.loads(out)
    assert result["turns"] == 20
    assert result["max_gap"] < 0.15  # a 20 ms SQLite busy timeout freezes it ~0.4 s
