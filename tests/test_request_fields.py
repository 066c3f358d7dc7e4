"""Which request fields each backend takes (``Agent.request_fields``): a field the routed
backend does not take is refused with 400 before any run, never dropped in silence."""

from __future__ import annotations

import json
import sys

import pytest

from chatcompat.agents import backend_class
from chatcompat.agents.base import BACKEND_FIELDS
from chatcompat.settings import AgentConfig
from tests.conftest import AUTH
from tests.wire import check_completion
from tests.wire import check_error

CHAT = "/v1/chat/completions"

# A valid value for every field a backend may take.
SAMPLES = {
    "temperature": 0.5,
    "top_p": 0.5,
    "presence_penalty": 1,
    "frequency_penalty": 1,
    "seed": 7,
    "max_tokens": 10,
    "max_completion_tokens": 10,
    "stop": "END",
    "response_format": {"type": "text"},
    "tools": [{"type": "function", "function": {"name": "f"}}],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "logit_bias": {"15": 1},
    "logprobs": True,
    "top_logprobs": 2,
    "reasoning_effort": "low",
    "verbosity": "low",
    "service_tier": "auto",
    "metadata": {"k": "v"},
    "store": False,
    "prediction": {"type": "content", "content": "x"},
    "safety_identifier": "s",
    "prompt_cache_key": "p",
    "prompt_cache_retention": "in_memory",
    "prompt_cache_options": {"ttl": "30m"},
}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def body_with(field: str) -> dict:
    body = {"messages": [user("hello there")], field: SAMPLES[field]}
    if field == "top_logprobs":
        body["logprobs"] = True
    return body


def post(client, body: dict):
    return client.post(CHAT, data=json.dumps(body), headers=AUTH)


def test_samples_cover_every_backend_field():
    assert set(SAMPLES) == BACKEND_FIELDS


def test_declarations():
    assert backend_class("openai").request_fields == BACKEND_FIELDS
    assert backend_class("echo").request_fields == BACKEND_FIELDS
    assert backend_class("pi").request_fields == frozenset({"tool_choice"})
    assert backend_class("tests.scripted_agent.ScriptedAgent").request_fields == frozenset()


@pytest.fixture
def pi_client(make_app, tmp_path):
    """A pi agent whose command only leaves a mark: any run would start it."""
    mark = tmp_path / "started"
    command = [sys.executable, "-c", f"open({str(mark)!r}, 'w').close()"]
    agents = (AgentConfig(id="pi", backend="pi", default=True, options={"command": command}),)
    app = make_app(agents=agents, default_agent_id="pi")
    return app.test_client(), mark


@pytest.mark.parametrize("field", sorted(BACKEND_FIELDS - {"tool_choice"}))
@pytest.mark.parametrize("stream", [False, True])
def test_pi_refuses_every_backend_field_but_tool_choice_before_a_run(pi_client, field, stream):
    client, mark = pi_client
    body = {**body_with(field), "stream": stream}
    response = post(client, body)
    assert response.status_code == 400
    error = check_error(response.get_json(), code="unsupported_parameter")
    assert error["param"] == field  # the first one in the body (logprobs follows)
    assert "'pi'" in error["message"]
    assert not mark.exists()


@pytest.mark.parametrize("choice", ["auto", "none"])
def test_pi_takes_tool_choice_the_gateway_enforces(pi_client, choice):
    client, mark = pi_client
    response = post(client, {"messages": [user("hi")], "tool_choice": choice})
    assert response.status_code != 400, response.get_data()
    assert mark.exists()  # the run was tried (the fake command is no pi: it fails)


def test_pi_refuses_a_demanded_tool_call_it_has_no_tools_for(pi_client):
    client, mark = pi_client
    response = post(client, {"messages": [user("hi")], "tool_choice": "required"})
    error = check_error(response, status=400)
    assert error["param"] == "tool_choice"  # "required" needs tools, which pi refuses
    assert not mark.exists()


def test_pi_takes_a_null_field_as_not_sent(pi_client):
    client, mark = pi_client
    response = post(client, {"messages": [user("hi")], "temperature": None, "tools": None})
    assert response.status_code != 400  # refused only for what was really sent
    assert mark.exists()  # so the run was tried (the fake command is no pi: it fails)


@pytest.mark.parametrize("field", sorted(BACKEND_FIELDS))
def test_echo_accepts_and_ignores_every_backend_field(client, field):
    body = body_with(field)
    response = post(client, body)
    assert response.status_code == 200, response.get_data()
    reply = response.get_json()
    check_completion(reply)
    assert reply["choices"][0]["message"]["content"] == "hello there"
    assert reply["choices"][0]["logprobs"] is None


def test_a_backend_without_a_declaration_takes_none(client):
    response = post(client, {"model": "openclaw/scripted", "messages": [user("hi")], "seed": 1})
    assert response.status_code == 400
    error = check_error(response.get_json(), code="unsupported_parameter")
    assert error["param"] == "seed"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_pi_refuses_a_provider_extension_before_a_run(pi_client, stream):
    client, mark = pi_client
    response = post(client, {"messages": [user("hi")], "top_k": 5, "stream": stream})
    assert response.status_code == 400
    error = check_error(response.get_json(), code="unknown_parameter")
    assert error["param"] == "top_k" and "'pi'" in error["message"]
    assert not mark.exists()


def test_echo_accepts_and_ignores_a_provider_extension(client):
    response = post(client, {"messages": [user("hello there")], "top_k": 5})
    assert response.status_code == 200
    assert response.get_json()["choices"][0]["message"]["content"] == "hello there"
