"""What a run holds in the session store while it lives: the session's lock, its
request's ``Idempotency-Key`` claim and, for a named key with ``concurrentRuns``, one
of the key's run slots.

Both are short-lived and renewed while the run is alive, so those of a worker that
died (SIGKILL, host lost) free themselves within :data:`LOCK_TTL_SECONDS`.
"""

from __future__ import annotations

import logging
import math
import time
import typing as t
import uuid

from . import errors
from . import metrics
from .sessions.base import StoreError

if t.TYPE_CHECKING:
    from .idempotency import Idempotency
    from .sessions.base import IdempotencyRecord
    from .sessions.base import SessionStore

log = logging.getLogger(__name__)

LOCK_POLL_SECONDS = (0.01, 0.25)  # first and longest pause between lock attempts
LOCK_TTL_SECONDS = 30.0
LOCK_RENEW_SECONDS = 10.0


class Lease:
    """The lock of ``session_key`` and the claim of ``idempotency`` (None: no key) for
    one run; :meth:`renew` them when :attr:`renew_at` has come, :meth:`release` at the
    end."""

    def __init__(
        self,
        store: SessionStore,
        session_key: str,
        idempotency: Idempotency | None,
        slot: tuple[str, int] | None = None,
    ) -> None:
        self.store = store
        self.session_key = session_key
        self.idempotency = idempotency
        #: (key id, concurrentRuns) of a named key with a run limit, else None.
        self.slot = slot
        self.owner = uuid.uuid4().hex
        self.locked = False
        self.claimed = False
        self.slotted = False
        #: When :meth:`renew` is due (monotonic seconds); never while nothing is held.
        self.renew_at = math.inf

    def claim(self) -> IdempotencyRecord | None:
        """Claim the request's Idempotency-Key (no key: no-op).

        :return: the finished record of an earlier request with the key, whose reply
            the caller sends instead of running; None when this run goes ahead.
        :raise errors.IdempotencyKeyReused: the key belongs to a different request.
        :raise errors.IdempotencyKeyInUse: the request with the key is still running.
        :raise errors.StoreUnavailable: the store cannot say.
        """
        if self.idempotency is None:
            return None
        scope, fingerprint = self.idempotency.scope, self.idempotency.fingerprint
        with errors.map_store_errors():
            held = self.store.claim_idempotency(scope, self.owner, fingerprint, LOCK_TTL_SECONDS)
        if held is None:
            self.claimed = True
            self.renew_at = time.monotonic() + LOCK_RENEW_SECONDS
            return None
        if held.fingerprint != fingerprint:
            raise errors.IdempotencyKeyReused(param="Idempotency-Key")
        if held.running:
            raise errors.IdempotencyKeyInUse(param="Idempotency-Key")
        return held

    def take_slot(self) -> None:
        """Take one of the key's run slots (no run limit: no-op), without waiting.

        :raise errors.RateLimitExceeded: all of them are taken (429, retry in 1 s).
        :raise errors.StoreUnavailable: the store cannot say.
        """
        if self.slot is None:
            return
        key_id, limit = self.slot
        with errors.map_store_errors():
            if not self.store.acquire_slot(key_id, self.owner, limit, LOCK_TTL_SECONDS):
                metrics.KEY_RATE_LIMITED.labels(key_id, "runs").inc()
                raise errors.RateLimitExceeded(
                    f"Rate limit reached for API key {key_id!r}: {limit} concurrent runs.", 1.0
                )
        self.slotted = True
        self.renew_at = min(self.renew_at, time.monotonic() + LOCK_RENEW_SECONDS)

    def lock(self, wait_seconds: float, waiting: t.Callable[[float], None]) -> None:
        """Take the session's lock, polling for up to ``wait_seconds``.

        :param waiting: called with the monotonic time between attempts (it may raise
            to give up, e.g. when the client is gone).
        :raise errors.SessionBusy: another run held it all that time.
        :raise errors.StoreUnavailable: the store cannot be reached.
        """
        give_up = time.monotonic() + wait_seconds
        pause, longest = LOCK_POLL_SECONDS
        while True:
            with errors.map_store_errors():
                if self.store.acquire_lock(self.session_key, self.owner, LOCK_TTL_SECONDS):
                    break
            now = time.monotonic()
            if now >= give_up:
                raise errors.SessionBusy()
            waiting(now)
            if now >= self.renew_at:
                self.renew()
            # time.sleep is cooperative under gevent: the worker keeps serving.
            time.sleep(min(pause, max(0.0, give_up - time.monotonic())))
            pause = min(pause * 2, longest)
        self.locked = True
        self.renew_at = time.monotonic() + LOCK_RENEW_SECONDS

    def renew(self) -> None:
        """Keep the lock and the claim while the run is alive (taking them again
        refreshes our own)."""
        self.renew_at = time.monotonic() + LOCK_RENEW_SECONDS
        try:
            if self.locked and not self.store.acquire_lock(
                self.session_key, self.owner, LOCK_TTL_SECONDS
            ):
                log.warning("the lock of a running session expired and was taken by another run")
            if self.claimed and self.idempotency is not None:
                scope, fingerprint = self.idempotency.scope, self.idempotency.fingerprint
                if self.store.claim_idempotency(scope, self.owner, fingerprint, LOCK_TTL_SECONDS):
                    log.warning("the claim of a running request expired and was taken")
            if self.slotted and self.slot is not None:
                key_id, limit = self.slot
                if not self.store.acquire_slot(key_id, self.owner, limit, LOCK_TTL_SECONDS):
                    log.warning("the run slot of key %s expired and was taken", key_id)
        except StoreError:  # StoreUnreachable included
            return  # the turn cannot be stored either; the end of the run will say so

    def release(self, *, keep_claim: bool) -> None:
        """Give back the lock, and the claim unless ``keep_claim`` (a reply was stored
        under it, or may have been). Failures are logged: both expire by themselves."""
        self.renew_at = math.inf
        claimed, self.claimed = self.claimed, False
        if claimed and not keep_claim and self.idempotency is not None:
            try:
                self.store.release_idempotency(self.idempotency.scope, self.owner)
            except Exception:
                log.warning("could not release an idempotency key; its claim will expire")
        if self.locked:
            self.locked = False
            try:
                self.store.release_lock(self.session_key, self.owner)
            except Exception:
                # The lock expires by itself; a failed release must not hide the reply.
                log.warning("could not release the lock of a session; it will expire")
        if self.slotted and self.slot is not None:
            self.slotted = False
            try:
                self.store.release_slot(self.slot[0], self.owner)
            except Exception:
                log.warning("could not free a run slot of key %s; it will expire", self.slot[0])
