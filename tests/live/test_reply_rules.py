"""Enforced ``tool_choice`` and relayed reasoning through real gunicorn (two gevent
workers), the ``openai`` backend in front of the fake upstream, which ignores
``tool_choice`` as many compatible servers do: the official ``openai`` SDK, and the
raw bytes of the stream. (pi's thinking, relayed: tests/live/test_pi_live.py.)
"""

from __future__ import annotations

import json
import uuid

import openai
import pytest

from tests.fake_upstream import REASONING
from tests.fake_upstream import FakeUpstream
from tests.live.conftest import AUTH
from tests.live.conftest import TOKEN
from tests.live.conftest import RawExchange
from tests.live.conftest import chat
from tests.live.conftest import start_server
from tests.live.conftest import user
from tests.responses_wire import parse_stream
from tests.wire import check_completion
from tests.wire import parse_sse

pytestmark = pytest.mark.live

TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("get_weather", "get_time", "lookup")
]


def pinned(name: str) -> dict:
    return {"type": "function", "function": {"name": name}}


@pytest.fixture(scope="module")
def fake(module_fake: FakeUpstream) -> FakeUpstream:
    return module_fake


@pytest.fixture(scope="module")
def server(fake, tmp_path_factory):
    upstream = {"backend": "openai", "baseUrl": fake.base_url, "model": "fake-model"}
    agents = [
        {"id": "up", "default": True, **upstream},
        {"id": "quiet", **upstream, "reasoning": "drop"},
    ]
    responses_on = {"gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}}}
    started = start_server(
        tmp_path_factory.mktemp("reply-rules"),
        overrides={"agents": {"list": agents}, **responses_on},
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


# -- enforced tool_choice --------------------------------------------------------------------


@pytest.mark.parametrize("choice", ["required", pinned("lookup")], ids=["required", "named"])
def test_an_unmet_tool_choice_is_a_502_and_stores_nothing(client, fake, choice):
    mark = marker()
    session = {"x-openclaw-session-key": f"tc-{mark}"}
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="openclaw",
            messages=[user(f"weather? {mark}")],
            tools=TOOLS,
            tool_choice=choice,
            extra_headers=session,
        )
    assert caught.value.status_code == 502
    error = caught.value.body
    assert error["type"] == "api_error" and error["code"] == "tool_choice_not_satisfied"
    assert error["param"] == "tool_choice"
    assert ("'lookup'" in error["message"]) == (choice != "required")
    # The upstream was asked with the choice, and answered text anyway.
    (sent,) = fake.chat_requests_mentioning(f"weather? {mark}")
    assert sent.body["tool_choice"] == choice
    # Nothing stored: the session's next turn has no history before it.
    client.chat.completions.create(
        model="openclaw", messages=[user(f"next {mark}")], extra_headers=session
    )
    (after,) = fake.chat_requests_mentioning(f"next {mark}")
    assert after.body["messages"] == [{"role": "user", "content": f"next {mark}"}]


def test_an_unmet_tool_choice_in_a_stream_is_an_error_frame_without_the_prose(server):
    mark = marker()
    body = {
        "model": "openclaw",
        "stream": True,
        "messages": [user(f"weather? {mark}")],
        "tools": TOOLS,
        "tool_choice": "required",
    }
    exchange = chat(server.port, body)
    assert exchange.status == 200
    chunks, frames = parse_sse(exchange.body())
    assert mark not in "".join(frames)  # the fake's "You said: ..." never went out
    error = chunks[-1]["error"]
    assert error["code"] == "tool_choice_not_satisfied" and error["type"] == "api_error"
    assert not any(chunk["choices"][0]["finish_reason"] for chunk in chunks[:-1])


def test_the_sdk_raises_on_the_error_frame(client):
    stream = client.chat.completions.create(
        model="openclaw",
        messages=[user(f"weather? {marker()}")],
        tools=TOOLS,
        tool_choice="required",
        stream=True,
    )
    with pytest.raises(openai.APIError, match="tool_choice=required was not satisfied"):
        list(stream)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_met_tool_choice_passes_the_calls_through(server, stream):
    body = {
        "model": "openclaw",
        "stream": stream,
        "messages": [user(f"[[tools]] weather? {marker()}")],
        "tools": TOOLS,
        "tool_choice": pinned("get_time"),
    }
    exchange = chat(server.port, body)
    assert exchange.status == 200
    if stream:
        chunks, _ = parse_sse(exchange.body())
        names = [
            call["function"]["name"]
            for chunk in chunks
            for call in chunk["choices"][0]["delta"].get("tool_calls", ())
            if "name" in call["function"]
        ]
        assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    else:
        document = json.loads(exchange.body())
        check_completion(document)
        names = [c["function"]["name"] for c in document["choices"][0]["message"]["tool_calls"]]
    assert names == ["get_weather", "get_time"]


def test_tool_choice_none_relays_no_tool_call(client, fake):
    # The fake calls tools whatever tool_choice says: the gateway holds them back.
    mark = marker()
    reply = client.chat.completions.create(
        model="openclaw",
        messages=[user(f"[[tools]] {mark}")],
        tools=TOOLS,
        tool_choice="none",
    )
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason == "stop"
    (sent,) = fake.chat_requests_mentioning(mark)
    assert sent.body["tool_choice"] == "none"


RESPONSES_TOOLS = [
    {"type": "function", "name": name, "parameters": {"type": "object"}}
    for name in ("get_weather", "get_time", "lookup")
]


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "name": "lookup"}], ids=["required", "named"]
)
def test_an_unmet_tool_choice_on_responses_is_a_502_and_stores_nothing(client, fake, choice):
    mark = marker()
    session = {"x-openclaw-session-key": f"rtc-{mark}"}
    with pytest.raises(openai.InternalServerError) as caught:
        client.responses.create(
            model="openclaw",
            input=f"weather? {mark}",
            tools=RESPONSES_TOOLS,
            tool_choice=choice,
            extra_headers=session,
        )
    assert caught.value.status_code == 502
    error = caught.value.body
    assert error["type"] == "api_error" and error["code"] == "tool_choice_not_satisfied"
    # The upstream was asked (in chat completions' shape) and answered text anyway.
    (sent,) = fake.chat_requests_mentioning(f"weather? {mark}")
    assert sent.body["tool_choice"] == ("required" if choice == "required" else pinned("lookup"))
    # Nothing stored: the session's next turn has no history before it.
    client.responses.create(model="openclaw", input=f"next {mark}", extra_headers=session)
    (after,) = fake.chat_requests_mentioning(f"next {mark}")
    assert after.body["messages"] == [{"role": "user", "content": f"next {mark}"}]


def test_an_unmet_tool_choice_in_a_responses_stream_is_response_failed(server, fake):
    mark = marker()
    body = {
        "model": "openclaw",
        "stream": True,
        "input": f"weather? {mark}",
        "tools": RESPONSES_TOOLS,
        "tool_choice": "required",
    }
    sent = {**AUTH, "Content-Type": "application/json"}
    exchange = RawExchange(server.port, "POST", "/v1/responses", sent, json.dumps(body).encode())
    assert exchange.status == 200
    events = parse_stream(exchange.body())  # schema-checked, one terminal event, last
    failed = events[-1]
    assert failed["type"] == "response.failed"
    assert failed["response"]["error"]["code"] == "server_error"
    assert "tool_choice" in failed["response"]["error"]["message"]
    assert not any(e["type"] == "response.output_text.delta" for e in events)
    # Not stored: the failed response cannot be retrieved.
    retrieved = RawExchange(server.port, "GET", f"/v1/responses/{failed['response']['id']}", AUTH)
    assert retrieved.status == 404


# -- reasoning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_upstream_reasoning_is_relayed_as_reasoning_content(client, fake, field):
    mark = marker()
    session = {"x-openclaw-session-key": f"think-{mark}"}
    stream = client.chat.completions.create(
        model="openclaw",
        messages=[user(f"[[reasoning:{field}]] hi {mark}")],
        stream=True,
        extra_headers=session,
    )
    chunks = list(stream)
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    thoughts = [getattr(delta, "reasoning_content", None) or "" for delta in deltas]
    assert "".join(thoughts) == REASONING
    assert "".join(delta.content or "" for delta in deltas) == f"You said: hi {mark}"
    reply = client.chat.completions.create(
        model="openclaw", messages=[user(f"[[reasoning]] again {mark}")], extra_headers=session
    )
    assert reply.choices[0].message.reasoning_content == REASONING  # type: ignore[attr-defined]
    # The stored assistant turn is the text alone.
    (second,) = fake.chat_requests_mentioning(f"again {mark}")
    assert second.body["messages"][1] == {"role": "assistant", "content": f"You said: hi {mark}"}


def test_an_agent_that_drops_reasoning_sends_none(server):
    body = {"model": "openclaw/quiet", "messages": [user(f"[[reasoning]] hi {marker()}")]}
    document = json.loads(chat(server.port, body).body())
    assert "reasoning_content" not in document["choices"][0]["message"]
    raw = chat(server.port, {**body, "stream": True}).body()
    assert b"reasoning" not in raw
