"""The Vercel AI SDK (npm ``ai`` with ``@ai-sdk/openai``) as a real third-party client
of ``chatcompat serve``: its chat-completions provider (``openai.chat(model)``) and its
Responses provider (``openai(model)``, the default since v5), through
``generateText``/``streamText``, a tool loop, multi-turn conversations as the SDK keeps
them (``item_reference`` items when ``store`` is on), ``store: false`` and a reasoning
model's options.

The SDK runs in node (``vercel_ai_sdk.cjs``, one case per run), installed into
``.tools/vercel-ai-sdk`` on first use (``tests/live/node_packages.py``). The gateway's
``up`` agent forwards to the fake upstream (``tests/fake_upstream.py``), whose log
shows what the agent was given.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import typing as t

import pytest

from chatcompat.history import message_text
from tests.fake_upstream import REASONING
from tests.fake_upstream import FakeUpstream
from tests.live.conftest import AUTH
from tests.live.conftest import REPO
from tests.live.conftest import TOKEN
from tests.live.conftest import LiveServer
from tests.live.conftest import RawExchange
from tests.live.conftest import start_server
from tests.live.node_packages import node_modules
from tests.live.test_responses_clients import KEY
from tests.live.test_responses_clients import KEY_VARIABLE
from tests.live.test_responses_clients import RESPONSES_ON
from tests.live.test_responses_clients import agent_list
from tests.live.test_responses_clients import call
from tests.live.test_responses_clients import marker
from tests.responses_wire import check_response
from tests.wire import check_completion

pytestmark = pytest.mark.live

# The last majors that run on Node 20 (ai 7 and @ai-sdk/openai 4 need Node >= 22).
AI_SDK_PACKAGES = ("ai@6.0.326", "@ai-sdk/openai@3.0.141", "zod@4.6.7")
AI_SDK = REPO / ".tools" / "vercel-ai-sdk"
SCRIPT = pathlib.Path(__file__).with_name("vercel_ai_sdk.cjs")
PROVIDERS = ["chat", "responses"]
# The fake upstream counts words: the up agent's system prompt "You are up." is 3.
SYSTEM_WORDS = 3


@pytest.fixture(scope="module")
def ai_sdk() -> pathlib.Path:
    """The node_modules folder with the pinned SDK (installed on first use)."""
    return node_modules(AI_SDK, AI_SDK_PACKAGES, "the Vercel AI SDK tests")


@pytest.fixture(scope="module")
def fake(module_fake: FakeUpstream) -> FakeUpstream:
    return module_fake


@pytest.fixture(scope="module")
def server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[LiveServer]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_VARIABLE, KEY)  # the server's environment is copied from ours
        started = start_server(
            tmp_path_factory.mktemp("vercel-ai-sdk"),
            overrides={**RESPONSES_ON, "agents": {"list": agent_list(fake)}},
        )
    yield started
    started.stop()


def run_sdk(server: LiveServer, modules: pathlib.Path, **case: t.Any) -> dict[str, t.Any]:
    """Run one case of vercel_ai_sdk.cjs (see its header) and return what it printed."""
    env = {
        **os.environ,
        "AI_SDK_MODULES": str(modules),
        "BASE_URL": server.url("/v1"),
        "API_KEY": TOKEN,
        "CASE": json.dumps(case),
    }
    done = subprocess.run(
        ["node", str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0 and done.stdout, done.stderr[-3000:] or "no output"
    return json.loads(done.stdout)


def upstream_texts(fake: FakeUpstream, mark: str) -> list[list[str]]:
    """The texts of the messages after the system prompt, per upstream request that
    mentions ``mark``: the conversation the agent was given."""
    return [
        [message_text(message) for message in request.body["messages"][1:]]
        for request in fake.chat_requests_mentioning(mark)
    ]


def stored(server: LiveServer, response_id: str) -> RawExchange:
    """``GET /v1/responses/{id}``."""
    return RawExchange(server.port, "GET", f"/v1/responses/{response_id}", dict(AUTH))


def item_types(body: dict[str, t.Any]) -> list[str]:
    """The kinds of a Responses request's input items (a message has no ``type``)."""
    return [item.get("type", "message") for item in body["input"]]


# -- one reply: generateText and streamText on both providers --------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_generate_text(ai_sdk, server, fake, provider):
    mark = marker()
    got = run_sdk(
        server, ai_sdk, kind="generate", provider=provider, model="openclaw", prompt=f"hi {mark}"
    )
    assert got["text"] == f"You said: hi {mark}"
    assert got["finishReason"] == "stop"
    usage = got["usage"]
    assert (usage["inputTokens"], usage["outputTokens"]) == (SYSTEM_WORDS + 2, 4)
    assert usage["totalTokens"] == SYSTEM_WORDS + 6
    assert upstream_texts(fake, mark) == [[f"hi {mark}"]]
    if provider == "chat":
        check_completion(got["responseBody"])
    else:
        check_response(got["responseBody"])
        assert got["responseId"].startswith("resp_")
        assert stored(server, got["responseId"]).status == 200  # store is on by default


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_text(ai_sdk, server, fake, provider):
    mark = marker()
    got = run_sdk(
        server,
        ai_sdk,
        kind="stream",
        provider=provider,
        model="openclaw",
        prompt=f"stream {mark}",
    )
    # Word by word, as the upstream sent them: the SDK saw a real stream.
    assert got["deltas"] == ["You", " said:", " stream", f" {mark}"]
    assert "".join(got["deltas"]) == got["text"] == f"You said: stream {mark}"
    assert got["finishReason"] == "stop"
    usage = got["usage"]
    assert (usage["inputTokens"], usage["outputTokens"]) == (SYSTEM_WORDS + 2, 4)
    (request,) = fake.chat_requests_mentioning(mark)
    assert request.body["stream"] is True


# -- the tool loop --------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["generateText", "streamText"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_loop(ai_sdk, server, fake, provider, stream):
    """A zod tool and stopWhen: stepCountIs(3): the upstream asks for the tool, the SDK
    runs it and sends the result, the upstream answers with it."""
    mark = marker()
    got = run_sdk(
        server,
        ai_sdk,
        kind="tools",
        provider=provider,
        stream=stream,
        model="openclaw",
        prompt=f"{call('get_weather', city='Paris')} Weather in Paris? {mark}",
    )
    assert got["executed"] == [{"city": "Paris"}]
    assert got["text"] == "Tool result: sunny in Paris"
    asked, answered = got["steps"]
    assert asked["finishReason"] == "tool-calls" and answered["finishReason"] == "stop"
    (tool_call,) = asked["toolCalls"]
    assert (tool_call["toolName"], tool_call["input"]) == ("get_weather", {"city": "Paris"})
    (tool_result,) = asked["toolResults"]
    assert tool_result["toolCallId"] == tool_call["toolCallId"]
    first, second = fake.chat_requests_mentioning(mark)
    (schema,) = first.body["tools"]
    assert schema["function"]["name"] == "get_weather"
    assert schema["function"]["parameters"]["properties"] == {"city": {"type": "string"}}
    *_, assistant, result = second.body["messages"]
    (sent_call,) = assistant["tool_calls"]
    assert sent_call["function"]["name"] == "get_weather"
    assert json.loads(sent_call["function"]["arguments"]) == {"city": "Paris"}
    assert result == {
        "role": "tool",
        "tool_call_id": sent_call["id"],
        "content": "sunny in Paris",
    }
    if provider == "responses":
        # The SDK sends its own function calls whole, even with store on.
        assert item_types(answered["requestBody"]) == [
            "message",
            "function_call",
            "function_call_output",
        ]


# -- conversations the SDK keeps itself ----------------------------------------------------------


def test_conversation_with_store_sends_item_references(ai_sdk, server, fake):
    """With ``store`` on (the default) the SDK sends the assistant's earlier messages as
    ``item_reference`` items: the gateway resolves them from its store, so the agent
    sees the whole conversation."""
    mark = marker()
    words = ("one", "two", "three")
    got = run_sdk(
        server,
        ai_sdk,
        kind="conversation",
        provider="responses",
        model="openclaw",
        prompts=[f"{word} {mark}" for word in words],
    )
    said = [f"You said: {word} {mark}" for word in words]
    assert [turn["text"] for turn in got["turns"]] == said
    third = got["turns"][2]["requestBody"]
    assert item_types(third) == ["message", "item_reference"] * 2 + ["message"]
    references = [item["id"] for item in third["input"] if item.get("type") == "item_reference"]
    replies = [stored(server, turn["responseId"]).json()["output"] for turn in got["turns"][:2]]
    assert references == [message["id"] for (message,) in replies]
    assert upstream_texts(fake, mark) == [
        [f"one {mark}"],
        [f"one {mark}", said[0], f"two {mark}"],
        [f"one {mark}", said[0], f"two {mark}", said[1], f"three {mark}"],
    ]


def test_store_false_keeps_nothing(ai_sdk, server, fake):
    """``providerOptions: {openai: {store: false}}``: the SDK sends the whole
    conversation as messages, the replies are right, and the gateway stored nothing."""
    mark = marker()
    got = run_sdk(
        server,
        ai_sdk,
        kind="conversation",
        provider="responses",
        model="openclaw",
        prompts=[f"first {mark}", f"second {mark}"],
        providerOptions={"openai": {"store": False}},
    )
    said = [f"You said: first {mark}", f"You said: second {mark}"]
    assert [turn["text"] for turn in got["turns"]] == said
    second = got["turns"][1]["requestBody"]
    assert second["store"] is False
    assert item_types(second) == ["message", "message", "message"]
    assert upstream_texts(fake, mark)[1] == [f"first {mark}", said[0], f"second {mark}"]
    for turn in got["turns"]:
        assert stored(server, turn["responseId"]).status == 404
        session = turn["responseHeaders"]["x-openclaw-session-key"]
        assert server.transcript(session) == []


# -- a reasoning model ---------------------------------------------------------------------------


@pytest.mark.parametrize("store", [True, False], ids=["store", "no-store"])
def test_reasoning_model_with_encrypted_content_included(ai_sdk, server, fake, store):
    """A reasoning model's options as an app written for OpenAI sends them (the model
    name is OpenAI's; the agent header routes the request): reasoning effort and
    summary, ``include: ['reasoning.encrypted_content']``. The reasoning comes back as
    reasoning, and the next turn's history holds the reply, never the reasoning."""
    mark = marker()
    options = {
        "reasoningEffort": "low",
        "reasoningSummary": "auto",
        "include": ["reasoning.encrypted_content"],
        "store": store,
    }
    got = run_sdk(
        server,
        ai_sdk,
        kind="conversation",
        provider="responses",
        model="gpt-5",
        headers={"x-openclaw-agent-id": "up"},
        prompts=[f"[[reasoning]] think {mark}", f"again {mark}"],
        providerOptions={"openai": options},
    )
    first, second = got["turns"]
    assert first["requestBody"]["include"] == ["reasoning.encrypted_content"]
    assert first["requestBody"]["reasoning"] == {"effort": "low", "summary": "auto"}
    assert first["reasoningText"] == REASONING
    assert first["text"] == f"You said: think {mark}"
    assert second["text"] == f"You said: again {mark}"
    if store:  # the reasoning and the reply, named by id
        assert item_types(second["requestBody"]) == [
            "message",
            "item_reference",
            "item_reference",
            "message",
        ]
        assert second["warnings"] == []
    else:
        # The gateway has no encrypted reasoning to give (include is accepted, adds
        # nothing): the SDK leaves the reasoning out of the next turn, and says so.
        # Nothing is lost: reasoning is never the agent's history.
        reasoning, _ = first["responseBody"]["output"]
        assert reasoning["type"] == "reasoning" and reasoning.get("encrypted_content") is None
        assert item_types(second["requestBody"]) == ["message", "message", "message"]
        assert [warning["message"] for warning in second["warnings"]] == [
            "Reasoning parts without encrypted content are not supported when store is"
            " false. Skipping reasoning parts."
        ]
    asked, again = fake.chat_requests_mentioning(mark)
    assert asked.body["reasoning_effort"] == "low"
    assert upstream_texts(fake, mark)[1] == [
        f"[[reasoning]] think {mark}",
        f"You said: think {mark}",
        f"again {mark}",
    ]
