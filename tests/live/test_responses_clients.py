"""Real clients of the Responses API live: ``chatcompat serve`` (gunicorn) with
``/v1/responses`` enabled, in front of the fake chat-completions upstream
(``tests/fake_upstream.py``; the gateway translates), and the ``echo`` backend.

The clients: the official ``openai`` Python SDK, the OpenAI Agents SDK
(``openai-agents``: an agent with one function tool whose whole loop runs through the
gateway) and the openai-node SDK (installed into ``.tools/openai-node`` on first use).
Every byte the Python clients receive is recorded by their HTTP transport, and every
object and event in it is checked against OpenAI's schemas after each test.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import json
import os
import pathlib
import subprocess
import typing as t
import uuid

import agents
import httpx2
import openai
import pytest

from tests.fake_upstream import REASONING
from tests.fake_upstream import FakeUpstream
from tests.live.conftest import REPO
from tests.live.conftest import TOKEN
from tests.live.conftest import start_server
from tests.live.node_packages import node_modules
from tests.responses_wire import check_deleted
from tests.responses_wire import check_item_list
from tests.responses_wire import check_response
from tests.responses_wire import parse_stream
from tests.wire import check
from tests.wire import check_completion
from tests.wire import check_response_event
from tests.wire import parse_sse

pytestmark = pytest.mark.live

KEY_VARIABLE = "FAKE_UPSTREAM_API_KEY"  # not CHATCOMPAT_*: the live servers drop those
KEY = "sk-live-upstream-0123456789"
RESPONSES_ON = {"gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}}}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
OPENAI_NODE_PACKAGE = "openai@6.49.0"  # the last major that runs on Node 20 (7.x: >= 22)
OPENAI_NODE = REPO / ".tools" / "openai-node"
NODE_SCRIPT = pathlib.Path(__file__).with_name("openai_node_responses.cjs")


def marker() -> str:
    return uuid.uuid4().hex[:8]


def call(name: str, **arguments: t.Any) -> str:
    """The fake upstream's directive to answer with one call of tool ``name``."""
    return f"[[call:{name}:{json.dumps(arguments)}]]"


# -- every byte the SDKs receive, checked -------------------------------------------------------


@dataclasses.dataclass
class Exchange:
    method: str
    path: str
    status: int
    content_type: str
    body: bytearray


class Recorder:
    """The HTTP exchanges of a client (its transport tees each response body here)."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    def record(self, request: httpx2.Request, response: httpx2.Response) -> Exchange:
        exchange = Exchange(
            request.method,
            request.url.path,
            response.status_code,
            response.headers.get("content-type", ""),
            bytearray(),
        )
        self.exchanges.append(exchange)
        return exchange

    def check_all(self) -> list[Exchange]:
        """Check every recorded body against OpenAI's schema for its route; return
        the exchanges (and forget them)."""
        checked, self.exchanges = self.exchanges, []
        for exchange in checked:
            _check_exchange(exchange)
        return checked


def _check_exchange(exchange: Exchange) -> None:
    where = f"{exchange.method} {exchange.path} -> {exchange.status}"
    body = bytes(exchange.body)
    if exchange.content_type.startswith("text/event-stream"):
        assert exchange.status == 200, where
        if exchange.path.endswith("/chat/completions"):
            parse_sse(body)
        else:
            parse_stream(body)
        return
    assert exchange.content_type.startswith("application/json"), where
    document = json.loads(body)
    parts = exchange.path.strip("/").split("/")  # v1 responses <id> [input_items]
    if exchange.status >= 400:
        check("ErrorResponse", document)
    elif parts[1:2] == ["chat"]:
        check_completion(document)
    elif exchange.method == "DELETE":
        check_deleted(document, parts[2])
    elif parts[3:] == ["input_items"]:
        check_item_list(document)
    else:
        check_response(document)


class _Tee(httpx2.SyncByteStream):
    def __init__(self, stream: t.Any, sink: bytearray) -> None:
        self.stream, self.sink = stream, sink

    def __iter__(self) -> t.Iterator[bytes]:
        for chunk in self.stream:
            self.sink.extend(chunk)
            yield chunk

    def close(self) -> None:
        self.stream.close()


class _AsyncTee(httpx2.AsyncByteStream):
    def __init__(self, stream: t.Any, sink: bytearray) -> None:
        self.stream, self.sink = stream, sink

    async def __aiter__(self) -> t.AsyncIterator[bytes]:
        async for chunk in self.stream:
            self.sink.extend(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


class RecordingTransport(httpx2.BaseTransport):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder, self.inner = recorder, httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.inner.handle_request(request)
        exchange = self.recorder.record(request, response)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_Tee(response.stream, exchange.body),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.inner.close()


class AsyncRecordingTransport(httpx2.AsyncBaseTransport):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder, self.inner = recorder, httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        exchange = self.recorder.record(request, response)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_AsyncTee(response.stream, exchange.body),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


# -- the server and the clients ---------------------------------------------------------------


def agent_list(fake: FakeUpstream) -> list[dict]:
    return [
        {
            "id": "up",
            "default": True,
            "backend": "openai",
            "baseUrl": fake.base_url,
            "model": "fake-model",
            "apiKeyEnv": KEY_VARIABLE,
            "systemPrompt": "You are up.",
            "timeoutSeconds": 30,
        },
        {"id": "echo", "backend": "echo"},
    ]


@pytest.fixture(scope="module")
def fake(module_fake: FakeUpstream) -> FakeUpstream:
    return module_fake


@pytest.fixture(scope="module")
def server(fake, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_VARIABLE, KEY)  # the server's environment is copied from ours
        started = start_server(
            tmp_path_factory.mktemp("responses-clients"),
            overrides={**RESPONSES_ON, "agents": {"list": agent_list(fake)}},
        )
    yield started
    started.stop()


@pytest.fixture
def recorder() -> t.Iterator[Recorder]:
    """The test's recorded exchanges, all checked against the schemas after it."""
    recorded = Recorder()
    yield recorded
    recorded.check_all()


@pytest.fixture
def client(server, recorder):
    http = httpx2.Client(transport=RecordingTransport(recorder))
    sdk = openai.OpenAI(
        base_url=server.url("/v1"), api_key=TOKEN, max_retries=0, timeout=20, http_client=http
    )
    yield sdk
    sdk.close()


def session_header(name: str) -> dict[str, str]:
    return {"x-openclaw-session-key": name}


def upstream_messages(fake: FakeUpstream, mark: str) -> list[list[dict]]:
    """The messages of each upstream request that mentions ``mark``, in order."""
    return [request.body["messages"] for request in fake.chat_requests_mentioning(mark)]


def contents(messages: list[dict]) -> list[t.Any]:
    return [message.get("content") for message in messages]


# -- the openai Python SDK ---------------------------------------------------------------------


def test_create(client, fake):
    mark = marker()
    response = client.responses.create(
        model="openclaw",
        input=f"hello {mark}",
        instructions="Answer briefly.",
        metadata={"team": "search"},
        temperature=0.2,
        max_output_tokens=50,
    )
    assert response.output_text == f"You said: hello {mark}"
    assert response.status == "completed" and response.model == "openclaw"
    assert response.id.startswith("resp_") and response.object == "response"
    (message,) = response.output
    assert (message.type, message.role, message.status) == ("message", "assistant", "completed")
    assert (response.instructions, response.metadata) == ("Answer briefly.", {"team": "search"})
    assert response.temperature == 0.2 and response.max_output_tokens == 50
    # The fake counts words: system prompt "You are up." + instructions (5), input (2).
    assert (response.usage.input_tokens, response.usage.output_tokens) == (7, 4)
    assert response.usage.total_tokens == 11
    (sent,) = fake.chat_requests_mentioning(mark)
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["messages"] == [
        {"role": "system", "content": "You are up.\n\nAnswer briefly."},
        {"role": "user", "content": f"hello {mark}"},
    ]
    assert sent.body["temperature"] == 0.2 and sent.body["max_tokens"] == 50


def test_create_with_raw_response_has_the_session_header(client):
    raw = client.responses.with_raw_response.create(model="openclaw/echo", input="raw echo")
    assert raw.headers["x-openclaw-session-key"].startswith("agent:echo:")
    assert raw.headers["x-request-id"]
    response = raw.parse()
    check_response(raw.http_response.json())
    assert response.output_text == "raw echo"


def test_stream(client, fake):
    mark = marker()
    with client.responses.stream(
        model="openclaw/up", input=f"[[delay:0.02]] stream {mark}", temperature=0.1
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert deltas == ["You", " said:", " stream", f" {mark}"]
    assert final.output_text == "".join(deltas) and final.status == "completed"
    assert final.id == events[0].response.id and final.usage.output_tokens == 4
    (sent,) = fake.chat_requests_mentioning(mark)
    assert sent.body["temperature"] == 0.1


@pytest.mark.parametrize("model", ["openclaw/echo", "openclaw/up"])
def test_retrieve_input_items_and_delete(client, model):
    mark = marker()
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "one"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": f"two {mark}"},
    ]
    created = client.responses.create(model=model, input=items)
    retrieved = client.responses.retrieve(created.id)
    assert retrieved.model_dump() == created.model_dump()
    listed = client.responses.input_items.list(created.id, order="asc")
    texts = [item.content[0].text for item in listed.data]
    assert texts == ["one", "ok", f"two {mark}"] and listed.has_more is False
    assert [item.role for item in listed.data] == ["user", "assistant", "user"]
    newest_first = client.responses.input_items.list(created.id)  # order desc by default
    assert [item.id for item in newest_first.data] == [item.id for item in listed.data][::-1]
    page = client.responses.input_items.list(created.id, order="asc", limit=1)
    assert [item.id for item in page.data] == [listed.data[0].id] and page.has_more is True
    after = client.responses.input_items.list(created.id, order="asc", after=page.last_id)
    assert [item.id for item in after.data] == [item.id for item in listed.data[1:]]
    assert client.responses.delete(created.id) is None  # the SDK returns nothing
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(created.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model=model, input="more", previous_response_id=created.id)
    assert caught.value.code == "previous_response_not_found"


def test_store_false_keeps_nothing(client):
    created = client.responses.create(model="openclaw/echo", input="forget me", store=False)
    assert created.output_text == "forget me"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="openclaw/echo", input="x", previous_response_id=created.id)
    assert caught.value.param == "previous_response_id"


@pytest.mark.parametrize("stream", [False, True])
def test_function_tool_round_trip(client, fake, stream):
    mark = marker()
    first = client.responses.create(
        model="openclaw",
        input=f"{call('get_weather', city='Paris')} weather in Paris? {mark}",
        tools=[WEATHER],
        tool_choice="auto",
        parallel_tool_calls=False,
    )
    (function_call,) = first.output
    assert function_call.type == "function_call" and function_call.name == "get_weather"
    assert json.loads(function_call.arguments) == {"city": "Paris"}
    assert first.tools[0].name == "get_weather" and first.parallel_tool_calls is False
    output = {"type": "function_call_output", "call_id": function_call.call_id, "output": "sunny"}
    follow_up = {"previous_response_id": first.id, "input": [output], "tools": [WEATHER]}
    if stream:
        with client.responses.stream(model="openclaw", **follow_up) as events:
            answer = events.get_final_response()
    else:
        answer = client.responses.create(model="openclaw", **follow_up)
    assert answer.output_text == "Tool result: sunny"
    asked, answered = fake.chat_requests_mentioning(mark)
    assert asked.body["tools"] == [
        {
            "type": "function",
            "function": {k: v for k, v in WEATHER.items() if k != "type"},
        }
    ]
    assert asked.body["parallel_tool_calls"] is False
    assert answered.body["messages"][1:] == [
        {"role": "user", "content": asked.body["messages"][-1]["content"]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": function_call.call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": function_call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": function_call.call_id, "content": "sunny"},
    ]


def test_stream_of_a_tool_call(client):
    with client.responses.stream(
        model="openclaw", input=f"{call('get_weather', city='Rome')} go", tools=[WEATHER]
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert "".join(pieces) == done.arguments == '{"city": "Rome"}' == final.output[0].arguments
    assert final.output[0].type == "function_call"


def test_previous_response_id_continues_and_forks(client, fake):
    mark = marker()

    def turn(text: str, previous: str | None = None) -> openai.types.responses.Response:
        return client.responses.create(
            model="openclaw", input=f"{text} {mark}", previous_response_id=previous
        )

    one = turn("one")
    two = turn("two", one.id)  # one is its session's latest: appended
    three = turn("three", one.id)  # one is no longer the latest: a fork
    four = turn("four", two.id)  # the first branch goes on
    turn("five", three.id)  # and so does the fork
    said = [f"You said: {word} {mark}" for word in ("one", "two", "three", "four")]
    sent = [contents(messages)[1:] for messages in upstream_messages(fake, mark)]
    assert sent == [
        [f"one {mark}"],
        [f"one {mark}", said[0], f"two {mark}"],
        [f"one {mark}", said[0], f"three {mark}"],
        [f"one {mark}", said[0], f"two {mark}", said[1], f"four {mark}"],
        [f"one {mark}", said[0], f"three {mark}", said[2], f"five {mark}"],
    ]
    assert four.output_text == said[3]


def test_a_conversation_crosses_endpoints_both_ways(client, fake):
    mark = marker()
    session = session_header(f"cross-{mark}")
    client.chat.completions.create(
        model="openclaw",
        messages=[{"role": "user", "content": f"alpha {mark}"}],
        extra_headers=session,
    )
    beta = client.responses.create(model="openclaw", input=f"beta {mark}", extra_headers=session)
    gamma = client.chat.completions.create(
        model="openclaw",
        messages=[{"role": "user", "content": f"gamma {mark}"}],
        extra_headers=session,
    )
    assert gamma.choices[0].message.content == f"You said: gamma {mark}"
    # beta is no longer the session's latest turn: continuing from it forks.
    client.responses.create(model="openclaw", input=f"delta {mark}", previous_response_id=beta.id)
    said = {word: f"You said: {word} {mark}" for word in ("alpha", "beta", "gamma")}
    sent = [contents(messages)[1:] for messages in upstream_messages(fake, mark)]
    assert sent == [
        [f"alpha {mark}"],
        [f"alpha {mark}", said["alpha"], f"beta {mark}"],
        [f"alpha {mark}", said["alpha"], f"beta {mark}", said["beta"], f"gamma {mark}"],
        [f"alpha {mark}", said["alpha"], f"beta {mark}", said["beta"], f"delta {mark}"],
    ]


def test_unknown_previous_response_id_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(
            model="openclaw", input="hi", previous_response_id="resp_" + "0" * 32
        )
    assert caught.value.code == "previous_response_not_found"
    assert caught.value.param == "previous_response_id"


def test_another_agents_response_is_400(client):
    created = client.responses.create(model="openclaw/echo", input="mine")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="openclaw/up", input="x", previous_response_id=created.id)
    assert caught.value.param == "previous_response_id"


# -- the OpenAI Agents SDK ---------------------------------------------------------------------


@agents.function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def weather_agent(base_url: str, recorder: Recorder) -> tuple[agents.Agent, openai.AsyncOpenAI]:
    """An ordinary Agents SDK agent, and its client (close it in the event loop that
    used it); only the client's base URL and key are ours."""
    client = openai.AsyncOpenAI(
        base_url=base_url,
        api_key=TOKEN,
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=AsyncRecordingTransport(recorder)),
    )
    agent = agents.Agent(
        name="Weather",
        instructions="You answer questions about the weather.",
        tools=[get_weather],
        model=agents.OpenAIResponsesModel(model="openclaw", openai_client=client),
    )
    return agent, client


@pytest.fixture(autouse=True, scope="module")
def no_tracing() -> None:
    agents.set_tracing_disabled(True)  # tracing would post to OpenAI's servers


@pytest.mark.parametrize("auto_previous", [False, True], ids=["full-input", "previous-id"])
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_agents_sdk_runs_its_tool_loop_through_the_gateway(
    server, fake, recorder, streamed, auto_previous
):
    mark = marker()
    agent, client = weather_agent(server.url("/v1"), recorder)
    question = f"{call('get_weather', city='Paris')} What is the weather in Paris? {mark}"

    async def run() -> t.Any:
        options = {"auto_previous_response_id": auto_previous}
        try:
            if not streamed:
                return await agents.Runner.run(agent, question, **options), []
            result = agents.Runner.run_streamed(agent, question, **options)
            events = [event async for event in result.stream_events()]
            return result, events
        finally:
            await client.close()

    result, events = asyncio.run(run())
    assert result.final_output == "Tool result: sunny in Paris"
    asked, answered = fake.chat_requests_mentioning(mark)
    assert [tool["function"]["name"] for tool in asked.body["tools"]] == ["get_weather"]
    assert asked.body["messages"][0] == {
        "role": "system",
        "content": "You are up.\n\nYou answer questions about the weather.",
    }
    tool_call, tool_result = answered.body["messages"][-2:]
    assert tool_call["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert tool_result == {
        "role": "tool",
        "tool_call_id": tool_call["tool_calls"][0]["id"],
        "content": "sunny in Paris",
    }
    posts = [e for e in recorder.exchanges if e.method == "POST"]
    assert len(posts) == 2 and all(e.path == "/v1/responses" for e in posts)
    if streamed:
        raw = [e.data.type for e in events if e.type == "raw_response_event"]
        assert "response.function_call_arguments.delta" in raw
        assert "response.output_text.delta" in raw
        assert [e.name for e in events if e.type == "run_item_stream_event"] == [
            "tool_called",
            "tool_output",
            "message_output_created",
        ]


def test_agents_sdk_continues_a_conversation_by_previous_response_id(server, fake, recorder):
    mark = marker()
    agent, client = weather_agent(server.url("/v1"), recorder)

    async def run() -> t.Any:
        try:
            first = await agents.Runner.run(agent, f"My name is Ada. {mark}")
            second = await agents.Runner.run(
                agent, f"What is my name? {mark}", previous_response_id=first.last_response_id
            )
        finally:
            await client.close()
        return first, second

    first, second = asyncio.run(run())
    assert first.final_output == f"You said: My name is Ada. {mark}"
    assert second.final_output == f"You said: What is my name? {mark}"
    _, again = upstream_messages(fake, mark)
    assert contents(again)[1:] == [
        f"My name is Ada. {mark}",
        f"You said: My name is Ada. {mark}",
        f"What is my name? {mark}",
    ]


# -- the openai-node SDK ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def openai_node() -> pathlib.Path:
    """The openai npm package's directory (installed into .tools/openai-node once)."""
    return node_modules(OPENAI_NODE, (OPENAI_NODE_PACKAGE,), "the openai-node tests") / "openai"


def run_node(server, package: pathlib.Path, mark: str) -> dict:
    env = {
        **os.environ,
        "OPENAI_NODE_PACKAGE": str(package),
        "BASE_URL": server.url("/v1"),
        "API_KEY": TOKEN,
        "MARK": mark,
        "CALL": call("get_weather", city="Oslo"),
        "TOOL": json.dumps(WEATHER),
    }
    done = subprocess.run(
        ["node", str(NODE_SCRIPT)], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_openai_node_create_and_stream(server, fake, openai_node):
    mark = marker()
    got = run_node(server, openai_node, mark)
    for name in ("created", "final", "tool", "answer", "toolFinal"):
        document = {k: v for k, v in got[name].items() if k != "output_text"}  # the SDK's own
        check_response(document)
    for event in got["events"] + got["toolEvents"]:
        check_response_event(event)
    assert got["created"]["output_text"] == f"You said: hello {mark}"
    types = [event["type"] for event in got["events"]]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert [e["sequence_number"] for e in got["events"]] == list(range(len(types)))
    deltas = "".join(e["delta"] for e in got["events"] if e["type"].endswith("text.delta"))
    assert deltas == got["final"]["output_text"] == f"You said: stream {mark}"
    (function_call,) = got["tool"]["output"]
    assert function_call["type"] == "function_call"
    assert json.loads(function_call["arguments"]) == {"city": "Oslo"}
    assert got["answer"]["output_text"] == "Tool result: rain"
    pieces = [e["delta"] for e in got["toolEvents"] if e["type"].endswith("arguments.delta")]
    (streamed_call,) = got["toolFinal"]["output"]
    assert "".join(pieces) == streamed_call["arguments"] == '{"city": "Oslo"}'
    assert len(fake.chat_requests_mentioning(mark)) == 5


# -- more of SPEC 15 through the Python SDK ------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_is_an_output_item_and_never_history(client, fake, stream):
    mark = marker()
    session = session_header(f"reason-{mark}")
    request = {"model": "openclaw", "input": f"[[reasoning]] think {mark}"}
    if stream:
        with client.responses.stream(**request, extra_headers=session) as events:
            types = {event.type for event in events}
            response = events.get_final_response()
        assert "response.output_item.added" in types
        assert any(kind.startswith("response.reasoning_") for kind in types), types
    else:
        response = client.responses.create(**request, extra_headers=session)
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and message.type == "message"
    texts = [part.text for part in [*reasoning.summary, *(reasoning.content or [])]]
    assert REASONING in texts, reasoning
    assert response.output_text == f"You said: think {mark}"
    client.responses.create(model="openclaw", input=f"next {mark}", extra_headers=session)
    history = contents(upstream_messages(fake, mark)[-1])[1:]
    assert history == [f"[[reasoning]] think {mark}", f"You said: think {mark}", f"next {mark}"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_cut_by_the_token_limit_is_incomplete_and_stored(client, stream):
    mark = marker()
    request = {"model": "openclaw", "input": f"[[finish:length]] long {mark}"}
    if stream:
        with client.responses.stream(**request, max_output_tokens=4) as stream:
            events = list(stream)
        # The SDK's get_final_response() wants response.completed: the Response of an
        # incomplete stream is in its last event.
        assert events[-1].type == "response.incomplete"
        response = events[-1].response
    else:
        response = client.responses.create(**request, max_output_tokens=4)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert client.responses.retrieve(response.id).status == "incomplete"


def test_image_and_file_inputs_reach_the_upstream(client, fake):
    mark = marker()
    pixel = "data:image/png;base64,iVBORw0KGgo="
    csv = base64.b64encode(b"city,sky\nParis,sunny\n").decode()
    parts = [
        {"type": "input_text", "text": f"what is this? {mark}"},
        {"type": "input_image", "image_url": pixel, "detail": "low"},
        {"type": "input_image", "source": {"type": "base64", "media_type": "image/png",
                                           "data": "iVBORw0KGgo="}},
        {"type": "input_file", "filename": "sky.csv", "file_data": f"data:text/csv;base64,{csv}"},
    ]  # fmt: skip
    client.responses.create(model="openclaw", input=[{"role": "user", "content": parts}])
    (sent,) = fake.chat_requests_mentioning(mark)
    content = sent.body["messages"][-1]["content"]
    images = [part["image_url"]["url"] for part in content if part["type"] == "image_url"]
    assert images == [pixel, pixel]
    texts = "\n".join(part["text"] for part in content if part["type"] == "text")
    assert f"what is this? {mark}" in texts
    assert "Paris,sunny" in texts and "sky.csv" in texts  # the file, delimited


@pytest.mark.parametrize(
    "tool_choice,sent_choice",
    [
        ("required", "required"),
        ({"type": "function", "name": "get_weather"},
         {"type": "function", "function": {"name": "get_weather"}}),
    ],
)  # fmt: skip
def test_tool_choice_reaches_the_upstream(client, fake, tool_choice, sent_choice):
    mark = marker()
    response = client.responses.create(
        model="openclaw",
        input=f"{call('get_weather', city='Nice')} {mark}",
        tools=[WEATHER],
        tool_choice=tool_choice,
    )
    assert response.output[0].type == "function_call"
    (sent,) = fake.chat_requests_mentioning(mark)
    assert sent.body["tool_choice"] == sent_choice


def test_other_tool_types_are_refused_with_param(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="openclaw", input="hi", tools=[{"type": "web_search"}])
    assert caught.value.param == "tools[0].type"


def test_an_agent_written_for_openai_runs_unchanged(server, fake, recorder):
    """The agent's code as OpenAI's quick start writes it: no model named (the SDK's
    default model and its default settings go out). Only the client is ours: base URL,
    key, and the agent header, which makes the gateway ignore the model string."""
    mark = marker()
    client = openai.AsyncOpenAI(
        base_url=server.url("/v1"),
        api_key=TOKEN,
        max_retries=0,
        default_headers={"x-openclaw-agent-id": "up"},
        http_client=httpx2.AsyncClient(transport=AsyncRecordingTransport(recorder)),
    )
    agent = agents.Agent(
        name="Weather",
        instructions="You answer questions about the weather.",
        tools=[get_weather],
    )
    provider = agents.OpenAIProvider(openai_client=client, use_responses=True)
    question = f"{call('get_weather', city='Lima')} Weather in Lima? {mark}"

    async def run() -> t.Any:
        try:
            config = agents.RunConfig(model_provider=provider)
            return await agents.Runner.run(agent, question, run_config=config)
        finally:
            await client.close()

    result = asyncio.run(run())
    assert result.final_output == "Tool result: sunny in Lima"
    asked, answered = fake.chat_requests_mentioning(mark)
    assert asked.body["model"] == "fake-model"  # the agent's upstream model, not the SDK's
    # The SDK's default settings for its default model, forwarded in chat's names.
    assert (asked.body["reasoning_effort"], asked.body["verbosity"]) == ("none", "low")
    assert answered.body["messages"][-1]["content"] == "sunny in Lima"
    models = [json.loads(e.body)["model"] for e in recorder.exchanges if e.method == "POST"]
    assert models == [agents.models.get_default_model()] * 2  # echoed as sent


def test_concurrent_continuations_of_one_response_never_mix(server, fake):
    """Several clients continue the same latest response at once: exactly one appends
    to its session; each other one branches off into a new session, or is told to send
    again (409 ``response_continued``). No run sees another's turn."""
    mark = marker()
    sdk = openai.OpenAI(base_url=server.url("/v1"), api_key=TOKEN, max_retries=0, timeout=20)
    try:
        root = sdk.responses.with_raw_response.create(model="openclaw", input=f"root {mark}")
        root_session = root.headers["x-openclaw-session-key"]

        def branch(n: int) -> t.Any:
            try:
                return sdk.responses.with_raw_response.create(
                    model="openclaw",
                    input=f"[[delay:0.05]] branch{n} {mark}",
                    previous_response_id=root.parse().id,
                )
            except openai.ConflictError as error:
                return error

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(branch, range(4)))
    finally:
        sdk.close()
    refused = [o for o in outcomes if isinstance(o, openai.ConflictError)]
    assert all(error.code == "response_continued" for error in refused)
    sessions = [o.headers["x-openclaw-session-key"] for o in outcomes if o not in refused]
    assert sessions.count(root_session) == 1, (root_session, sessions)
    assert len(set(sessions)) == len(sessions)  # the others: a new session each
    for request in fake.chat_requests_mentioning(mark)[1:]:
        own = request.body["messages"][-1]["content"]
        assert contents(request.body["messages"])[1:] == [
            f"root {mark}",
            f"You said: root {mark}",
            own,
        ]


def test_logprobs_when_included(client, fake):
    mark = marker()
    request = {
        "model": "openclaw",
        "input": f"odds {mark}",
        "include": ["message.output_text.logprobs"],
        "top_logprobs": 2,
    }
    response = client.responses.create(**request)
    (part,) = response.output[0].content
    assert "".join(entry.token for entry in part.logprobs) == part.text
    assert [len(entry.top_logprobs) for entry in part.logprobs] == [2] * 4
    with client.responses.stream(**request) as stream:
        deltas = [event for event in stream if event.type == "response.output_text.delta"]
    assert [event.logprobs[0].token for event in deltas] == [event.delta for event in deltas]
    first, _ = fake.chat_requests_mentioning(mark)
    assert first.body["logprobs"] is True and first.body["top_logprobs"] == 2


@pytest.mark.parametrize("stream", [False, True])
def test_a_refusal_is_a_refusal_part(client, stream):
    request = {"model": "openclaw", "input": "[[refuse]] not that"}
    if stream:
        with client.responses.stream(**request) as events:
            kinds = [event.type for event in events]
            response = events.get_final_response()
        assert "response.refusal.done" in kinds
    else:
        response = client.responses.create(**request)
    (part,) = response.output[0].content
    assert (part.type, part.refusal) == ("refusal", "You said: not that")


def test_leaving_an_sdk_stream_early_stores_nothing(server, fake):
    """The SDK's stream left after the first text delta (its connection closed): the
    upstream run is cancelled, and neither the turn nor the response is kept."""
    mark = marker()
    session = f"left-{mark}"
    sdk = openai.OpenAI(base_url=server.url("/v1"), api_key=TOKEN, max_retries=0, timeout=20)
    try:
        with sdk.responses.stream(
            model="openclaw",
            input=f"[[delay:0.2]] {'word ' * 40}{mark}",
            extra_headers=session_header(session),
        ) as stream:
            for event in stream:
                if event.type == "response.created":
                    response_id = event.response.id
                if event.type == "response.output_text.delta":
                    break

        def ended() -> t.Any:
            found = fake.chat_requests_mentioning(mark)
            return found[0] if found and found[0].ended else None

        assert fake.wait_for(lambda _: ended(), timeout=5).client_closed
        with pytest.raises(openai.NotFoundError):
            sdk.responses.retrieve(response_id)
    finally:
        sdk.close()
    assert server.transcript(f"agent:up:{session}") == []
