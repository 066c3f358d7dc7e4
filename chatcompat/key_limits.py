"""The limits of a named key (SPEC 16.1): request and token windows, admitted before
the body is read, and OpenAI's ``x-ratelimit-*`` response headers.

The concurrent-run slot is held by the run (:class:`chatcompat.lease.Lease`); the
tokens of a finished run are counted by :meth:`chatcompat.run.Run.finish`. Every count
lives in the session store, so all workers and hosts share it.
"""

from __future__ import annotations

import math
import typing as t
import uuid

from . import errors
from . import metrics

if t.TYPE_CHECKING:
    from .principal import Principal
    from .sessions.base import Admission
    from .sessions.base import SessionStore
    from .settings import KeyLimits


def admit(principal: Principal, scope: str, store: SessionStore, headers: dict[str, str]) -> None:
    """Right after authentication: count the request, then check the route's scope,
    then refuse it if a window was full. So a request refused for its scope is
    counted too (it passed authentication), and one refused by a limit is not.

    :param scope: the route's scope.
    :param headers: the headers of the response, whatever it is: the
        ``x-ratelimit-*`` ones go there (none without request or token limits).
    :raise errors.PermissionDenied: the key lacks ``scope`` (403).
    :raise errors.RateLimitExceeded: a window is full (429, with the headers to send).
    :raise errors.StoreUnavailable: the store cannot count.
    """
    limits = principal.limits
    if limits.requests_per_minute is None and limits.tokens_per_minute is None:
        principal.require_scope(scope)
        return
    with errors.map_store_errors():
        admission = store.admit_request(
            principal.id,
            uuid.uuid4().hex,
            requests_limit=limits.requests_per_minute,
            tokens_limit=limits.tokens_per_minute,
        )
    headers.update(ratelimit_headers(limits, admission))
    principal.require_scope(scope)  # a missing scope is said before a full window
    if not admission.admitted:
        metrics.KEY_RATE_LIMITED.labels(principal.id, _which(limits, admission)).inc()
        message = _message(principal.id, limits, admission)
        raise errors.RateLimitExceeded(message, _retry_after(limits, admission))


def ratelimit_headers(limits: KeyLimits, admission: Admission) -> dict[str, str]:
    """OpenAI's headers for the windows the key has a limit on."""
    headers: dict[str, str] = {}
    windows = (
        ("requests", limits.requests_per_minute, admission.requests),
        ("tokens", limits.tokens_per_minute, admission.tokens),
    )
    for name, limit, window in windows:
        if limit is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, limit - window.used))
            headers[f"x-ratelimit-reset-{name}"] = duration(window.reset_seconds)
    return headers


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: ``20ms``, ``1s``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 1000) / 1000:g}s"
    whole = math.ceil(seconds)
    return f"{whole // 60}m{whole % 60}s"


def _full(limit: int | None, used: int) -> bool:
    return limit is not None and used >= limit


def _which(limits: KeyLimits, admission: Admission) -> str:
    return "requests" if _full(limits.requests_per_minute, admission.requests.used) else "tokens"


def _retry_after(limits: KeyLimits, admission: Admission) -> float:
    waits = [
        window.reset_seconds
        for limit, window in (
            (limits.requests_per_minute, admission.requests),
            (limits.tokens_per_minute, admission.tokens),
        )
        if _full(limit, window.used)
    ]
    return max(waits, default=1.0)


def _message(key_id: str, limits: KeyLimits, admission: Admission) -> str:
    if _which(limits, admission) == "requests":
        return (
            f"Rate limit reached for API key {key_id!r}: "
            f"{limits.requests_per_minute} requests per minute."
        )
    return (
        f"Rate limit reached for API key {key_id!r}: {limits.tokens_per_minute} tokens per minute."
    )
