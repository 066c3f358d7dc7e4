"""Several gunicorn workers behave as one gateway: the failed-auth lockout and /metrics
are shared by both workers (each connection is traced to the worker that accepted it,
through /proc); gthread workers serve JSON and streams too; SIGTERM lets a running
stream finish."""

from __future__ import annotations

import re
import signal
import time

import pytest

from tests.live.conftest import AUTH
from tests.live.conftest import CHAT
from tests.live.conftest import TOKEN
from tests.live.conftest import RawExchange
from tests.live.conftest import chat
from tests.live.conftest import connect
from tests.live.conftest import post_on
from tests.live.conftest import user
from tests.live.conftest import wait_until
from tests.wire import check_completion
from tests.wire import check_error
from tests.wire import parse_sse
from tests.wire import stream_text

pytestmark = pytest.mark.live


def test_lockout_is_shared_by_both_workers(live):
    # maxAttempts 2: one failure on each worker. Counted per worker, neither would lock
    # the client out; counted in the shared store, both workers answer 429 afterwards.
    source = "127.0.0.31"
    wrong = {"Authorization": f"Bearer {TOKEN}-wrong"}
    body = {"messages": [user("hi")]}
    sock, first = live.connection(source=source)
    response = post_on(sock, body, wrong)
    assert response.status == 401, response.body()
    sock, second = live.connection(lambda pid: pid != first, source)
    response = post_on(sock, body, wrong)
    assert response.status == 401, response.body()

    answered_by = []
    for _ in range(10):
        sock, worker = live.connection(source=source)
        locked = post_on(sock, body, AUTH)  # the right token
        assert locked.status == 429, locked.body()
        assert locked.header("Retry-After").isdigit()
        check_error(locked.json(), code="too_many_auth_failures")
        answered_by.append(worker)
    for worker in {first, second} - set(answered_by):  # both must have said 429
        sock, _ = live.connection(lambda pid, w=worker: pid == w, source)
        assert post_on(sock, body, AUTH).status == 429


def _requests_total(text: str, route: str, status: str) -> float:
    pattern = rf'^chatcompat_requests_total\{{(?=[^}}]*route="{re.escape(route)}")'
    pattern += rf'(?=[^}}]*status="{status}")[^}}]*\}} (\S+)$'
    values = [float(v) for v in re.findall(pattern, text, re.M)]
    assert len(values) <= 1, values
    return values[0] if values else 0.0


def test_metrics_sum_over_both_workers(make_server):
    server = make_server("metrics")
    count = 12
    served_by = []
    for index in range(count):
        sock, worker = server.connection()
        response = post_on(sock, {"messages": [user(f"m{index}")]}, AUTH)
        assert response.status == 200
        response.body()
        served_by.append(worker)
    while len(set(served_by)) < 2:  # make sure both workers have samples to add up
        assert len(served_by) < count + 20, "one worker served every request"
        sock, worker = server.connection(lambda pid: pid not in served_by)
        response = post_on(sock, {"messages": [user("extra")]}, AUTH)
        assert response.status == 200
        response.body()
        served_by.append(worker)

    for worker in server.worker_pids() * 2:  # each worker answers /metrics, twice
        text = _metrics_from(server, worker)
        assert _requests_total(text, CHAT, "200") == len(served_by), text
        assert TOKEN not in text

    # The open-streams gauge too: one stream open on one worker shows on both.
    assert all(_active_streams(_metrics_from(server, w)) == 0 for w in server.worker_pids())
    hang = {"model": "openclaw/scripted", "stream": True, "messages": [user("[[hang]]")]}
    stream = chat(server.port, hang)
    assert stream.status == 200
    for worker in server.worker_pids():
        assert _active_streams(_metrics_from(server, worker)) == 1
    stream.close()
    for worker in server.worker_pids():
        wait_until(
            lambda w=worker: _active_streams(_metrics_from(server, w)) == 0,
            3,
            "the closed stream to leave chatcompat_active_streams",
        )


def _metrics_from(server, worker: int) -> str:
    """/metrics as served by the worker ``worker``."""
    sock, _ = server.connection(lambda pid: pid == worker)
    metrics = RawExchange(server.port, "GET", "/metrics", sock=sock)
    assert metrics.status == 200
    assert metrics.header("Content-Type").startswith("text/plain")
    text = metrics.body().decode()
    metrics.close()
    return text


def _active_streams(text: str) -> float:
    values = re.findall(r"^chatcompat_active_streams(?:\{\})? (\S+)$", text, re.M)
    assert len(values) == 1, values
    return float(values[0])


def test_gthread_json_and_stream(gthread_live):
    body = chat(gthread_live.port, {"messages": [user("threads work too")]}).json()
    check_completion(body)
    assert body["choices"][0]["message"]["content"] == "threads work too"
    body = {"stream": True, "stream_options": {"include_usage": True}, "messages": [user("and so")]}
    exchange = chat(gthread_live.port, body)
    assert exchange.status == 200
    assert exchange.header("Content-Type") == "text/event-stream; charset=utf-8"
    assert exchange.header("Content-Length") is None
    chunks, frames = parse_sse(exchange.body())
    assert stream_text(chunks) == "and so"
    assert chunks[-1]["usage"]["completion_tokens"] == 2
    body = {"model": "openclaw/scripted", "stream": True, "messages": [user("[[silent:0.7]] late")]}
    keepalive = chat(gthread_live.port, body)
    chunks, frames = parse_sse(keepalive.body())
    assert frames.count(": keepalive") >= 2 and stream_text(chunks) == "late"


def test_sigterm_lets_a_running_stream_finish(make_server):
    server = make_server("graceful", workers=1)
    body = {"model": "openclaw/slow", "stream": True, "messages": [user("a b c d e f")]}
    exchange = chat(server.port, body)
    frames = exchange.frames()
    first, _ = next(frames)
    assert first.startswith("data: ")  # the stream is running
    server.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    rest = [frame for frame, _ in frames]
    assert time.monotonic() - sent >= 0.8  # five more words, 200 ms each, still came
    chunks, _ = parse_sse("".join(f + "\n\n" for f in [first, *rest]).encode())
    assert stream_text(chunks) == "a b c d e f"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    exchange.close()
    assert server.proc.wait(10) == 0
    started = time.monotonic()
    with pytest.raises(OSError):
        connect(server.port)
    assert time.monotonic() - started < 1
