"""Running a function on its own: a bare greenlet under gevent's monkey-patching
(gevent workers), else a daemon thread (gthread workers, tests)."""

from __future__ import annotations

import sys
import threading
import typing as t


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


def call_later(seconds: float, target: t.Callable[[], None]) -> t.Callable[[], None]:
    """Run ``target()`` on its own after ``seconds``; return a function that calls it off.

    Under gevent a bare loop timer spawns a bare greenlet when it fires (``target`` may
    do I/O, which the hub itself must not); else a daemon timer thread.
    """
    if _gevent_patched():
        import gevent

        timer = gevent.get_hub().loop.timer(max(seconds, 0.0))
        timer.start(gevent.spawn_raw, target)
        return t.cast(t.Callable[[], None], timer.close)
    thread = threading.Timer(max(seconds, 0.0), target)
    thread.daemon = True
    thread.start()
    return thread.cancel
