"""Group commit: the turn writes that are ready together share one SQLite transaction.

A commit is most of a stateless turn's store cost: writing its pages to the WAL,
and every ~100th commit (SQLite's automatic checkpoint) copying 1,000 pages into the
file, which blocks the whole gevent worker for ~10 ms. Under load, several greenlets
of a worker finish their runs in the same turn of the event loop; the first one to
write waits for that turn to end (one cooperative yield), then runs everyone's write
in one ``BEGIN IMMEDIATE`` … ``COMMIT``. Nothing is acknowledged early: each write
returns only once the transaction holding it is committed, so a reply still means
its turn is stored (SPEC 8), exactly as with one transaction per turn.

When a group's transaction fails, its writes are committed again one by one, each in
its own transaction as without grouping, so a write that cannot be stored (a taken
response id) fails alone and the others land. A database that stays locked or cannot
be used fails the whole group (nothing of it is stored), as it would each write.

Under gthread workers (real threads), writes that arrive while a group commits form
the next group; no yield is needed.
"""

from __future__ import annotations

import copy
import functools
import sqlite3
import threading
import typing as t

from ..background import let_others_run
from .base import StoreUnreachable
from .sqlite_db import Database

_T = t.TypeVar("_T")


class _Write:
    __slots__ = ("op", "wake", "leads", "finished", "result", "error")

    def __init__(self, op: t.Callable[[sqlite3.Connection], t.Any]) -> None:
        self.op = op
        self.wake = threading.Event()  # set when finished, or when it is to lead
        self.leads = False  # it was handed the lead, not an outcome
        self.finished = False
        self.result: t.Any = None
        self.error: BaseException | None = None

    def finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self.finished = True
        self.wake.set()


class GroupCommit:
    """Writes to ``database`` that share transactions with the writes ready with them."""

    def __init__(self, database: Database) -> None:
        self._db = database
        # Guards _pending and _leading only; never held across a switch or a query.
        self._lock = threading.Lock()
        self._pending: list[_Write] = []
        self._leading = False

    def write(self, op: t.Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``op(conn)`` in a write transaction, possibly shared with other writes;
        return its result once that transaction is committed.

        ``op`` must not begin or end a transaction itself, and may run more than once
        (a locked database retries the whole group, a failed group each write alone):
        it reads what it needs inside.

        :raises StoreUnreachable: the database cannot be used or stayed locked.
        :raises StoreError: ``op`` failed (nothing of it is stored).
        """
        entry = _Write(op)
        with self._lock:
            self._pending.append(entry)
            lead = not self._leading
            self._leading = True
        while not lead:
            try:
                entry.wake.wait()
            except BaseException:  # killed while waiting (the worker stops)
                self._abandon(entry)
                raise
            if entry.finished:
                break
            entry.wake.clear()
            lead, entry.leads = entry.leads, False
        if lead:
            self._lead(entry)
        if entry.error is not None:
            raise entry.error
        return t.cast(_T, entry.result)

    def _lead(self, own: _Write) -> None:
        """Commit one group (``own`` write is in it), then hand the lead on to the first
        writer still waiting: nobody's reply waits for more than its own group and
        the one before."""
        group: list[_Write] = []
        try:
            let_others_run()  # the writers that are ready now join this group
            with self._lock:
                group, self._pending = self._pending, []
            self._commit_group(group)
        except BaseException:
            # This greenlet is being killed (the worker stops): its own write, and
            # those of its group not yet committed, are not stored; their writers hear
            # so. The writers still waiting get a new leader.
            with self._lock:
                if own in self._pending:
                    self._pending.remove(own)
                    group.append(own)
            for entry in group:
                if not entry.finished:
                    entry.finish(StoreUnreachable("the write was interrupted"))
            raise
        finally:
            with self._lock:
                self._hand_on()

    def _hand_on(self) -> None:
        """The lead goes to the first writer waiting, or nobody leads (under _lock)."""
        if self._pending:
            successor = self._pending[0]
            successor.leads = True
            successor.wake.set()
        else:
            self._leading = False

    def _abandon(self, entry: _Write) -> None:
        """A writer killed while it waited: its write leaves the queue (one already in a
        group being committed is stored all the same), and a lead handed to it goes on."""
        with self._lock:
            if entry in self._pending:
                self._pending.remove(entry)
            if entry.leads:
                entry.leads = False
                self._hand_on()

    def _commit_group(self, group: list[_Write]) -> None:
        try:
            self._db.with_retries(functools.partial(self._commit, group=group))
        except StoreUnreachable as exc:  # locked or unusable: it would fail each alone
            for entry in group:
                entry.finish(_own(exc))
            return
        except Exception as exc:
            if len(group) == 1:
                group[0].finish(exc)
                return
            # Most likely one write's own error: each alone, as without grouping.
            self._commit_apart(group)
            return
        for entry in group:
            entry.finish()

    def _commit_apart(self, group: list[_Write]) -> None:
        for position, entry in enumerate(group):
            try:
                self._db.with_retries(functools.partial(self._commit, group=[entry]))
            except StoreUnreachable as exc:  # the others would wait as long, in vain
                for rest in group[position:]:
                    rest.finish(_own(exc))
                return
            except Exception as own:
                entry.finish(own)
            else:
                entry.finish()

    def _commit(self, conn: sqlite3.Connection, group: list[_Write]) -> None:
        for entry in group:  # a retried transaction starts clean
            entry.result = None
        with self._db.transaction(conn):
            for entry in group:
                entry.result = entry.op(conn)


def _own(exc: BaseException) -> BaseException:
    """A copy of ``exc`` for one writer: each raises its own, so tracebacks raised in
    other greenlets or threads do not pile up on one object."""
    copied = copy.copy(exc)
    copied.__cause__ = exc.__cause__
    return copied
