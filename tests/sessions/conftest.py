"""Fixtures of the session store tests.

``make_store`` is parametrized over the backends, so the contract suite in
``test_store.py`` runs against SQLite and against a real ``redis-server`` (started on
a free loopback port by ``redis_server``; under CI a missing binary fails the run).
"""

from __future__ import annotations

import typing as t

import pytest

from chatcompat.sessions import SessionStore
from chatcompat.sessions import SQLiteStore
from chatcompat.sessions.redis_store import RedisStore
from tests.redis_server import RedisServer

BACKENDS = ["sqlite", "redis"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[RedisServer]:
    """One real redis-server for the store tests (flushed by ``make_store``)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def make_store(
    request: pytest.FixtureRequest, tmp_path: t.Any
) -> t.Iterator[t.Callable[[], SessionStore]]:
    """A factory of stores sharing one backend, like the workers of one gateway."""
    stores: list[SessionStore] = []
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        if server.proc is None or server.proc.poll() is not None:
            server.start()  # a test stopped it
        server.resume()
        server.flush()

    def make() -> SessionStore:
        if request.param == "sqlite":
            store: SessionStore = SQLiteStore(str(tmp_path / "state" / "sessions.db"))
        elif request.param == "redis":
            store = RedisStore(server.url)
        else:  # pragma: no cover - a new backend must be wired here
            raise AssertionError(f"unknown backend {request.param}")
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store: t.Callable[[], SessionStore]) -> SessionStore:
    return make_store()


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
