"""The limits of named keys in the SessionStore contract (SPEC 16.1): rolling request
and token windows, and concurrent-run slots, on every backend of ``make_store``.

SQLite goes by the fake clock; Redis by its own, so its windows are short and
``advance`` really waits.
"""

from __future__ import annotations

import threading
import typing as t
import uuid

import pytest

from chatcompat.sessions import SessionStore


@pytest.fixture
def window(backend: str) -> float:
    """The window length: a minute where the clock is fake, short where it is real."""
    return 60.0 if backend == "sqlite" else 0.6


def admit(
    store: SessionStore, window: float, rpm: int | None = None, tpm: int | None = None
) -> t.Any:
    return store.admit_request(
        "app1", uuid.uuid4().hex, requests_limit=rpm, tokens_limit=tpm, window_seconds=window
    )


def test_requests_are_admitted_up_to_the_limit_and_refusals_are_not_counted(
    store: SessionStore, window: float
) -> None:
    results = [admit(store, window, rpm=3) for _ in range(5)]
    assert [r.admitted for r in results] == [True, True, True, False, False]
    assert [r.requests.used for r in results] == [1, 2, 3, 3, 3]
    # Full: room comes back when the oldest leaves, within the window.
    assert 0 < results[-1].requests.reset_seconds <= window
    # Another key has its own window.
    other = store.admit_request(
        "app2", "x", requests_limit=3, tokens_limit=None, window_seconds=window
    )
    assert other.admitted and other.requests.used == 1


def test_the_window_rolls(store: SessionStore, store_clock: t.Any, window: float) -> None:
    assert admit(store, window, rpm=2).admitted
    store_clock.advance(window / 2)
    assert admit(store, window, rpm=2).admitted
    assert not admit(store, window, rpm=2).admitted
    store_clock.advance(window / 2 + 0.05)  # the first one has left, the second not
    again = admit(store, window, rpm=2)
    assert again.admitted and again.requests.used == 2
    assert not admit(store, window, rpm=2).admitted


def test_a_resent_admission_counts_once(store: SessionStore, window: float) -> None:
    for _ in range(2):
        result = store.admit_request(
            "app1", "same-id", requests_limit=5, tokens_limit=None, window_seconds=window
        )
        assert result.admitted and result.requests.used == 1


def test_tokens_of_finished_runs_close_the_window(store: SessionStore, window: float) -> None:
    assert admit(store, window, tpm=100).tokens.used == 0
    store.record_tokens("app1", 60, window_seconds=window)
    half = admit(store, window, tpm=100)
    assert half.admitted and half.tokens.used == 60
    store.record_tokens("app1", 50, window_seconds=window)
    full = admit(store, window, tpm=100)
    assert not full.admitted and full.tokens.used == 110
    assert 0 < full.tokens.reset_seconds <= window
    # Without a request limit the requests are still counted (for the headers).
    assert full.requests.used == 2


def test_run_slots_are_a_lease(store: SessionStore, store_clock: t.Any, backend: str) -> None:
    ttl = 60.0 if backend == "sqlite" else 0.5
    assert store.acquire_slot("app1", "a", 2, ttl)
    assert store.acquire_slot("app1", "b", 2, ttl)
    assert not store.acquire_slot("app1", "c", 2, ttl)
    assert store.acquire_slot("app1", "a", 2, ttl), "the owner's own slot is refreshed"
    assert store.acquire_slot("app2", "c", 2, ttl), "another key has its own slots"
    store.release_slot("app1", "b")
    store.release_slot("app1", "nobody")
    assert store.acquire_slot("app1", "c", 2, ttl)
    # A dead worker's slots free themselves when their lease expires.
    store_clock.advance(ttl + 0.1)
    assert store.acquire_slot("app1", "d", 2, ttl)
    assert store.acquire_slot("app1", "e", 2, ttl)


def test_admission_is_exact_across_stores_and_threads(
    make_store: t.Callable[[], SessionStore],
) -> None:
    """Two stores (two workers' connections), eight threads each, racing for 100."""
    stores = [make_store(), make_store()]
    admitted: list[bool] = []
    lock = threading.Lock()

    def client(store: SessionStore) -> None:
        for _ in range(20):
            result = store.admit_request(
                "app3", uuid.uuid4().hex, requests_limit=100, tokens_limit=None, window_seconds=60
            )
            with lock:
                admitted.append(result.admitted)

    threads = [threading.Thread(target=client, args=(s,)) for s in stores for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 320
    assert admitted.count(True) == 100


def test_tokens_leave_the_window_too(
    store: SessionStore, store_clock: t.Any, window: float
) -> None:
    store.record_tokens("app1", 70, window_seconds=window)
    store_clock.advance(window / 2)
    store.record_tokens("app1", 40, window_seconds=window)
    full = admit(store, window, tpm=100)
    assert not full.admitted and full.tokens.used == 110
    # Room comes back when the 70 leave (110 - 70 < 100): about half a window from now.
    assert 0 < full.tokens.reset_seconds <= window / 2 + 0.05
    store_clock.advance(window / 2 + 0.05)
    again = admit(store, window, tpm=100)
    assert again.admitted and again.tokens.used == 40
    store_clock.advance(window / 2 + 0.05)
    assert admit(store, window, tpm=100).tokens.used == 0
