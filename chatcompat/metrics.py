"""Prometheus metrics, correct across gunicorn workers.

Under gunicorn, ``gunicorn.conf.py`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory before the workers start: each worker then writes its samples to its own
memory-mapped files and ``/metrics`` (served by any worker) sums them all. Without
that variable (tests, a single process) the default registry is used.
"""

from __future__ import annotations

import os
import typing as t

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import REGISTRY
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram
from prometheus_client import generate_latest
from prometheus_client import multiprocess

CONTENT_TYPE = CONTENT_TYPE_LATEST

REQUESTS = Counter(
    "chatcompat_requests",
    "HTTP requests served, by route and status.",
    ["route", "status"],
)
REQUEST_SECONDS = Histogram(
    "chatcompat_request_duration_seconds",
    "Time from request start to the last byte of the response.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
FIRST_BYTE_SECONDS = Histogram(
    "chatcompat_time_to_first_byte_seconds",
    "Time from request start to the first byte of a reply, by endpoint.",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RUNS = Counter(
    "chatcompat_agent_runs",
    "Agent runs, by agent, endpoint (chat.completions, responses) and outcome (ok, "
    "client_gone, error:<code>).",
    ["agent", "endpoint", "outcome"],
)
TOKENS = Counter(
    "chatcompat_tokens",
    "Tokens reported by agents, by agent and kind (prompt, completion).",
    ["agent", "kind"],
)
AUTH_FAILURES = Counter(
    "chatcompat_auth_failures",
    "Requests refused by authentication, by reason (missing, invalid, locked_out).",
    ["reason"],
)
KEY_REQUESTS = Counter(
    "chatcompat_key_requests",
    "Authenticated requests, by API key id (operator, anonymous or a named key) and status.",
    ["key", "status"],
)
KEY_TOKENS = Counter(
    "chatcompat_key_tokens",
    "Tokens reported by agents, by API key id and kind (prompt, completion).",
    ["key", "kind"],
)
KEY_RATE_LIMITED = Counter(
    "chatcompat_key_rate_limited",
    "Requests refused by a named key's limits, by key id and limit (requests, tokens, runs).",
    ["key", "limit"],
)
ACTIVE_STREAMS = Gauge(
    "chatcompat_active_streams",
    "SSE responses currently open.",
    multiprocess_mode="livesum",
)


# A metric's children by label values: .labels() takes a lock and builds a key each
# time; the set of values is small (routes, statuses, agents, outcomes, key ids).
_children: dict[tuple[t.Any, tuple[object, ...]], t.Any] = {}


def child(metric: t.Any, *values: object) -> t.Any:
    """``metric.labels(*values)``, looked up once per set of values (children are
    never removed, so the cached one is the metric's own)."""
    key = (metric, values)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*values)
    return found


def render() -> bytes:
    """The exposition text of every worker's metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (gunicorn's ``child_exit`` hook)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
