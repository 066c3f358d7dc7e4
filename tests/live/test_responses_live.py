"""``/v1/responses`` live on the wire, without an SDK in between: the exact SSE framing
and headers, keepalives, a client that leaves mid-stream (nothing stored, the upstream
closed), a failure after the first byte, the endpoint switch, and continuation by
``previous_response_id`` across two hosts sharing one Redis.

The server runs the ``openai`` backend in front of the fake upstream
(``tests/fake_upstream.py``), the ``echo`` backend and the scripted agent.
"""

from __future__ import annotations

import json
import typing as t
import uuid

import pytest

from chatcompat.history import message_text
from tests.fake_upstream import FakeUpstream
from tests.live.conftest import AUTH
from tests.live.conftest import SCRIPTED
from tests.live.conftest import LiveServer
from tests.live.conftest import RawExchange
from tests.live.conftest import merged
from tests.live.conftest import start_server
from tests.live.multihost import Nginx
from tests.live.multihost import host_overrides
from tests.redis_server import RedisServer
from tests.redis_server import require_binary
from tests.responses_wire import check_deleted
from tests.responses_wire import check_item_list
from tests.responses_wire import check_response
from tests.responses_wire import output_text
from tests.responses_wire import parse_stream
from tests.responses_wire import stream_text
from tests.wire import check_error
from tests.wire import check_response_event

pytestmark = pytest.mark.live

RESPONSES = "/v1/responses"
RESPONSES_ON = {"gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}}}
KEY_VARIABLE = "FAKE_UPSTREAM_API_KEY"
KEY = "sk-live-upstream-0123456789"


def marker() -> str:
    return uuid.uuid4().hex[:8]


def post(
    port: int, body: dict, headers: dict[str, str] | None = None, *, read: bool = True
) -> RawExchange:
    """POST /v1/responses on a fresh connection (headers read unless ``read`` is false)."""
    sent = {**AUTH, "Content-Type": "application/json", **(headers or {})}
    return RawExchange(port, "POST", RESPONSES, sent, json.dumps(body).encode(), read=read)


def get(port: int, path: str, method: str = "GET") -> RawExchange:
    return RawExchange(port, method, path, dict(AUTH))


@pytest.fixture(scope="module")
def fake(module_fake: FakeUpstream) -> FakeUpstream:
    return module_fake


@pytest.fixture(scope="module")
def server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[LiveServer]:
    agents = [
        {
            "id": "up",
            "default": True,
            "backend": "openai",
            "baseUrl": fake.base_url,
            "model": "fake-model",
            "apiKeyEnv": KEY_VARIABLE,
            "timeoutSeconds": 30,
        },
        {"id": "echo", "backend": "echo"},
        {"id": "scripted", "backend": SCRIPTED, "timeoutSeconds": 10},
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_VARIABLE, KEY)
        started = start_server(
            tmp_path_factory.mktemp("responses-live"),
            overrides={**RESPONSES_ON, "agents": {"list": agents}},
        )
    yield started
    started.stop()


# -- the wire ------------------------------------------------------------------------------------


def test_json_response_and_its_routes(server: LiveServer) -> None:
    exchange = post(server.port, {"model": "openclaw/echo", "input": "plain words"})
    assert exchange.status == 200
    assert exchange.header("Content-Type") == "application/json"
    assert exchange.header("x-openclaw-session-key").startswith("agent:echo:")
    response = exchange.json()
    check_response(response)
    assert output_text(response) == "plain words" and response["status"] == "completed"
    stored = get(server.port, f"{RESPONSES}/{response['id']}")
    assert stored.status == 200 and stored.json() == response
    items = get(server.port, f"{RESPONSES}/{response['id']}/input_items")
    assert items.status == 200
    listed = items.json()
    check_item_list(listed)
    assert [item["content"][0]["text"] for item in listed["data"]] == ["plain words"]
    assert listed["first_id"] == listed["last_id"] == listed["data"][0]["id"]
    deleted = get(server.port, f"{RESPONSES}/{response['id']}", "DELETE")
    assert deleted.status == 200
    check_deleted(deleted.json(), response["id"])
    gone = get(server.port, f"{RESPONSES}/{response['id']}")
    check_error(gone.json(), code="response_not_found")
    assert gone.status == 404


@pytest.mark.parametrize("model", ["openclaw/echo", "openclaw/up", "openclaw/scripted"])
def test_stream_framing_headers_and_events(server: LiveServer, model: str) -> None:
    mark = marker()
    session = f"wire-{mark}"
    body = {"model": model, "input": f"streamed words {mark}", "stream": True}
    exchange = post(server.port, body, {"x-openclaw-session-key": session})
    assert exchange.status == 200
    assert exchange.header("Content-Type").startswith("text/event-stream")
    assert exchange.header("Cache-Control") == "no-cache"
    assert exchange.header("X-Accel-Buffering") == "no"
    assert exchange.header("x-openclaw-session-key").endswith(f":{session}")
    events = parse_stream(exchange.body())
    completed = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert stream_text(events) == output_text(completed)
    assert output_text(completed).endswith(f"streamed words {mark}")
    assert completed["usage"]["output_tokens"] > 0
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["id"] == completed["id"]
    # What the stream announced is what GET returns afterwards.
    stored = get(server.port, f"{RESPONSES}/{completed['id']}")
    assert stored.json() == completed


def test_keepalives_while_the_agent_is_silent(server: LiveServer) -> None:
    body = {"model": "openclaw/scripted", "input": "[[silent:1]] late words", "stream": True}
    exchange = post(server.port, body)
    assert exchange.status == 200
    raw = exchange.body()
    before_text = raw.decode().split("response.output_text.delta")[0]
    assert before_text.count(": keepalive\n\n") >= 2  # every 0.3 s for 1 s
    assert stream_text(parse_stream(raw)) == "late words"


def test_tool_call_stream_events(server: LiveServer) -> None:
    arguments = json.dumps({"city": "Paris"})
    body = {
        "model": "openclaw/up",
        "input": f"[[call:get_weather:{arguments}]] weather?",
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "stream": True,
    }
    events = parse_stream(post(server.port, body).body())
    types = [event["type"] for event in events]
    assert "response.function_call_arguments.done" in types
    (item,) = events[-1]["response"]["output"]
    assert item["type"] == "function_call" and item["arguments"] == arguments
    (done,) = [e for e in events if e["type"] == "response.output_item.done"]
    assert done["item"]["call_id"] == item["call_id"]


# -- failures ------------------------------------------------------------------------------------


def test_disconnect_mid_stream_stores_nothing(server: LiveServer, fake: FakeUpstream) -> None:
    mark = marker()
    session = f"gone-{mark}"
    body = {"stream": True, "input": f"[[delay:0.2]] {'word ' * 40}{mark}"}
    exchange = post(server.port, body, {"x-openclaw-session-key": session})
    assert exchange.status == 200
    frames = exchange.frames()
    events = []
    for frame, _ in frames:
        if frame.startswith(": "):
            continue
        event = json.loads(frame.split("\n")[1].removeprefix("data: "))
        check_response_event(event)
        events.append(event)
        if event["type"] == "response.output_text.delta":
            break
    response_id = events[0]["response"]["id"]
    exchange.close()  # the client leaves after the first text delta

    def closed() -> t.Any:
        found = fake.chat_requests_mentioning(mark)
        return found[0] if found and found[0].ended else None

    received = fake.wait_for(lambda _: closed(), timeout=5)
    assert received.client_closed, received  # the run was cancelled upstream too
    assert server.transcript(f"agent:up:{session}") == []
    missing = get(server.port, f"{RESPONSES}/{response_id}")
    assert missing.status == 404
    check_error(missing.json(), code="response_not_found")
    follow = post(server.port, {"input": f"again {mark}"}, {"x-openclaw-session-key": session})
    assert follow.status == 200 and follow.json()["status"] == "completed"
    again = fake.chat_requests_mentioning(mark)[-1].body["messages"]
    assert again == [{"role": "user", "content": f"again {mark}"}]  # no half turn
    assert len(server.transcript(f"agent:up:{session}")) == 1


def test_failure_after_the_first_byte_is_response_failed(
    server: LiveServer, fake: FakeUpstream
) -> None:
    mark = marker()
    session = f"cut-{mark}"
    body = {"stream": True, "input": f"[[cut:2]] lost words here {mark}"}
    exchange = post(server.port, body, {"x-openclaw-session-key": session})
    assert exchange.status == 200
    events = parse_stream(exchange.body())
    failed = events[-1]
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "server_error"
    assert stream_text(events) == "You said:"
    assert server.transcript(f"agent:up:{session}") == []
    assert get(server.port, f"{RESPONSES}/{failed['response']['id']}").status == 404


def test_failure_before_the_stream_is_an_http_error(server: LiveServer) -> None:
    body = {"model": "openclaw/up", "input": "[[status:429]] slow down", "stream": True}
    exchange = post(server.port, body)
    assert exchange.status == 429
    check_error(exchange.json(), code="rate_limit_exceeded")


def test_the_endpoint_is_off_by_default(live: LiveServer) -> None:
    exchange = post(live.port, {"input": "hi"})
    assert exchange.status == 404
    error = check_error(exchange.json(), code="endpoint_disabled")
    assert "gateway.http.endpoints.responses.enabled" in error["message"]


# -- two hosts, one Redis -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_hosts(
    tmp_path_factory: pytest.TempPathFactory,
) -> t.Iterator[tuple[list[LiveServer], Nginx]]:
    """Two gateway hosts (one worker each) sharing one redis-server, and nginx
    (``deploy/nginx.conf``) in front of them."""
    require_binary("nginx", "nginx")  # before anything starts (a skip would leak them)
    directory = tmp_path_factory.mktemp("responses-redis")
    redis = RedisServer(directory / "redis")
    redis.start()
    hosts: list[LiveServer] = []
    nginx: Nginx | None = None
    try:
        overrides = merged(host_overrides(redis.url), RESPONSES_ON)
        for n in range(2):
            hosts.append(start_server(directory / f"host{n}", workers=1, overrides=overrides))
        nginx = Nginx([host.port for host in hosts])
        nginx.start()
        yield hosts, nginx
    finally:
        if nginx is not None:
            nginx.stop()
        for host in hosts:
            host.stop()
        redis.stop()


def test_continuation_and_forks_across_two_hosts(
    two_hosts: tuple[list[LiveServer], Nginx],
) -> None:
    (a, b), _ = two_hosts
    mark = marker()

    def turn(host: LiveServer, text: str, previous: str | None = None) -> dict:
        body: dict[str, t.Any] = {"model": "openclaw/scripted", "input": f"{text} {mark}"}
        if previous:
            body["previous_response_id"] = previous
        exchange = post(host.port, body)
        assert exchange.status == 200, exchange.body()
        response = exchange.json()
        check_response(response)
        response["session"] = exchange.header("x-openclaw-session-key")
        return response

    one = turn(a, "one")
    two = turn(b, "two", one["id"])  # host b finds host a's response in Redis
    three = turn(a, "three", one["id"])  # a fork, made on a from the shared store
    four = turn(b, "four", three["id"])
    assert two["session"] == one["session"] != three["session"] == four["session"]
    starts = {
        message_text(line["messages"][-1]).split()[0]: line
        for host in (a, b)
        for line in host.runs()
        if line["event"] == "start" and mark in json.dumps(line["messages"])
    }
    history = {word: [message_text(m) for m in line["messages"]] for word, line in starts.items()}
    assert history == {
        "one": [f"one {mark}"],
        "two": [f"one {mark}", f"one {mark}", f"two {mark}"],
        "three": [f"one {mark}", f"one {mark}", f"three {mark}"],
        "four": [f"one {mark}", f"one {mark}", f"three {mark}", f"three {mark}", f"four {mark}"],
    }
    # Retrieve on the other host; delete on one, gone on both.
    stored = get(a.port, f"{RESPONSES}/{four['id']}")
    assert stored.status == 200
    assert stored.json() == {k: v for k, v in four.items() if k != "session"}
    assert get(b.port, f"{RESPONSES}/{two['id']}/input_items").status == 200
    assert get(b.port, f"{RESPONSES}/{four['id']}", "DELETE").status == 200
    assert get(a.port, f"{RESPONSES}/{four['id']}").status == 404
    refused = post(a.port, {"model": "openclaw/scripted", "input": "x", "previous_response_id":
                            four["id"]})  # fmt: skip
    assert refused.status == 404
    check_error(refused.json(), code="previous_response_not_found")


def test_a_stream_through_nginx_flows_and_continues_on_either_host(
    two_hosts: tuple[list[LiveServer], Nginx],
) -> None:
    hosts, nginx = two_hosts
    mark = marker()
    # Accept-Encoding as the SDKs send it: nginx must neither compress nor hold the stream.
    body = {"model": "openclaw/scripted", "input": f"[[slow:400]] w1 w2 w3 {mark}", "stream": True}
    exchange = post(nginx.port, body, {"Accept-Encoding": "gzip, deflate"})
    assert exchange.status == 200 and exchange.header("Content-Encoding") is None
    frames = list(exchange.frames())
    arrivals = [at for frame, at in frames if frame.startswith("event: response.output_text.delta")]
    # A word every 0.4 s: unbuffered, the first arrives well before the last.
    assert arrivals[0] - exchange.started < 0.9 and arrivals[-1] - arrivals[0] > 0.8
    last = json.loads(frames[-1][0].split("\n")[1].removeprefix("data: "))
    assert last["type"] == "response.completed"
    previous = last["response"]["id"]
    for n in range(4):  # round robin: the chain goes on over both hosts
        body = {"model": "openclaw/scripted", "input": f"next{n} {mark}"}
        exchange = post(nginx.port, {**body, "previous_response_id": previous})
        assert exchange.status == 200, exchange.body()
        previous = exchange.json()["id"]
    starts = [
        (index, line)
        for index, host in enumerate(hosts)
        for line in host.runs()
        if line["event"] == "start" and mark in json.dumps(line["messages"][-1])
    ]
    assert {index for index, _ in starts} == {0, 1}, "nginx sent every turn to one host"
    for _, line in starts:
        n = message_text(line["messages"][-1]).split()[0]
        if n.startswith("next"):  # all earlier turns, whichever host ran this one
            assert line["history_count"] == 2 * (int(n.removeprefix("next")) + 1)
