"""Running a function on its own: a bare greenlet under gevent's monkey-patching
(gevent workers), else a daemon thread (gthread workers, tests)."""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import sys
import threading
import time
import typing as t

log = logging.getLogger(__name__)


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def spawn(target: t.Callable[..., None], *args: t.Any) -> None:
    """Run ``target(*args)`` on its own.

    A patched ``threading.Thread`` is a greenlet too, wrapped in a Thread object with
    its own Event, Condition and locks, and ``start()`` switches to it and back before
    returning: ``spawn_raw`` costs a fraction of that, in time and memory per stream.
    """
    if _gevent_patched():
        import gevent

        gevent.spawn_raw(target, *args)
        return
    threading.Thread(target=target, args=args, name="agent-run", daemon=True).start()


def let_others_run() -> None:
    """Under gevent, let the greenlets that are ready run before going on (one turn of
    the event loop); nothing under threads, which run anyway."""
    if _gevent_patched():
        import gevent

        gevent.sleep(0)


def call_later(seconds: float, target: t.Callable[[], None]) -> t.Callable[[], None]:
    """Run ``target()`` on its own after ``seconds``; return a function that calls it off.

    Under gevent a bare loop timer spawns a bare greenlet when it fires (``target`` may
    do I/O, which the hub itself must not). Else one scheduler thread per process runs
    every target in turn: a thread per call (``threading.Timer``) would cost a thread's
    start-up per stream under gthread workers.
    """
    if _gevent_patched():
        import gevent

        timer = gevent.get_hub().loop.timer(max(seconds, 0.0))
        timer.start(gevent.spawn_raw, target)
        return t.cast(t.Callable[[], None], timer.close)
    return _SCHEDULER.call_later(seconds, target)


class _Call:
    __slots__ = ("target", "cancelled")

    def __init__(self, target: t.Callable[[], None]) -> None:
        self.target = target
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Scheduler:
    """Calls due targets from one daemon thread, started on first use in each process
    (a thread does not survive a fork)."""

    def __init__(self) -> None:
        self._pid = 0
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Call]] = []
        self._order = itertools.count()

    def call_later(self, seconds: float, target: t.Callable[[], None]) -> t.Callable[[], None]:
        call = _Call(target)
        with self._cond:
            if self._pid != os.getpid():
                self._heap = []
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="chatcompat-timers", daemon=True).start()
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._order), call))
            self._cond.notify()
        return call.cancel

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][2].cancelled:
                    if self._heap:
                        heapq.heappop(self._heap)
                    else:
                        self._cond.wait()
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                call = heapq.heappop(self._heap)[2]
            if not call.cancelled:
                try:
                    call.target()
                except Exception:
                    log.exception("a scheduled call failed")


_SCHEDULER = _Scheduler()
