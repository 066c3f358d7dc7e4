"""One structured log line (and the metrics) per request, written when it ends.

For a stream, "ends" means the last byte was sent or the client went away, so the
line carries the real duration, time to first byte, tokens and outcome.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import typing as t

from . import metrics
from . import redaction

if t.TYPE_CHECKING:
    from .agents.base import Usage

log = logging.getLogger("chatcompat.request")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, then the fields of a
    dict message (request records) or ``message`` (everything else)."""

    converter = time.gmtime  # the "Z" in ts

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, t.Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if isinstance(record.msg, dict):
            line.update(record.msg)
        else:
            line["message"] = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # chatcompat.redaction puts the redacted traceback here
            line["exception"] = record.exc_text
        # The record was redacted when it was made (chatcompat.redaction); the line is
        # checked again in case a record came from elsewhere.
        return redaction.redact(json.dumps(line, separators=(",", ":"), default=str))


def session_hash(session_key: str) -> str:
    """A short digest: lets logs correlate a session without exposing its key."""
    return hashlib.sha256(session_key.encode("utf-8")).hexdigest()[:16]


class RequestRecord:
    """What is known about one request; :meth:`emit` writes it once."""

    def __init__(self, request_id: str, method: str, path: str) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        self.route = path
        self.started = time.perf_counter()
        self.status: int | None = None
        self.agent: str | None = None
        self.session_key: str | None = None
        self.stream = False
        self.outcome = "ok"
        self.usage: Usage | None = None
        self._first_byte: float | None = None
        self._emitted = False

    def first_byte(self) -> None:
        if self._first_byte is None:
            self._first_byte = time.perf_counter()

    def set_usage(self, usage: Usage | None) -> None:
        self.usage = usage

    def emit(self) -> None:
        if self._emitted:
            return
        self._emitted = True
        now = time.perf_counter()
        duration = now - self.started
        status = self.status or 500
        line: dict[str, t.Any] = {
            "event": "request",
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "status": status,
            "duration_ms": round(duration * 1000, 2),
        }
        if self.agent is not None:
            first = self._first_byte if self._first_byte is not None else now
            line["agent"] = self.agent
            line["stream"] = self.stream
            line["outcome"] = self.outcome if status < 400 else f"error:{status}"
            line["ttfb_ms"] = round((first - self.started) * 1000, 2)
            if self.session_key is not None:
                line["session"] = session_hash(self.session_key)
            if self.usage is not None:
                line["prompt_tokens"] = self.usage.prompt_tokens
                line["completion_tokens"] = self.usage.completion_tokens
            metrics.FIRST_BYTE_SECONDS.observe(first - self.started)
            metrics.RUNS.labels(self.agent, line["outcome"]).inc()
            if self.usage is not None:
                metrics.TOKENS.labels(self.agent, "prompt").inc(self.usage.prompt_tokens)
                metrics.TOKENS.labels(self.agent, "completion").inc(self.usage.completion_tokens)
        metrics.REQUESTS.labels(self.route, str(status)).inc()
        metrics.REQUEST_SECONDS.labels(self.route).observe(duration)
        log.info(line)
