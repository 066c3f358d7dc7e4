"""One structured log line (and the metrics) per request, written when it ends.

For a stream, "ends" means the last byte was sent or the client went away, so the
line carries the real duration, time to first byte, tokens and outcome.
:func:`init_app` starts a :class:`RequestRecord` for each request (the view fills it
in through :func:`current`) and has it written when the response is closed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import typing as t
import uuid

from flask import g
from flask import request

from . import metrics
from . import redaction

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Response

    from .agents.base import Usage

log = logging.getLogger("chatcompat.request")

# A client's X-Request-Id is kept when it is this tame; otherwise the gateway makes one.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def init_app(app: Flask) -> None:
    """Give every request of ``app`` a :class:`RequestRecord`, its ``x-request-id``
    and ``x-openclaw-session-key`` response headers, and its log line when it ends.

    :param app: the app; its other ``after_request`` hooks see the headers set here.
    """
    app.before_request(_start_record)
    app.after_request(_finish_record)


def current() -> RequestRecord:
    """The record of the request being handled (:func:`init_app` started it)."""
    record: RequestRecord = g.record
    return record


def _start_record() -> None:
    sent = request.headers.get("x-request-id", "")
    request_id = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
    g.record = RequestRecord(request_id, request.method, request.path)
    g.record.route = request.url_rule.rule if request.url_rule else "unmatched"


def _finish_record(response: Response) -> Response:
    record = g.get("record")
    if record is None:  # the request failed before before_request ran
        record = RequestRecord(uuid.uuid4().hex, request.method, request.path)
        record.route = "unmatched"
    response.headers["x-request-id"] = record.request_id
    if record.session_key is not None:
        response.headers["x-openclaw-session-key"] = record.session_key
    for name, value in record.headers.items():  # a key's x-ratelimit-*, errors included
        response.headers[name] = value
    record.status = response.status_code
    response.call_on_close(record.emit)
    return response


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, then the fields of a
    dict message (request records) or ``message`` (everything else)."""

    converter = time.gmtime  # type: ignore[assignment]  # the "Z" in ts

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
        self.endpoint: str | None = None
        self.outcome = "ok"
        self.usage: Usage | None = None
        #: The id of the credential (principal) that sent it, once authenticated.
        self.key_id: str | None = None
        #: Headers every response to the request carries (a key's x-ratelimit-*).
        self.headers: dict[str, str] = {}
        self._first_byte: float | None = None
        self._emitted = False

    def routed(
        self, agent: str, session_key: str, stream: bool, endpoint: str = "chat.completions"
    ) -> None:
        """The request was routed: to ``agent``, on ``session_key``, as a stream or not,
        from ``endpoint`` (``chat.completions`` or ``responses``)."""
        self.endpoint = endpoint
        self.agent = agent
        self.session_key = session_key
        self.stream = stream

    def replayed(self, session_key: str) -> None:
        """The reply is a stored one (Idempotency-Key) from the session ``session_key``."""
        self.session_key = session_key
        self.outcome = "replayed"

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
        if self.key_id is not None:
            line["key"] = self.key_id
            metrics.child(metrics.KEY_REQUESTS, self.key_id, str(status)).inc()
        if self.agent is not None:
            first = self._first_byte if self._first_byte is not None else now
            line["agent"] = self.agent
            line["endpoint"] = self.endpoint
            line["stream"] = self.stream
            line["outcome"] = self.outcome if status < 400 else f"error:{status}"
            line["ttfb_ms"] = round((first - self.started) * 1000, 2)
            if self.session_key is not None:
                line["session"] = session_hash(self.session_key)
            if self.usage is not None:
                line["prompt_tokens"] = self.usage.prompt_tokens
                line["completion_tokens"] = self.usage.completion_tokens
            metrics.child(metrics.FIRST_BYTE_SECONDS, self.endpoint).observe(first - self.started)
            metrics.child(metrics.RUNS, self.agent, self.endpoint, line["outcome"]).inc()
            if self.usage is not None:
                metrics.child(metrics.TOKENS, self.agent, "prompt").inc(self.usage.prompt_tokens)
                metrics.child(metrics.TOKENS, self.agent, "completion").inc(
                    self.usage.completion_tokens
                )
                if self.key_id is not None:
                    metrics.child(metrics.KEY_TOKENS, self.key_id, "prompt").inc(
                        self.usage.prompt_tokens
                    )
                    completion = self.usage.completion_tokens
                    metrics.child(metrics.KEY_TOKENS, self.key_id, "completion").inc(completion)
        metrics.child(metrics.REQUESTS, self.route, str(status)).inc()
        metrics.child(metrics.REQUEST_SECONDS, self.route).observe(duration)
        log.info(line)
