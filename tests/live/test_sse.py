"""SSE through real gunicorn: headers as sent, the chunked body decoded by hand, frames
checked line by line, each chunk against OpenAI's stream schema, and timing (frames
arrive while the agent is still working, keepalives while it is silent)."""

from __future__ import annotations

import collections
import json
import time

import pytest

from tests.live.conftest import KEEPALIVE_SECONDS
from tests.live.conftest import SCRIPTED as SCRIPTED_CLASS
from tests.live.conftest import chat
from tests.live.conftest import user
from tests.live.conftest import wait_until
from tests.wire import parse_sse
from tests.wire import sse_lines
from tests.wire import stream_text

pytestmark = pytest.mark.live

SCRIPTED = "openclaw/scripted"
HOP_BY_HOP = ("connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer")


def stream(port, text, model="openclaw", **extra):
    body = {"model": model, "stream": True, "messages": [user(text)], **extra}
    exchange = chat(port, body)
    assert exchange.status == 200
    return exchange


def check_lines(raw: bytes) -> list[str]:
    """Every line of the body: frames are one line each, each followed by a blank line."""
    text = raw.decode("utf-8")
    lines = text.split("\n")
    assert lines[-2:] == ["", ""], repr(text[-40:])  # the body ends with "\n\n"
    lines = lines[:-1]
    assert all(line == "" for line in lines[1::2]), "a frame is not followed by a blank line"
    frames = lines[0::2]
    for line in frames:
        assert "\r" not in line
        assert line.startswith("data: ") or line == ": keepalive", line
    assert frames == sse_lines(raw)
    return frames


def test_stream_headers_and_frames_line_by_line(live):
    exchange = stream(live.port, "one two three", model="OpenClaw")
    # Headers exactly as sent by gunicorn.
    assert exchange.header("Content-Type") == "text/event-stream; charset=utf-8"
    assert exchange.header("Cache-Control") == "no-cache"
    assert exchange.header("X-Accel-Buffering") == "no"
    assert exchange.header("x-openclaw-session-key").startswith("agent:main:openai:")
    assert exchange.header("x-request-id")
    assert exchange.header("X-Content-Type-Options") == "nosniff"
    assert exchange.header("Referrer-Policy") == "no-referrer"
    assert exchange.header("Content-Length") is None
    # gunicorn chunks the body itself; the app set no hop-by-hop header (one of each at
    # most, all from the server).
    assert exchange.all("Transfer-Encoding") == ["chunked"]
    names = [name.lower() for name, _ in exchange.headers]
    duplicated = [name for name, count in collections.Counter(names).items() if count > 1]
    assert not duplicated, exchange.headers
    assert {n for n in names if n in HOP_BY_HOP} <= {"connection", "transfer-encoding"}

    raw = exchange.body()
    frames = check_lines(raw)
    chunks, parsed_frames = parse_sse(raw)  # every chunk against OpenAI's schema
    assert parsed_frames == frames
    assert frames[-1] == "data: [DONE]"
    assert ": keepalive" not in frames  # the echo agent is never silent long enough

    assert chunks[0]["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    ]
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-1]]
    assert deltas == [{"content": "one"}, {"content": " two"}, {"content": " three"}]
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert [c["choices"][0]["finish_reason"] for c in chunks].count("stop") == 1
    assert not any("usage" in c and c["usage"] for c in chunks)
    assert len({(c["id"], c["created"], c["model"], c["object"]) for c in chunks}) == 1
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["model"] == "OpenClaw"  # echoed unchanged
    assert chunks[0]["object"] == "chat.completion.chunk"


@pytest.mark.parametrize(
    "options,expected",
    [({"include_usage": True}, True), ({"include_usage": False}, False), (None, False)],
)
def test_usage_chunk_only_when_include_usage_is_true(live, options, expected):
    extra = {} if options is None else {"stream_options": options}
    raw = stream(live.port, "alpha beta", **extra).body()
    check_lines(raw)
    chunks, _ = parse_sse(raw)
    usage_chunks = [c for c in chunks if c["choices"] == []]
    if not expected:
        assert usage_chunks == []
        return
    assert usage_chunks == [chunks[-1]]  # one, last, after the finish chunk
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}
    assert chunks[-1]["id"] == chunks[0]["id"]


def test_keepalive_comments_flow_while_the_agent_is_silent(live):
    exchange = stream(live.port, "[[silent:1.5]] finally here", model=SCRIPTED)
    arrivals = list(exchange.frames())
    frames = [frame for frame, _ in arrivals]
    assert frames[0].startswith("data: ")  # the role chunk comes at once
    first_content = next(i for i, f in enumerate(frames) if '"content":"finally"' in f)
    keepalives = [i for i, f in enumerate(frames) if f == ": keepalive"]
    assert keepalives and all(0 < i < first_content for i in keepalives), frames
    # One every sseKeepaliveSeconds (0.3) for 1.5 s of silence.
    assert 3 <= len(keepalives) <= 6, len(keepalives)
    times = [arrivals[i][1] for i in keepalives]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(KEEPALIVE_SECONDS / 2 <= gap <= KEEPALIVE_SECONDS * 3 for gap in gaps), gaps
    raw = "".join(f + "\n\n" for f in frames).encode()
    chunks, _ = parse_sse(raw)
    assert stream_text(chunks) == "finally here"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_error_after_the_stream_began_is_one_error_frame_then_done(live):
    raw = stream(live.port, "[[fail-after:2]] one two three four", model=SCRIPTED).body()
    frames = check_lines(raw)
    chunks, _ = parse_sse(raw)  # the error frame against OpenAI's error schema
    assert stream_text(chunks) == "one two"
    assert frames[-1] == "data: [DONE]"
    assert frames[-2].startswith('data: {"error":')
    error = chunks[-1]["error"]
    assert (error["type"], error["code"]) == ("api_error", "upstream_error")
    assert sum("error" in c for c in chunks) == 1
    assert not any(c.get("choices") and c["choices"][0]["finish_reason"] for c in chunks)


def test_frames_arrive_while_the_agent_is_still_working(live):
    # The slow echo agent waits 200 ms before each of its 5 words: about 1 s in all.
    exchange = stream(live.port, "w1 w2 w3 w4 w5", model="openclaw/slow")
    arrivals = [
        (json.loads(frame[len("data: ") :]), at)
        for frame, at in exchange.frames()
        if frame.startswith("data: {")
    ]
    content_times = [at for c, at in arrivals if c["choices"][0]["delta"].get("content")]
    finish_time = next(at for c, at in arrivals if c["choices"][0]["finish_reason"] == "stop")
    assert len(content_times) == 5
    assert content_times[0] - exchange.started < 0.8
    # The first word was on the wire long before the last one was produced: nothing
    # (gunicorn, the WSGI stack) buffers the stream.
    assert finish_time - content_times[0] >= 0.5
    assert content_times[-1] - content_times[0] >= 0.4


def test_tool_call_chunks_over_the_wire(live):
    raw = stream(live.port, "[[tools]]", model=SCRIPTED).body()
    check_lines(raw)
    chunks, _ = parse_sse(raw)
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert "".join(c["function"]["arguments"] for c in calls if c["index"] == 0) == (
        '{"city":"Paris"}'
    )
    assert {c["index"] for c in calls} == {0, 1}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


RUN_TIMEOUT = 1.5
# How long past timeoutSeconds the run may last, counted from the response head: the
# watchdog's grace (1 s) plus a loaded machine's scheduling. Without the watchdog the
# run never ends.
PAST_TIMEOUT_BOUND = 4.0


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_a_client_that_stops_reading_does_not_keep_the_run_past_its_timeout(
    make_server, worker_class
):
    server = make_server(
        worker_class=worker_class,
        workers=1,
        overrides={
            "agents": {
                "list": [{"id": "flood", "backend": SCRIPTED_CLASS, "timeoutSeconds": RUN_TIMEOUT}]
            },
            "sessions": {"lockTimeoutSeconds": 0.5},
        },
    )
    headers = {"x-openclaw-session-key": "stops-reading"}
    body = {"stream": True, "messages": [user("[[flood]]")]}
    exchange = chat(server.port, body, headers)  # the head is read, the body never
    assert exchange.status == 200
    started = time.time()  # the run started before its head was sent
    key = "agent:flood:stops-reading"
    ended = wait_until(
        lambda: [line for line in server.runs(key) if line["event"] == "end"],
        timeout=RUN_TIMEOUT + 15,
        what="the run of a client that stopped reading to end",
    )
    assert ended[0]["outcome"] in ("cancelled", "closed")  # stopped, not finished
    assert ended[0]["at"] - started <= RUN_TIMEOUT + PAST_TIMEOUT_BOUND
    # The session's lock went with the run: the next turn runs (a held lock is 409).
    second = chat(server.port, {"messages": [user("again")]}, headers)
    assert second.status == 200, second.body()
    assert second.json()["choices"][0]["message"]["content"] == "again"
    # And the stalled connection was cut: reading it to the end finishes.
    exchange.sock.settimeout(10)
    while exchange.sock.recv(1 << 20):
        pass
