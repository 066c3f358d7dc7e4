"""Calls run later from one scheduler thread per process (gthread workers, tests)."""

from __future__ import annotations

import threading

from chatcompat.background import call_later


def test_calls_run_in_the_order_they_are_due_and_cancelled_ones_never():
    ran: list[str] = []
    done = threading.Event()
    call_later(0.05, lambda: ran.append("second"))
    cancel = call_later(0.01, lambda: ran.append("cancelled"))
    call_later(0.0, lambda: ran.append("first"))
    call_later(0.1, done.set)
    cancel()
    assert done.wait(5)
    assert ran == ["first", "second"]


def test_one_thread_serves_every_call():
    before = threading.active_count()
    events = [threading.Event() for _ in range(20)]
    for event in events:
        call_later(0.01, event.set)
    assert all(event.wait(5) for event in events)
    assert threading.active_count() <= before + 1


def test_a_failing_call_does_not_stop_the_others(caplog):
    done = threading.Event()

    def fails() -> None:
        raise RuntimeError("boom")

    call_later(0.0, fails)
    call_later(0.01, done.set)
    assert done.wait(5)
