"""The OpenAI Agents SDK on the Responses wire format: an agent with one function tool
runs its whole loop (tool call, tool result, final answer) against the parser and
the protocol, streamed and not, with a stand-in for the view (no HTTP server; the
live tests run the real gateway)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from chatcompat import responses_request
from chatcompat.protocol import responses as protocol
from tests.run_support import SCRIPTED_AGENT
from tests.run_support import KeepsResponses
from tests.run_support import make_run
from tests.wire import check_response
from tests.wire import parse_response_sse

agents = pytest.importorskip("agents")
httpx = pytest.importorskip("httpx2")
openai = pytest.importorskip("openai")

pytestmark = pytest.mark.usefixtures("quick_turn_write_retries")


@pytest.fixture
def store(store):
    return KeepsResponses(store)


@pytest.fixture
def gateway(settings, store):
    """An AsyncOpenAI client whose requests go to parse + complete/stream on a run of
    the scripted agent; the bodies it sent and the events it got are kept."""
    seen = {"bodies": [], "events": []}

    def handler(request):
        body = json.loads(request.content)
        seen["bodies"].append(body)
        parsed = responses_request.parse(body)
        run = make_run(
            settings,
            store,
            SCRIPTED_AGENT,
            key=f"agent:scripted:stateless:{uuid.uuid4().hex}",
            sticky=False,
            store_turn=parsed.store,
        )
        run.start(parsed.conversation, parsed.params)
        if parsed.stream:
            raw = b"".join(protocol.stream(run, parsed))
            seen["events"].append(parse_response_sse(raw)[0])
            return httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})
        document = protocol.complete(run, parsed)
        check_response(document)
        return httpx.Response(200, json=document)

    client = openai.AsyncOpenAI(
        api_key="k",
        base_url="http://gateway/v1",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    agents.set_tracing_disabled(True)
    return client, seen


def weather_agent(client):
    calls = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather of a city."""
        calls.append(city)
        return f"sunny in {city}"

    model = agents.OpenAIResponsesModel(model="openclaw", openai_client=client)
    return agents.Agent(name="w", instructions="Be brief.", tools=[get_weather], model=model), calls


@pytest.mark.parametrize("streamed", [False, True])
def test_an_agent_with_a_function_tool_runs_its_loop(gateway, streamed):
    client, seen = gateway
    agent, calls = weather_agent(client)

    async def main():
        if not streamed:
            return await agents.Runner.run(agent, "[[tool]]")
        result = agents.Runner.run_streamed(agent, "[[tool]]")
        async for _ in result.stream_events():
            pass
        return result

    result = asyncio.run(main())
    assert calls == ["Oslo"]
    assert result.final_output == "sunny in Oslo"
    first, second = seen["bodies"]
    assert first["instructions"] == "Be brief." and first["tools"][0]["name"] == "get_weather"
    kinds = [item.get("type", "message") for item in second["input"]]
    assert kinds[-2:] == ["function_call", "function_call_output"]
    if streamed:
        assert [events[-1]["type"] for events in seen["events"]] == ["response.completed"] * 2
