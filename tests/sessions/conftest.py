"""Fixtures of the session store tests.

``make_store`` is parametrized over the backends; a Redis backend joins ``BACKENDS``
when it exists, and the contract suite in ``test_store.py`` then runs against it too.
"""

from __future__ import annotations

import typing as t

import pytest

from chatcompat.sessions import SessionStore
from chatcompat.sessions import SQLiteStore

BACKENDS = ["sqlite"]


@pytest.fixture(params=BACKENDS)
def make_store(
    request: pytest.FixtureRequest, tmp_path: t.Any
) -> t.Iterator[t.Callable[[], SessionStore]]:
    """A factory of stores sharing one backend, like the workers of one gateway."""
    stores: list[SessionStore] = []

    def make() -> SessionStore:
        if request.param == "sqlite":
            store: SessionStore = SQLiteStore(str(tmp_path / "state" / "sessions.db"))
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
