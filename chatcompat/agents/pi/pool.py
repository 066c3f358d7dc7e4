"""The warm pi processes of one agent in one worker.

Processes start on demand (never in gunicorn's master: the first run in a worker
starts the first one) up to ``size``; a run takes one for itself and gives it back
when pi is idle again. A run that finds every process busy waits for one, up to a
bound, then gets :class:`~chatcompat.agents.base.AgentUnavailable` (503).

A process that died, or that the run could not bring back to idle, leaves the pool
and is killed; when it had served runs, a replacement starts in the background so
the next run finds a warm one (a process that never served is replaced on demand,
so a configuration that makes pi die at once costs a start per request, not a loop).
:meth:`ProcessPool.close` stops them all: end of input first, then SIGKILL.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import typing as t

from ..base import AgentError
from ..base import AgentUnavailable
from ..base import Cancellation
from .process import PiProcess

log = logging.getLogger(__name__)

WAIT_SLICE_SECONDS = 0.25  # how often a waiting run checks that its client is still there
STOP_GRACE_SECONDS = 2.0

Factory = t.Callable[[t.Callable[[PiProcess], None]], PiProcess]


class ProcessPool:
    """Up to ``size`` pi processes, each serving one run at a time.

    :param factory: builds an unstarted process (with its private directory) that
        calls the given callback once it has exited.
    :param label: names the agent in messages.
    """

    def __init__(self, factory: Factory, size: int, start_timeout: float, label: str) -> None:
        self._factory = factory
        self._size = size
        self._start_timeout = start_timeout
        self._label = label
        self._cond = threading.Condition()
        self._idle: list[PiProcess] = []  # the last one back is the next one out
        self._members: set[PiProcess] = set()  # starting, idle or running
        self._closed = False

    def acquire(self, wait: float, cancel: Cancellation) -> PiProcess | None:
        """A ready process for one run, started here if the pool has room.

        :param wait: how long to wait when all processes are busy.
        :return: None when ``cancel`` was set while waiting.
        :raise AgentUnavailable: every process stayed busy for ``wait`` seconds.
        :raise AgentError: a new process did not start, or the agent is closing.
        """
        give_up = time.monotonic() + wait
        with self._cond:
            while True:
                if self._closed:
                    raise AgentError(f"The agent {self._label!r} is shutting down.")
                if cancel.is_set:
                    self._cond.notify()  # pass a wake-up on to a run whose client is there
                    return None
                while self._idle:
                    process = self._idle.pop()
                    if process.alive:
                        process.runs += 1
                        return process
                    # Died idle just now (its exit callback no longer finds it idle).
                    self._members.discard(process)
                    _remove_home(process)
                if len(self._members) < self._size:
                    process = self._factory(self._on_exit)
                    self._members.add(process)
                    break
                remaining = give_up - time.monotonic()
                if remaining <= 0:
                    raise AgentUnavailable(
                        f"All {self._size} pi process(es) of agent {self._label!r} are busy"
                        f" (waited {wait:g} s for one); retry later, or raise its poolSize."
                    )
                self._cond.wait(min(remaining, WAIT_SLICE_SECONDS))
        self._start(process)
        process.runs += 1
        return process

    def release(self, process: PiProcess, healthy: bool) -> None:
        """Give a process back after its run; an unhealthy one is killed (and replaced)."""
        with self._cond:
            keep = healthy and process.alive and not self._closed and process in self._members
            if keep:
                self._idle.append(process)
            else:
                self._members.discard(process)
            replace = not keep and not self._closed and process.runs > 0
            self._cond.notify()
        if keep:
            return
        log.warning(
            "pi %d of agent %s leaves the pool (%s)%s",
            process.pid,
            self._label,
            process.exit_text() if not process.alive else "not idle after its run: killed",
            _stderr_note(process),
        )
        process.kill()
        _remove_home(process)
        if replace:
            self._replace()

    def close(self) -> None:
        """Stop every process: end of input, a short grace, then SIGKILL; reaped."""
        with self._cond:
            self._closed = True
            members, self._members = list(self._members), set()
            self._idle.clear()
            self._cond.notify_all()
        for process in members:
            process.close_stdin()
        give_up = time.monotonic() + STOP_GRACE_SECONDS
        for process in members:
            if not process.wait_exit(give_up - time.monotonic()):
                process.kill()
            _remove_home(process)

    def stats(self) -> dict[str, t.Any]:
        """Pids of the pool's processes: all of them, and the idle ones."""
        with self._cond:
            return {
                "pids": sorted(p.pid for p in self._members if p.pid),
                "idle": [p.pid for p in self._idle],
            }

    # -- internals ---------------------------------------------------------------------

    def _start(self, process: PiProcess) -> None:
        try:
            process.start(self._start_timeout)
        except BaseException:
            with self._cond:
                self._members.discard(process)
                self._cond.notify()
            _remove_home(process)
            raise
        with self._cond:
            closed = self._closed
        if closed:  # close() ran while it started, before it had a pid to stop
            process.kill()
            _remove_home(process)
            raise AgentError(f"The agent {self._label!r} is shutting down.")
        log.info(
            "pi %d of agent %s ready in %.2f s", process.pid, self._label, process.ready_seconds
        )

    def _on_exit(self, process: PiProcess) -> None:
        """The reader saw a process end; one that was idle leaves the pool here."""
        with self._cond:
            was_idle = process in self._idle
            if was_idle:
                self._idle.remove(process)
                self._members.discard(process)
            replace = was_idle and not self._closed and process.runs > 0
            self._cond.notify()
        if was_idle:
            log.warning(
                "idle pi %d of agent %s exited (%s)%s",
                process.pid,
                self._label,
                process.exit_text(),
                _stderr_note(process),
            )
            _remove_home(process)
            if replace:
                self._replace()

    def _replace(self) -> None:
        threading.Thread(target=self._warm_one, name="pi-replace", daemon=True).start()

    def _warm_one(self) -> None:
        with self._cond:
            if self._closed or len(self._members) >= self._size:
                return
            process = self._factory(self._on_exit)
            self._members.add(process)
        try:
            self._start(process)
        except AgentError as exc:
            log.warning("replacing a pi process of agent %s failed: %s", self._label, exc)
            return
        with self._cond:
            kept = process in self._members  # not when close() ran meanwhile
            if kept:
                self._idle.append(process)
                self._cond.notify()
        if not kept:
            process.kill()
            _remove_home(process)


def _stderr_note(process: PiProcess) -> str:
    tail = process.stderr_tail()
    return f"; its stderr ends with:\n{tail}" if tail else ""


def _remove_home(process: PiProcess) -> None:
    shutil.rmtree(process.home, ignore_errors=True)
