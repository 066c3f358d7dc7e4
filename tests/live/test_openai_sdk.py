"""The ``openai`` backend live: ``chatcompat serve`` (gunicorn) in front of the fake
upstream of ``tests/fake_upstream.py``, called with the official ``openai`` SDK.

The fake's log shows what the gateway really sent upstream (history once, in order)
and when the upstream connection was closed (a client that goes away closes it within
a second).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import uuid

import json5
import openai
import pytest

from tests.fake_upstream import FakeUpstream
from tests.fake_upstream import Received
from tests.live.conftest import CHAT
from tests.live.conftest import TOKEN
from tests.live.conftest import LiveServer
from tests.live.conftest import chat
from tests.live.conftest import start_server
from tests.wire import check_error

pytestmark = pytest.mark.live

CHATCOMPAT = pathlib.Path(sys.executable).with_name("chatcompat")
KEY_VARIABLE = "FAKE_UPSTREAM_API_KEY"  # not CHATCOMPAT_*: the live servers drop those
KEY = "sk-live-upstream-0123456789"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def agents(fake: FakeUpstream, dead_url: str) -> list[dict]:
    upstream = {"backend": "openai", "baseUrl": fake.base_url, "model": "fake-model"}
    return [
        {
            "id": "up",
            "default": True,
            **upstream,
            "apiKeyEnv": KEY_VARIABLE,
            "systemPrompt": "You are up.",
            "params": {"temperature": 0.5},
            "timeoutSeconds": 30,
        },
        {"id": "quick", **upstream, "timeoutSeconds": 1},
        {"id": "dead", "backend": "openai", "baseUrl": dead_url, "model": "m"},
    ]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@pytest.fixture(scope="module")
def fake(module_fake: FakeUpstream) -> FakeUpstream:
    """One fake upstream for the whole module (tests/conftest.py)."""
    return module_fake


@pytest.fixture(scope="module")
def server(fake, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_VARIABLE, KEY)  # the server's environment is copied from ours
        started = start_server(
            tmp_path_factory.mktemp("openai-live"),
            overrides={"agents": {"list": agents(fake, closed_port_url())}},
        )
    yield started
    started.stop()


@pytest.fixture
def client(server):
    sdk = openai.OpenAI(base_url=server.url("/v1"), api_key=TOKEN, max_retries=0, timeout=20)
    yield sdk
    sdk.close()


def marker() -> str:
    return uuid.uuid4().hex[:8]


# -- the SDK, happy paths ------------------------------------------------------------------


def test_create(client, fake):
    mark = marker()
    reply = client.chat.completions.create(model="openclaw", messages=[user(f"hello {mark}")])
    assert reply.choices[0].message.content == f"You said: hello {mark}"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "openclaw"
    # Real usage: the fake counts words (system prompt 3 + user 2; reply 4).
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (5, 4)
    assert reply.usage.total_tokens == 9
    (sent,) = fake.chat_requests_mentioning(mark)
    assert sent.headers["authorization"] == f"Bearer {KEY}"  # the agent's key, not our token
    assert sent.body["temperature"] == 0.5 and sent.body["model"] == "fake-model"
    # A JSON client: the agent asks its upstream for one completion, not a stream.
    assert sent.body["stream"] is False and "stream_options" not in sent.body


def test_stream_with_include_usage(client, fake):
    mark = marker()
    stream = client.chat.completions.create(
        model="openclaw/up",
        messages=[user(f"[[delay:0.02]] stream {mark}")],
        stream=True,
        stream_options={"include_usage": True},
        temperature=0.1,
        max_completion_tokens=30,
        stop=["zzz"],
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"You said: stream {mark}"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    (sent,) = fake.chat_requests_mentioning(mark)
    assert sent.body["temperature"] == 0.1 and sent.body["max_tokens"] == 30
    assert sent.body["stop"] == ["zzz"]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_round_trip(client, fake, stream):
    mark = marker()
    session = {"x-openclaw-session-key": f"tools-{mark}"}
    question = user(f"[[tools]] weather in Paris? {mark}")
    first = client.chat.completions.create(
        model="openclaw", messages=[question], tools=TOOLS, extra_headers=session
    )
    assert first.choices[0].finish_reason == "tool_calls"
    calls = first.choices[0].message.tool_calls
    assert [(c.id, c.function.name) for c in calls] == [
        ("call_w1", "get_weather"),
        ("call_t2", "get_time"),
    ]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assistant = first.choices[0].message.model_dump(exclude_none=True)
    results = [
        {"role": "tool", "tool_call_id": "call_w1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_t2", "content": "noon"},
    ]
    follow_up = client.chat.completions.create(
        model="openclaw",
        messages=[question, assistant, *results],
        tools=TOOLS,
        stream=stream,
        extra_headers=session,
    )
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in follow_up if c.choices)
    else:
        text = follow_up.choices[0].message.content
    assert text == "Tool result: noon"
    _, second = fake.chat_requests_mentioning(mark)
    assert second.body["tools"] == TOOLS
    assert second.body["messages"] == [
        {"role": "system", "content": "You are up."},
        question,
        {"role": "assistant", "content": None, "tool_calls": assistant["tool_calls"]},
        *results,
    ]


def test_stream_relays_tool_call_pieces(client):
    stream = client.chat.completions.create(
        model="openclaw", messages=[user("[[tools]] pieces")], tools=TOOLS, stream=True
    )
    pieces = [
        call
        for chunk in stream
        if chunk.choices and chunk.choices[0].delta.tool_calls
        for call in chunk.choices[0].delta.tool_calls
    ]
    assert [p.id for p in pieces] == ["call_w1", None, None, "call_t2"]
    assert "".join(p.function.arguments for p in pieces if p.index == 0) == '{"city": "Paris"}'


def test_history_is_sent_once_in_order(client, fake):
    mark = marker()
    session = {"x-openclaw-session-key": f"history-{mark}"}
    conversation: list[dict] = [{"role": "system", "content": "Answer briefly."}]
    for turn in ("one", "two", "three"):
        conversation.append(user(f"{turn} {mark}"))
        reply = client.chat.completions.create(
            model="openclaw", messages=conversation, extra_headers=session
        )
        conversation.append({"role": "assistant", "content": reply.choices[0].message.content})
    third = fake.chat_requests_mentioning(mark)[2].body["messages"]
    assert third == [
        {"role": "system", "content": "You are up.\n\nAnswer briefly."},
        *conversation[1:-1],
    ]


def test_image_parts_reach_the_upstream(client, fake):
    mark = marker()
    parts = [
        {"type": "text", "text": f"what is this? {mark}"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    client.chat.completions.create(model="openclaw", messages=[{"role": "user", "content": parts}])
    (sent,) = fake.chat_requests_mentioning(mark)
    assert sent.body["messages"][-1] == {"role": "user", "content": parts}


def test_concurrent_streams_and_pooled_upstream_connections(client, fake):
    mark = marker()

    def one(index: int) -> str:
        stream = client.chat.completions.create(
            model="openclaw",
            messages=[user(f"[[delay:0.05]] n{index} {mark}")],
            stream=True,
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        texts = list(pool.map(one, range(12)))
    assert texts == [f"You said: n{i} {mark}" for i in range(12)]
    first_wave = {r.client_port for r in fake.chat_requests_mentioning(mark)}
    assert len(first_wave) >= 6  # they overlapped, each on its own upstream connection
    for index in range(6):  # then one at a time: each worker reuses an idle connection
        assert one(100 + index) == f"You said: n{100 + index} {mark}"
    second_wave = {r.client_port for r in fake.chat_requests_mentioning(mark)[12:]}
    assert len(second_wave) <= 2 and len(second_wave - first_wave) <= 2  # 2 workers


# -- the SDK: fields sent and reported ---------------------------------------------------------

SDK_FIELDS = {
    "parallel_tool_calls": False,
    "reasoning_effort": "low",
    "verbosity": "low",
    "service_tier": "auto",
    "metadata": {"team": "search"},
    "store": False,
    "logit_bias": {"15": 3},
    "prediction": {"type": "content", "content": "You said"},
    "safety_identifier": "user-hash",
    "prompt_cache_key": "cache-key",
}


def test_fields_reach_the_upstream_and_what_it_reports_comes_back(client, fake):
    mark = marker()
    reply = client.chat.completions.create(
        model="openclaw",
        messages=[user(f"[[details]] fields {mark}")],
        tools=TOOLS,
        logprobs=True,
        top_logprobs=2,
        **SDK_FIELDS,
    )
    (sent,) = fake.chat_requests_mentioning(mark)
    for field, value in SDK_FIELDS.items():
        assert sent.body[field] == value, field
    assert sent.body["logprobs"] is True and sent.body["top_logprobs"] == 2
    choice = reply.choices[0]
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
    assert [len(t.top_logprobs) for t in choice.logprobs.content] == [2] * 4
    assert reply.usage.prompt_tokens_details.cached_tokens == 2
    assert reply.usage.completion_tokens_details.reasoning_tokens == 3
    assert (reply.service_tier, reply.system_fingerprint) == ("default", "fp_fake")


def test_stream_relays_logprobs_per_chunk_and_usage_details(client, fake):
    mark = marker()
    stream = client.chat.completions.create(
        model="openclaw",
        messages=[user(f"[[details]] stream {mark}")],
        stream=True,
        stream_options={"include_usage": True},
        logprobs=True,
        parallel_tool_calls=False,
        tools=TOOLS,
    )
    chunks = list(stream)
    pieces = [c.choices[0] for c in chunks if c.choices and c.choices[0].delta.content]
    assert [p.logprobs.content[0].token for p in pieces] == [p.delta.content for p in pieces]
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 2
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 3
    (sent,) = fake.chat_requests_mentioning(mark)
    assert sent.body["parallel_tool_calls"] is False


def test_extra_body_extensions_reach_the_upstream(client, fake):
    mark = marker()
    client.chat.completions.create(
        model="openclaw", messages=[user(f"extension {mark}")], extra_body={"top_k": 5}
    )
    (sent,) = fake.chat_requests_mentioning(mark)
    assert sent.body["top_k"] == 5


@pytest.mark.parametrize(
    "fields,param",
    [
        ({"modalities": ["text", "audio"], "audio": {"voice": "ash", "format": "mp3"}}, "audio"),
        ({"top_logprobs": 3}, "top_logprobs"),
    ],
)
def test_refused_fields_raise_bad_request_before_the_upstream(client, fake, fields, param):
    mark = marker()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="openclaw", messages=[user(f"refused {mark}")], **fields
        )
    assert caught.value.param == param and caught.value.status_code == 400
    assert fake.chat_requests_mentioning(mark) == []


# -- the SDK, errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,exception",
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_4xx_raise_the_matching_sdk_error(client, status, exception, stream):
    with pytest.raises(exception) as caught:
        client.chat.completions.create(
            model="openclaw", messages=[user(f"[[status:{status}]]")], stream=stream
        )
    error = caught.value
    assert error.status_code == status
    if status == 400:
        assert (error.code, error.param, error.type) == (
            "invalid_value",
            "temperature",
            "invalid_request_error",
        )
    if status in (401, 403):
        assert "upstream" in error.message  # not the gateway's own token
    assert KEY not in str(error.body)


def test_gateway_token_errors_are_not_the_upstream(server):
    sdk = openai.OpenAI(base_url=server.url("/v1"), api_key="wrong", max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.chat.completions.create(model="openclaw", messages=[user("hi")])
    finally:
        sdk.close()
    assert "upstream" not in caught.value.message


@pytest.mark.parametrize(
    "model,text,status",
    [
        ("openclaw/dead", "anyone?", 502),
        ("openclaw", "[[status:500]]", 502),
        ("openclaw", "[[html]]", 502),
        ("openclaw/quick", "[[stall:5]]", 504),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_failures_before_the_stream_are_http_errors(client, model, text, status, stream):
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=model, messages=[user(text)], stream=stream)
    assert caught.value.status_code == status


def test_stream_against_a_dead_upstream_is_502_not_200(server):
    exchange = chat(
        server.port, {"model": "openclaw/dead", "stream": True, "messages": [user("a")]}
    )
    assert exchange.status == 502
    assert exchange.header("Content-Type") == "application/json"
    check_error(exchange.json(), code="upstream_error")


@pytest.mark.parametrize("directive", ["[[cut:3]]", "[[error-frame:3]]"])
def test_error_after_the_stream_began_raises_api_error(client, fake, directive):
    mark = marker()
    session = {"x-openclaw-session-key": f"broken-{mark}"}
    client.chat.completions.create(
        model="openclaw", messages=[user(f"first {mark}")], extra_headers=session
    )
    stream = client.chat.completions.create(
        model="openclaw",
        messages=[user(f"{directive} lost words {mark}")],
        stream=True,
        extra_headers=session,
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "You said: lost"
    assert "upstream" in caught.value.message
    client.chat.completions.create(
        model="openclaw", messages=[user(f"again {mark}")], extra_headers=session
    )
    last = fake.chat_requests_mentioning(mark)[-1].body["messages"]
    assert [m["content"] for m in last[1:]] == [f"first {mark}", f"You said: first {mark}",
                                                 f"again {mark}"]  # fmt: skip


# -- the client goes away ----------------------------------------------------------------------


def wait_closed(fake: FakeUpstream, mark: str) -> Received:
    def ended():
        found = fake.chat_requests_mentioning(mark)
        return found[0] if found and found[0].ended else None

    return fake.wait_for(lambda _: ended(), timeout=5)


def disconnect_mid_stream(server: LiveServer, fake: FakeUpstream) -> None:
    mark = marker()
    session = f"gone-{mark}"
    body = {"stream": True, "messages": [user(f"[[delay:0.2]] {'word ' * 40}{mark}")]}
    exchange = chat(server.port, body, {"x-openclaw-session-key": session})
    assert exchange.status == 200
    exchange.close_after_contents(2)
    gone = time.monotonic()
    received = wait_closed(fake, mark)
    assert received.client_closed, received
    assert received.ended - gone < 1.0
    assert server.transcript(f"agent:up:{session}") == []


def test_disconnect_mid_stream_closes_the_upstream_within_a_second(server, fake):
    disconnect_mid_stream(server, fake)


def test_a_client_that_stops_reading_has_the_upstream_closed_by_the_timeout(server, fake):
    mark = marker()
    body = {"model": "openclaw/quick", "stream": True, "messages": [user(f"[[flood]] {mark}")]}
    exchange = chat(server.port, body)  # the head is read, the body never
    assert exchange.status == 200
    started = time.monotonic()  # the run started before its head was sent

    def ended():
        found = fake.chat_requests_mentioning(mark)
        return found[0] if found and found[0].ended else None

    received = fake.wait_for(lambda _: ended(), timeout=15)
    assert received.client_closed, received
    # "quick" has timeoutSeconds 1; the watchdog's grace (1 s) and a loaded machine's
    # scheduling come on top. Without the watchdog the upstream is never closed.
    assert received.ended - started <= 1 + 4.0


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_disconnect_while_the_upstream_thinks_closes_it_within_a_second(server, fake, stream):
    mark = marker()
    data = json.dumps({"stream": stream, "messages": [user(f"[[stall:10]] {mark}")]}).encode()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head.encode() + data)
        fake.wait_for(lambda _: fake.chat_requests_mentioning(mark))
        time.sleep(0.2)
    gone = time.monotonic()
    received = wait_closed(fake, mark)
    assert received.client_closed and received.ended - gone < 1.0


def test_disconnect_during_a_json_request_with_a_busy_upstream(server, fake):
    # The upstream takes 0.1 s a word (a JSON client's run asks for one completion,
    # which comes at the end): the runner must look for the gone client meanwhile.
    mark = marker()
    body = {"messages": [user(f"[[delay:0.1]] {'word ' * 30}{mark}")]}
    exchange = chat(server.port, body, {"x-openclaw-session-key": f"json-{mark}"}, read=False)
    fake.wait_for(lambda _: fake.chat_requests_mentioning(mark))
    time.sleep(0.3)
    exchange.close()
    gone = time.monotonic()
    received = wait_closed(fake, mark)
    assert received.client_closed and received.ended - gone < 1.0
    assert server.transcript(f"agent:up:json-{mark}") == []


def test_disconnect_under_gthread_workers(make_server, fake):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_VARIABLE, KEY)
        server = make_server(
            "gthread",
            workers=1,
            worker_class="gthread",
            overrides={"agents": {"list": agents(fake, closed_port_url())}},
        )
    disconnect_mid_stream(server, fake)


# -- chatcompat init --upstream, then curl and the SDK ------------------------------------


def test_init_upstream_config_serves_curl_and_the_sdk(fake, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    written = tmp_path / "written.json5"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATCOMPAT_", "OPENCLAW_"))}
    out = subprocess.run(
        [str(CHATCOMPAT), "init", "--path", str(written), "--upstream", fake.base_url,
         "--model", "fake-model", "--api-key-env", KEY_VARIABLE],
        capture_output=True, text=True, env=env, check=True,
    ).stdout  # fmt: skip
    document = json5.loads(written.read_text())
    (agent,) = document["agents"]["list"]
    assert agent == {
        "id": "main",
        "default": True,
        "backend": "openai",
        "baseUrl": fake.base_url,
        "model": "fake-model",
        "apiKeyEnv": KEY_VARIABLE,
    }
    (tmp_path / "served").mkdir()
    server = LiveServer(tmp_path / "served", written, 1, "gevent")  # the file as init wrote it
    server.start()
    try:
        joined = out.replace("\\\n", " ")  # join the printed commands' continued lines
        commands = [line.strip() for line in joined.splitlines() if line.startswith("  curl ")]
        assert len(commands) == 3, out  # chat JSON, chat stream, Responses JSON
        for command, kind in zip(commands, ("chat", "stream", "responses"), strict=True):
            command = command.replace("127.0.0.1:18789", f"127.0.0.1:{server.port}")
            result = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, timeout=30
            )
            if kind == "stream":
                assert "data: [DONE]" in result.stdout and '"content":" hi"' in result.stdout
            elif kind == "chat":
                reply = json.loads(result.stdout)
                assert reply["choices"][0]["message"]["content"] == "You said: hi"
            else:  # the gateway speaks Responses to the client, chat to the upstream
                response = json.loads(result.stdout)
                assert response["status"] == "completed", response
                assert response["output"][0]["content"][0]["text"] == "You said: hi"
        token = document["gateway"]["auth"]["token"]
        sdk = openai.OpenAI(base_url=server.url("/v1"), api_key=token, max_retries=0)
        try:
            reply = sdk.chat.completions.create(model="openclaw", messages=[user("sdk too")])
        finally:
            sdk.close()
        assert reply.choices[0].message.content == "You said: sdk too"
    finally:
        server.stop()
