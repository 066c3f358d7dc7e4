"""The echo backend: deterministic words, delay, cancellation, usage."""

from __future__ import annotations

import time

from chatcompat.agents import backend_class
from chatcompat.agents.base import AgentRequest
from chatcompat.agents.base import Cancellation
from chatcompat.agents.base import Finish
from chatcompat.agents.base import Started
from chatcompat.agents.base import TextDelta
from chatcompat.agents.echo import EchoAgent
from chatcompat.settings import AgentConfig


def run(agent, text, cancel=None, system=None):
    request = AgentRequest(
        agent_id="e",
        session_key="k",
        messages=[{"role": "user", "content": text}],
        system_prompt=system,
    )
    return list(agent.run(request, cancel or Cancellation()))


def test_echo_streams_words_and_joins_back_exactly():
    events = run(EchoAgent(AgentConfig(id="e", backend="echo")), "  hello   wide\nworld ")
    assert isinstance(events[0], Started)
    pieces = [e.text for e in events if isinstance(e, TextDelta)]
    assert pieces == ["  hello", "   wide", "\nworld", " "]
    assert "".join(pieces) == "  hello   wide\nworld "
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.reason == "stop"
    assert (
        finish.usage.prompt_tokens,
        finish.usage.completion_tokens,
        finish.usage.total_tokens,
    ) == (3, 3, 6)


def test_system_prompt_counts_as_prompt():
    finish = run(EchoAgent(AgentConfig(id="e", backend="echo")), "a", system="be nice")[-1]
    assert finish.usage.prompt_tokens == 3


def test_delay_and_cancel():
    agent = EchoAgent(AgentConfig(id="e", backend="echo", options={"delayMs": 50}))
    started = time.monotonic()
    assert len(run(agent, "a b c")) == 5
    assert time.monotonic() - started >= 0.15
    cancel = Cancellation()
    cancel.cancel()
    events = run(agent, "a b c", cancel)
    assert not any(isinstance(e, (TextDelta, Finish)) for e in events)


def test_registry_finds_echo_and_dotted_paths():
    assert backend_class("echo") is EchoAgent
    assert backend_class("tests.scripted_agent.ScriptedAgent").name == "scripted"


def test_registry_refuses_unknown_backends_with_one_message():
    import pytest

    from chatcompat.agents import UnknownBackend

    for name in ("nope", "no.such.module.Class", "chatcompat.errors.APIError", "json.dumps"):
        with pytest.raises(UnknownBackend):
            backend_class(name)
