"""Fixtures of the session store tests.

``make_store`` is parametrized over the backends, so the contract suite in
``test_store.py`` runs against SQLite and against a real ``redis-server`` (started on
a free loopback port by ``redis_server``; under CI a missing binary fails the run).
The Redis half is marked ``live``: ``pytest -m "not live"`` runs the SQLite half only.

Time in the contract suite goes through ``store_clock``: SQLite stores read a
:class:`FakeClock`, so expiry is tested to the exact boundary without waiting; Redis
expires keys on its own server clock, which no test can move, so there the clock is
the real one and ``advance`` really waits (that wait is the behaviour under test).

The SQLite-specific modules share ``db_path``, ``sqlite_store``, ``clocked`` and
:func:`raw_rows`.
"""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import time
import typing as t

import pytest

from chatcompat.sessions import SessionStore
from chatcompat.sessions import SQLiteStore
from chatcompat.sessions.redis_store import RedisStore
from tests.redis_server import RedisServer

BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.live)]


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ServerClock:
    """The real wall clock, for a store whose expiry runs on its server (Redis)."""

    def __call__(self) -> float:
        return time.time()

    def advance(self, seconds: float) -> None:
        time.sleep(seconds)  # Redis's own clock has to move: nothing else can move it


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[RedisServer]:
    """One real redis-server for the store tests (flushed by ``make_store``)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_clock(backend: str, clock: FakeClock) -> FakeClock | ServerClock:
    """The clock the stores of ``make_store`` go by (see the module docstring)."""
    return clock if backend == "sqlite" else ServerClock()


@pytest.fixture
def make_store(
    request: pytest.FixtureRequest,
    backend: str,
    tmp_path: t.Any,
    store_clock: FakeClock | ServerClock,
) -> t.Iterator[t.Callable[[], SessionStore]]:
    """A factory of stores sharing one backend, like the workers of one gateway."""
    stores: list[SessionStore] = []
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        if server.proc is None or server.proc.poll() is not None:
            server.start()  # a test stopped it
        server.resume()
        server.flush()

    def make() -> SessionStore:
        if backend == "sqlite":
            path = str(tmp_path / "state" / "sessions.db")
            store: SessionStore = SQLiteStore(path, clock=store_clock)
        elif backend == "redis":
            store = RedisStore(server.url)
        else:  # pragma: no cover - a new backend must be wired here
            raise AssertionError(f"unknown backend {backend}")
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store: t.Callable[[], SessionStore]) -> SessionStore:
    return make_store()


# -- the SQLite-specific modules ------------------------------------------------------


def raw_rows(path: pathlib.Path | str, sql: str) -> list[tuple[t.Any, ...]]:
    """Rows of ``sql`` read with a connection of its own, past the store."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def db_path(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "sessions.db"


@pytest.fixture
def sqlite_store(db_path: pathlib.Path) -> t.Iterator[SQLiteStore]:
    with SQLiteStore(str(db_path)) as store:
        yield store  # type: ignore[misc]


@pytest.fixture
def clocked(db_path: pathlib.Path, clock: FakeClock) -> t.Iterator[SQLiteStore]:
    """A SQLite store on ``db_path`` that goes by the fake ``clock``."""
    with SQLiteStore(str(db_path), clock=clock) as store:
        yield store  # type: ignore[misc]
