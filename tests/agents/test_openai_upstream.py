"""The ``openai`` backend against a fake upstream on loopback: the agent on its own,
then the gateway through the Flask test client."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import threading
import time

import pytest

from chatcompat import redaction
from chatcompat.agents import backend_class
from chatcompat.agents.base import AgentError
from chatcompat.agents.base import AgentRejected
from chatcompat.agents.base import AgentRequest
from chatcompat.agents.base import AgentTimeout
from chatcompat.agents.base import Cancellation
from chatcompat.agents.base import Finish
from chatcompat.agents.base import ReasoningDelta
from chatcompat.agents.base import RefusalDelta
from chatcompat.agents.base import ReplyInfo
from chatcompat.agents.base import Started
from chatcompat.agents.base import TextDelta
from chatcompat.agents.base import ToolCallDelta
from chatcompat.agents.openai_replies import chunk_events
from chatcompat.agents.openai_replies import completion_events
from chatcompat.agents.openai_upstream import OpenAIAgent
from chatcompat.config import ConfigError
from chatcompat.config import settings_from_document
from chatcompat.settings import AgentConfig
from tests.conftest import AUTH
from tests.conftest import TOKEN
from tests.fake_upstream import REASONING
from tests.fake_upstream import FakeUpstream
from tests.polling import wait_until
from tests.wire import check_completion
from tests.wire import check_error
from tests.wire import parse_sse
from tests.wire import stream_text

KEY = "sk-upstream-secret-0123456789"
CHAT = "/v1/chat/completions"


@pytest.fixture
def refused_url() -> str:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def unanswered_url():
    """A port whose accept queue is full: a new connection never completes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname(), timeout=1)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    filler.close()
    listener.close()


_AGENTS: list[OpenAIAgent] = []


@pytest.fixture(autouse=True)
def close_agents():
    """Pooled connections left open would be ResourceWarnings (errors here)."""
    yield
    while _AGENTS:
        _AGENTS.pop().close()


def make_agent(base_url: str, timeout: float = 5.0, **options) -> OpenAIAgent:
    config = AgentConfig(
        id="up",
        backend="openai",
        options={"baseUrl": base_url, "model": "fake-model", **options},
        timeout_seconds=timeout,
    )
    agent = OpenAIAgent(config)
    _AGENTS.append(agent)
    return agent


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def request(*messages: dict, system: str | None = None, **params) -> AgentRequest:
    return AgentRequest(
        agent_id="up",
        session_key="agent:up:k",
        messages=list(messages),
        system_prompt=system,
        params=params,
    )


def run(agent: OpenAIAgent, req: AgentRequest, cancel: Cancellation | None = None) -> list:
    return list(agent.run(req, cancel or Cancellation()))


def text_of(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# -- configuration -------------------------------------------------------------------------


def load(agent: dict, environ: dict | None = None):
    document = {"agents": {"list": [{"id": "up", "backend": "openai", **agent}]}}
    return settings_from_document(document, environ={"CHATCOMPAT_GATEWAY_TOKEN": TOKEN})


def problems(agent: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(agent)
    return caught.value.problems


def test_registered_and_a_full_config_loads():
    assert backend_class("openai") is OpenAIAgent
    settings = load(
        {
            "baseUrl": "https://api.openai.com/v1",
            "apiKeyEnv": "OPENAI_API_KEY",
            "model": "gpt-4o-mini",
            "headers": {"OpenAI-Organization": "org-1"},
            "params": {"temperature": 0.2},
            "connectTimeoutSeconds": 3,
            "maxTokensField": "max_completion_tokens",
            "timeoutSeconds": 120,
        }
    )
    agent = settings.agents[0]
    assert agent.backend == "openai" and agent.timeout_seconds == 120
    assert agent.options["model"] == "gpt-4o-mini"


@pytest.mark.parametrize(
    "agent,expected",
    [
        ({"model": "m"}, "agents.list[0]: 'baseUrl' is a required property"),
        ({"baseUrl": "http://h/v1"}, "agents.list[0]: 'model' is a required property"),
        ({"baseUrl": "ftp://h/v1", "model": "m"}, "agents.list[0].baseUrl: 'ftp://h/v1'"),
        ({"baseUrl": "http://h:port/v1", "model": "m"}, "agents.list[0].baseUrl:"),
        ({"baseUrl": "http://h/v1", "model": ""}, "agents.list[0].model:"),
        ({"baseUrl": "http://h/v1", "model": "m", "temprature": 1}, "agents.list[0].temprature"),
        ({"baseUrl": "http://h/v1", "model": "m", "headers": {"X": 1}}, "agents.list[0].headers.X"),
        ({"baseUrl": "http://h/v1", "model": "m", "headers": {"a b": "x"}}, ".headers:"),
        ({"baseUrl": "http://h/v1", "model": "m", "apiKeyEnv": "1BAD"}, ".apiKeyEnv:"),
        ({"baseUrl": "http://h/v1", "model": "m", "params": []}, "agents.list[0].params:"),
        (
            {"baseUrl": "http://h/v1", "model": "m", "connectTimeoutSeconds": 0},
            "agents.list[0].connectTimeoutSeconds:",
        ),
        ({"baseUrl": "http://h/v1", "model": "m", "maxTokensField": "n"}, ".maxTokensField:"),
    ],
)
def test_invalid_options_are_start_up_errors_naming_the_key(agent, expected):
    found = problems(agent)
    assert len(found) == 1 and found[0].startswith(expected) or expected in found[0], found


def test_credentials_in_the_url_are_refused_and_keys_never_quoted():
    assert problems({"baseUrl": "http://user:pw@h/v1", "model": "m"})[0].startswith(
        "agents.list[0].baseUrl:"
    )
    found = problems({"baseUrl": "http://h/v1", "model": "m", "apiKey": ["sk-leaky-123"]})
    assert found[0].startswith("agents.list[0].apiKey:") and "sk-leaky" not in found[0]


def test_no_connection_before_the_first_run_and_close_releases(fake):
    agent = make_agent(fake.base_url)
    assert agent._pool is None and fake.requests == []
    run(agent, request(user("hi")))
    assert agent._pool is not None
    agent.close()
    assert agent._pool is None
    assert text_of(run(agent, request(user("again")))) == "You said: again"  # reopens


# -- what is sent upstream -------------------------------------------------------------------


def test_messages_system_prompt_first_then_history_and_turn_unchanged(fake):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages = [
        user("first"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "content": "It is 42."},
        {"role": "user", "content": [{"type": "input_text", "text": "look"}, image]},
    ]
    run(make_agent(fake.base_url), request(*messages, system="Be brief.\n\nDev says."))
    sent = fake.chat_requests()[0].body["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief.\n\nDev says."}
    assert sent[1:5] == messages[:4]
    assert sent[5] == {"role": "user", "content": [{"type": "text", "text": "look"}, image]}
    assert len(sent) == 6


def test_no_system_message_without_a_prompt(fake):
    run(make_agent(fake.base_url), request(user("hi")))
    assert fake.chat_requests()[0].body["messages"] == [user("hi")]


def test_params_merge_over_the_agent_defaults_and_streaming_is_forced(fake):
    agent = make_agent(
        fake.base_url,
        params={"temperature": 0.1, "top_p": 0.5, "max_completion_tokens": 50, "stream": False},
    )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    params = {
        "temperature": 0.9,
        "stop": ["END"],
        "seed": 7,
        "response_format": {"type": "json_object"},
        "tools": tools,
        "tool_choice": "auto",
        "max_tokens": 12,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
    }
    run(agent, request(user("hi"), **params))
    body = fake.chat_requests()[0].body
    assert body["model"] == "fake-model"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.9 and body["top_p"] == 0.5
    assert body["max_tokens"] == 12 and "max_completion_tokens" not in body
    for name in ("stop", "seed", "response_format", "tools", "tool_choice", "presence_penalty"):
        assert body[name] == params[name]


def test_max_tokens_field_and_agent_default_limit(fake):
    agent = make_agent(
        fake.base_url, maxTokensField="max_completion_tokens", params={"max_tokens": 9}
    )
    run(agent, request(user("hi")))
    run(agent, request(user("hi"), max_tokens=3))
    first, second = (r.body for r in fake.chat_requests())
    assert first["max_completion_tokens"] == 9 and "max_tokens" not in first
    assert second["max_completion_tokens"] == 3 and "max_tokens" not in second


def test_api_key_and_headers(fake, monkeypatch):
    run(make_agent(fake.base_url, apiKey=KEY, headers={"X-Team": "blue"}), request(user("a")))
    monkeypatch.setenv("UPSTREAM_KEY", "sk-from-env")
    run(make_agent(fake.base_url, apiKeyEnv="UPSTREAM_KEY"), request(user("b")))
    run(make_agent(fake.base_url), request(user("c")))
    first, second, third = (r.headers for r in fake.chat_requests())
    assert first["authorization"] == f"Bearer {KEY}" and first["x-team"] == "blue"
    assert first["accept"] == "text/event-stream"
    assert second["authorization"] == "Bearer sk-from-env"
    assert "authorization" not in third


def test_missing_key_variable_is_a_clear_error(fake, monkeypatch):
    monkeypatch.delenv("UPSTREAM_KEY", raising=False)
    with pytest.raises(AgentError) as caught:
        run(make_agent(fake.base_url, apiKeyEnv="UPSTREAM_KEY"), request(user("a")))
    assert "UPSTREAM_KEY" in caught.value.message and "up" in caught.value.message
    assert fake.requests == []


def test_base_url_query_is_kept_after_the_path(fake):
    run(make_agent(fake.base_url + "/?api-version=2024-06-01"), request(user("a")))
    assert fake.chat_requests()[0].path == "/v1/chat/completions?api-version=2024-06-01"


# -- what comes back -----------------------------------------------------------------------


def test_text_deltas_and_real_usage(fake):
    events = run(make_agent(fake.base_url), request(user("hello big world"), system="s p"))
    assert isinstance(events[0], Started)
    assert [e.text for e in events[1:-1]] == ["You", " said:", " hello", " big", " world"]
    assert events[-1] == Finish("stop", events[-1].usage)
    usage = events[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5, 5, 10)


def test_deltas_are_relayed_as_they_arrive(fake):
    # The fake sends a word only when released, and the next one is released only when
    # the previous one has come out of the agent: an agent that buffered never finishes.
    words = []
    fake.gate.release()
    for event in make_agent(fake.base_url).run(request(user("[[gated]] a b c")), Cancellation()):
        if isinstance(event, TextDelta):
            words.append(event.text)
            fake.gate.release()
    assert len(words) == 5 and "".join(words) == "You said: a b c", words


def test_tool_calls_are_relayed_piece_by_piece(fake):
    events = run(make_agent(fake.base_url), request(user("[[tools]] weather?")))
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls == [
        ToolCallDelta(0, "call_w1", "get_weather", ""),
        ToolCallDelta(0, None, None, '{"city":'),
        ToolCallDelta(0, None, None, ' "Paris"}'),
        ToolCallDelta(1, "call_t2", "get_time", "{}"),
    ]
    assert events[-1].reason == "tool_calls"


@pytest.mark.parametrize(
    "sent,expected",
    [
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("function_call", "tool_calls"),
        ("eos", "stop"),
    ],
)
def test_finish_reasons(fake, sent, expected):
    events = run(make_agent(fake.base_url), request(user(f"[[finish:{sent}]] x")))
    assert events[-1].reason == expected


def test_without_usage_or_done(fake):
    events = run(make_agent(fake.base_url), request(user("[[no-usage]] [[no-done]] x")))
    assert text_of(events) == "You said: x"
    assert events[-1] == Finish("stop", None)


def test_an_upstream_that_ignores_stream_true(fake):
    events = run(make_agent(fake.base_url), request(user("[[json]] [[tools]]")))
    assert isinstance(events[0], Started)
    assert [e.name for e in events if isinstance(e, ToolCallDelta)] == ["get_weather", "get_time"]
    assert events[-1].reason == "tool_calls" and events[-1].usage.completion_tokens == 5


# -- a JSON client: one completion from the upstream ------------------------------------------


def whole(req: AgentRequest) -> AgentRequest:
    """The same request for a client that takes the reply whole (a JSON response)."""
    return dataclasses.replace(req, stream=False)


def folded(events: list) -> dict:
    """What a reply comes to, however it was cut into events: the text, reasoning and
    refusal, each tool call whole, the log probabilities in order, reply info, finish."""
    reply: dict = {"text": "", "reasoning": "", "refusal": "", "calls": {}, "logprobs": []}
    for event in events:
        if isinstance(event, TextDelta):
            reply["text"] += event.text
        elif isinstance(event, ReasoningDelta):
            reply["reasoning"] += event.text
        elif isinstance(event, RefusalDelta):
            reply["refusal"] += event.text
        elif isinstance(event, ToolCallDelta):
            call = reply["calls"].setdefault(event.index, {"id": None, "name": None, "args": ""})
            call["id"] = call["id"] or event.id
            call["name"] = call["name"] or event.name
            call["args"] += event.arguments
        elif isinstance(event, ReplyInfo):
            reply["info"] = event
        elif isinstance(event, Finish):
            reply["finish"] = event
        logprobs = getattr(event, "logprobs", None)
        if logprobs is not None:
            reply["logprobs"] += [*(logprobs.content or ()), *(logprobs.refusal or ())]
    return reply


def test_a_json_client_asks_the_upstream_for_one_completion(fake):
    events = run(make_agent(fake.base_url), whole(request(user("hello big world"))))
    sent = fake.chat_requests()[-1]
    assert sent.body["stream"] is False and "stream_options" not in sent.body
    assert sent.headers["accept"] == "application/json"
    assert isinstance(events[0], Started)
    assert [e.text for e in events[1:-1]] == ["You said: hello big world"]
    assert events[-1].usage.total_tokens == 8  # 3 words sent, 5 in the reply


@pytest.mark.parametrize("ctype", ["text/plain", "none", "application/octet-stream"])
def test_a_whole_completion_is_read_whatever_its_content_type(fake, ctype):
    # Some servers label a stream: false answer text/plain, or not at all; only an
    # event stream is relayed as one.
    agent = make_agent(fake.base_url)
    labelled = run(agent, whole(request(user(f"[[ctype:{ctype}]] hello"))))
    as_json = run(agent, whole(request(user("[[ctype:application/json]] hello"))))
    assert text_of(labelled) == "You said: hello" and isinstance(labelled[-1], Finish)
    assert labelled[-1].usage is not None and folded(labelled) == folded(as_json)


def test_a_whole_completion_over_the_limit_is_refused_as_too_large(fake, monkeypatch):
    monkeypatch.setattr("chatcompat.agents.openai_upstream.MAX_JSON_BODY", 64)
    with pytest.raises(AgentError, match="larger than"):
        run(make_agent(fake.base_url), whole(request(user("hello big world"))))


def test_a_whole_tool_call_without_arguments_has_empty_ones_as_in_a_stream():
    functions = [
        {"name": "f", "arguments": None},
        {"name": "g"},
        {"name": "h", "arguments": {"a": 1}},
    ]
    tool_calls = [
        {"id": f"c{i}", "type": "function", "function": f} for i, f in enumerate(functions)
    ]
    message = {"role": "assistant", "tool_calls": tool_calls}
    document = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": message}]}
    calls = [e for e in completion_events(document, "up") if isinstance(e, ToolCallDelta)]
    assert [call.arguments for call in calls] == ["", "", '{"a": 1}']


@pytest.mark.parametrize(
    "text,params",
    [
        ("hello world", {}),
        ("[[tools]] weather?", {}),
        ('[[call:lookup:{"q": 1}]] x', {}),
        ("[[refuse]] no", {"logprobs": True, "top_logprobs": 2}),
        ("[[reasoning]] hi", {}),
        ("[[reasoning:reasoning]] hi", {}),
        ("[[details]] a b", {"logprobs": True}),
        ("[[finish:length]] a", {"service_tier": "priority"}),
        ("[[finish:function_call]] a", {}),
    ],
)
def test_the_same_reply_whole_or_streamed(fake, text, params):
    agent = make_agent(fake.base_url)
    streamed = run(agent, request(user(text), **params))
    complete = run(agent, whole(request(user(text), **params)))
    assert [r.body["stream"] for r in fake.chat_requests()] == [True, False]
    assert folded(complete) == folded(streamed)


@pytest.mark.parametrize(
    "directive",
    [
        "[[status:500]]",
        "[[plain:502]]",
        "[[html]]",
        "[[cut:2]] a b c",
        "[[malformed:1]] a b",
        "[[error-frame:2]] a b",
    ],
)
def test_failures_of_a_whole_completion_are_the_same_agent_errors(fake, directive):
    events = []
    with pytest.raises(AgentError) as caught:
        for event in make_agent(fake.base_url).run(whole(request(user(directive))), Cancellation()):
            events.append(event)
    assert type(caught.value) is AgentError
    # Nothing before the whole body was read: the client gets a plain HTTP error.
    assert events == []
    assert f"127.0.0.1:{fake.port}" in caught.value.message


@pytest.mark.parametrize("status", [400, 401, 429])
def test_a_whole_completion_refused_with_4xx_is_rejected_the_same(fake, status):
    agent = make_agent(fake.base_url, apiKey=KEY)
    refusals = []
    for req in (
        request(user(f"[[status:{status}]]")),
        whole(request(user(f"[[status:{status}]]"))),
    ):
        with pytest.raises(AgentRejected) as caught:
            run(agent, req)
        error = caught.value
        refusals.append((error.status, error.type, error.code, error.param, error.message))
    assert refusals[0] == refusals[1]


@pytest.mark.parametrize("directive", ["[[delay:1]] a b c", "[[stall:10]] a"])
@pytest.mark.live  # waits for the upstream to notice
def test_cancel_closes_the_connection_of_a_whole_completion(fake, directive):
    cancel = Cancellation()
    threading.Timer(0.3, cancel.cancel).start()
    events = run(make_agent(fake.base_url), whole(request(user(directive))), cancel)
    assert events == []
    (received,) = fake.wait_ended(1, timeout=5)
    # The upstream saw the connection go away before it had answered.
    assert received.client_closed


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,kind,code,param",
    [
        (400, "invalid_request_error", "invalid_value", "temperature"),
        (404, "invalid_request_error", "model_not_found", None),
        (429, "rate_limit_error", "rate_limit_exceeded", None),
    ],
)
def test_upstream_4xx_is_rejected_with_its_details(fake, status, kind, code, param):
    with pytest.raises(AgentRejected) as caught:
        run(make_agent(fake.base_url), request(user(f"[[status:{status}]]")))
    error = caught.value
    assert (error.status, error.type, error.code, error.param) == (status, kind, code, param)


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_auth_refusal_says_it_came_from_upstream(fake, status):
    agent = make_agent(fake.base_url, apiKey=KEY)
    with pytest.raises(AgentRejected) as caught:
        run(agent, request(user(f"[[status:{status}]]")))
    assert caught.value.status == status
    assert f"upstream 127.0.0.1:{fake.port}" in caught.value.message
    assert KEY not in caught.value.message


def test_upstream_quoting_the_key_is_redacted(fake):
    fake.knobs["status"] = 401
    agent = make_agent(fake.base_url, apiKey=KEY)
    import tests.fake_upstream as module

    original = module.ERRORS[401]
    module.ERRORS[401] = (f"Incorrect API key provided: {KEY}.", *original[1:])
    try:
        with pytest.raises(AgentRejected) as caught:
            run(agent, request(user("a")))
    finally:
        module.ERRORS[401] = original
    # The message keeps what the upstream said; the key it read is known to the
    # process's redactor, which every error envelope and log line goes through.
    assert KEY in caught.value.message
    assert redaction.redact(caught.value.message) == (
        f"The upstream 127.0.0.1:{fake.port} refused the gateway's credentials for agent"
        " 'up' (401): Incorrect API key provided: <redacted>."
    )


def test_4xx_without_an_openai_body(fake):
    with pytest.raises(AgentRejected) as caught:
        run(make_agent(fake.base_url), request(user("[[plain:404]]")))
    assert caught.value.status == 404
    assert caught.value.message == "Not Found (POST /v1/chat/completions)"


@pytest.mark.parametrize(
    "directive,words",
    [
        ("[[status:500]]", ""),
        ("[[status:503]]", ""),
        ("[[plain:502]]", ""),
        ("[[html]]", ""),
        ("[[cut:2]] a b c", "You said:"),
        ("[[malformed:1]] a b", "You"),
        ("[[error-frame:2]] a b", "You said:"),
    ],
)
def test_upstream_failures_are_agent_errors(fake, directive, words):
    events = []
    with pytest.raises(AgentError) as caught:
        for event in make_agent(fake.base_url).run(request(user(directive)), Cancellation()):
            events.append(event)
    assert type(caught.value) is AgentError
    assert text_of(events) == words
    # Started only once the upstream answered 200: before that, a plain HTTP error.
    assert [type(e) for e in events[:1]] == ([Started] if words else [])
    assert f"127.0.0.1:{fake.port}" in caught.value.message


def test_refused_connection_names_the_host(refused_url):
    with pytest.raises(AgentError) as caught:
        run(make_agent(refused_url, apiKey=KEY), request(user("a")))
    assert type(caught.value) is AgentError
    host = refused_url.split("//")[1].split("/")[0]
    assert caught.value.message == f"Cannot connect to the upstream {host}: Connection refused."


@pytest.mark.live  # waits out real timeouts
def test_connect_timeout(unanswered_url):
    agent = make_agent(unanswered_url, connectTimeoutSeconds=0.3)
    started = time.monotonic()
    with pytest.raises(AgentTimeout) as caught:
        run(agent, request(user("a")))
    assert 0.25 < time.monotonic() - started < 3
    assert "timed out after 0.3 s" in caught.value.message


@pytest.mark.live  # waits out real timeouts
def test_a_connect_never_outlasts_the_runs_timeout(unanswered_url):
    """A connect cannot be cut by a cancel: it ends by timeoutSeconds at the latest."""
    agent = make_agent(unanswered_url, timeout=0.3, connectTimeoutSeconds=10)
    started = time.monotonic()
    with pytest.raises(AgentTimeout) as caught:
        run(agent, request(user("a")))
    assert 0.25 < time.monotonic() - started < 3
    assert "timed out after 0.3 s" in caught.value.message


@pytest.mark.live  # waits out real timeouts
def test_read_timeout_before_headers_and_mid_stream(fake):
    agent = make_agent(fake.base_url, timeout=0.4)
    with pytest.raises(AgentTimeout):
        run(agent, request(user("[[stall:3]]")))
    events = []
    with pytest.raises(AgentTimeout):
        for event in agent.run(request(user("[[delay:3]] a")), Cancellation()):
            events.append(event)
    assert isinstance(events[0], Started)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.live  # the certificate is made by the openssl command
def test_https_upstream_verified_with_the_system_trust(certificate, monkeypatch):
    with FakeUpstream(tls=certificate) as fake:
        assert fake.base_url.startswith("https://")
        with pytest.raises(AgentError) as caught:
            run(make_agent(fake.base_url), request(user("a")))
        assert caught.value.message.startswith(f"TLS with the upstream 127.0.0.1:{fake.port}")
        # The trust store is read when the agent first runs (in the worker): a CA file
        # named by SSL_CERT_FILE is honoured.
        monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
        agent = make_agent(fake.base_url)
        assert text_of(run(agent, request(user("secure")))) == "You said: secure"
        cancel = Cancellation()
        threading.Timer(0.3, cancel.cancel).start()
        run(agent, request(user("[[stall:10]] a")), cancel)
        closed = fake.wait_ended(2)[-1]
        assert closed.client_closed and closed.ended - closed.started < 1.0


# -- cancellation and the pool ----------------------------------------------------------------


@pytest.mark.parametrize("directive", ["[[delay:1.5]] a b c", "[[stall:10]] a"])
@pytest.mark.live  # waits out real timeouts
def test_cancel_closes_the_upstream_connection_at_once(fake, directive):
    cancel = Cancellation()
    timer = threading.Timer(0.5, cancel.cancel)
    timer.start()
    started = time.monotonic()
    events = run(make_agent(fake.base_url), request(user(directive)), cancel)
    assert time.monotonic() - started < 1.0
    assert not any(isinstance(e, Finish) for e in events)
    (received,) = fake.wait_ended(1, timeout=2)
    assert received.client_closed
    assert received.ended - received.started < 1.0


def test_cancelled_before_the_request_sends_nothing(fake):
    cancel = Cancellation()
    cancel.cancel()
    agent = make_agent(fake.base_url)
    assert run(agent, request(user("a")), cancel) == []
    # A request sent anyway would reach the fake before the next one has been answered.
    assert text_of(run(agent, request(user("after")))) == "You said: after"
    (only,) = fake.wait_ended(1)
    assert only.body["messages"][-1]["content"] == "after"
    assert len(fake.chat_requests()) == 1


def test_connections_are_reused_but_never_after_an_aborted_stream(fake):
    agent = make_agent(fake.base_url)
    run(agent, request(user("one")))
    run(agent, request(user("two")))
    with pytest.raises(AgentError):
        run(agent, request(user("[[cut:1]] three")))
    run(agent, request(user("four")))
    cancel = Cancellation()
    threading.Timer(0.2, cancel.cancel).start()
    run(agent, request(user("[[delay:0.5]] five")), cancel)
    assert text_of(run(agent, request(user("six")))) == "You said: six"
    ports = [r.client_port for r in fake.chat_requests()]
    assert ports[0] == ports[1] == ports[2]
    assert ports[3] != ports[2] and ports[3] == ports[4]
    assert ports[5] != ports[4]


def test_a_pooled_connection_the_upstream_closed_is_not_used(fake):
    agent = make_agent(fake.base_url)
    run(agent, request(user("[[close]] one")))
    (first,) = fake.wait_ended(1)
    wait_until(lambda: first.client_port in fake.closed_ports, 5, "the upstream's close")
    assert text_of(run(agent, request(user("two")))) == "You said: two"
    first, second = fake.chat_requests()
    assert first.client_port != second.client_port


def test_concurrent_runs_share_the_agent(fake):
    agent = make_agent(fake.base_url)
    results: dict[int, str] = {}

    def one(index: int) -> None:
        results[index] = text_of(run(agent, request(user(f"[[delay:0.05]] n{index}"))))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {i: f"You said: n{i}" for i in range(8)}
    assert len({r.client_port for r in fake.chat_requests()}) == 8
    assert len(agent._pool._idle) == 8


# -- through the gateway (Flask test client) ------------------------------------------------------


@pytest.fixture
def gateway(make_app, fake, refused_url):
    agents = (
        AgentConfig(
            id="up",
            backend="openai",
            default=True,
            system_prompt="You are up.",
            options={"baseUrl": fake.base_url, "model": "fake-model", "apiKey": KEY},
            timeout_seconds=5,
        ),
        AgentConfig(
            id="dead",
            backend="openai",
            options={"baseUrl": refused_url, "model": "m"},
        ),
        AgentConfig(
            id="slow",
            backend="openai",
            options={"baseUrl": fake.base_url, "model": "m"},
            timeout_seconds=0.5,
        ),
    )
    return make_app(agents=agents, default_agent_id="up").test_client()


def post(client, body: dict, headers: dict | None = None):
    return client.post(CHAT, data=json.dumps(body), headers={**AUTH, **(headers or {})})


def test_gateway_json_completion(gateway, fake):
    response = post(gateway, {"model": "openclaw", "messages": [user("hi there")]})
    assert response.status_code == 200
    body = response.get_json()
    check_completion(body)
    assert body["choices"][0]["message"]["content"] == "You said: hi there"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    sent = fake.chat_requests()[0]
    assert sent.headers["authorization"] == f"Bearer {KEY}"  # never the gateway's token
    assert TOKEN not in json.dumps(sent.headers)


def test_gateway_stream_with_usage(gateway):
    body = {"stream": True, "stream_options": {"include_usage": True}, "messages": [user("a b")]}
    response = post(gateway, body)
    assert response.status_code == 200
    chunks, _ = parse_sse(response.get_data())
    assert stream_text(chunks) == "You said: a b"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def test_gateway_forwards_the_request_params(gateway, fake):
    body = {
        "messages": [user("a")],
        "temperature": 0.3,
        "max_tokens": 100,
        "max_completion_tokens": 20,
        "stop": "END",
        "seed": 1,
        "n": 1,
    }
    post(gateway, body)
    sent = fake.chat_requests()[0].body
    assert sent["temperature"] == 0.3 and sent["max_tokens"] == 20
    assert sent["stop"] == ["END"] and sent["seed"] == 1 and "n" not in sent


def test_gateway_tool_call_round_trip(gateway, fake):
    headers = {"x-openclaw-session-key": "tools"}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    question = user("[[tools]] weather in Paris?")
    first = post(gateway, {"messages": [question], "tools": tools}, headers).get_json()
    check_completion(first)
    message = first["choices"][0]["message"]
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert [c["function"]["arguments"] for c in message["tool_calls"]] == [
        '{"city": "Paris"}',
        "{}",
    ]
    results = [
        {"role": "tool", "tool_call_id": "call_w1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_t2", "content": "noon"},
    ]
    follow_up = {"stream": True, "tools": tools, "messages": [question, message, *results]}
    chunks, _ = parse_sse(post(gateway, follow_up, headers).get_data())
    assert stream_text(chunks) == "Tool result: noon"
    sent = fake.chat_requests()[1].body
    assert sent["tools"] == tools
    assert sent["messages"] == [
        {"role": "system", "content": "You are up."},
        question,
        {"role": "assistant", "content": None, "tool_calls": message["tool_calls"]},
        *results,
    ]


def test_gateway_stream_relays_tool_call_pieces(gateway):
    chunks, _ = parse_sse(
        post(gateway, {"stream": True, "messages": [user("[[tools]]")]}).get_data()
    )
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert [c.get("id") for c in calls] == ["call_w1", None, None, "call_t2"]
    assert "".join(c["function"]["arguments"] for c in calls if c["index"] == 0) == (
        '{"city": "Paris"}'
    )
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_gateway_history_is_sent_once_in_order(gateway, fake):
    headers = {"x-openclaw-session-key": "chat"}
    conversation = [{"role": "developer", "content": "Dev says."}]
    for text in ("one", "two", "three"):
        conversation.append(user(text))
        reply = post(gateway, {"messages": conversation}, headers).get_json()
        conversation.append(reply["choices"][0]["message"])
    sent = fake.chat_requests()[2].body["messages"]
    assert sent == [
        {"role": "system", "content": "You are up.\n\nDev says."},
        user("one"),
        {"role": "assistant", "content": "You said: one"},
        user("two"),
        {"role": "assistant", "content": "You said: two"},
        user("three"),
    ]


def test_gateway_image_parts_reach_the_upstream(gateway, fake):
    parts = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    post(gateway, {"messages": [{"role": "user", "content": parts}]})
    assert fake.chat_requests()[0].body["messages"][1] == {"role": "user", "content": parts}


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429])
@pytest.mark.parametrize("stream", [False, True])
def test_gateway_upstream_4xx_same_status_before_any_stream(gateway, status, stream):
    response = post(gateway, {"stream": stream, "messages": [user(f"[[status:{status}]]")]})
    assert response.status_code == status
    assert response.content_type == "application/json"
    error = check_error(response.get_json())
    if status == 400:
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error",
            "invalid_value",
            "temperature",
        )
    if status in (401, 403):
        assert "upstream" in error["message"]
    assert KEY not in response.get_data(as_text=True)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "model,text,status,code",
    [
        ("openclaw/dead", "a", 502, "upstream_error"),
        ("openclaw", "[[status:500]]", 502, "upstream_error"),
        ("openclaw", "[[html]]", 502, "upstream_error"),
        pytest.param(
            "openclaw/slow", "[[stall:3]]", 504, "timeout", marks=pytest.mark.live, id="slow"
        ),  # waits out a real timeout
    ],
)
def test_gateway_failures_before_the_stream_are_http_errors(
    gateway, stream, model, text, status, code
):
    response = post(gateway, {"stream": stream, "model": model, "messages": [user(text)]})
    assert response.status_code == status
    check_error(response.get_json(), code=code)


def test_gateway_mid_stream_failure_is_an_error_frame_and_stores_nothing(gateway, fake):
    headers = {"x-openclaw-session-key": "broken"}
    post(gateway, {"messages": [user("first")]}, headers)
    body = {"stream": True, "messages": [user("[[cut:3]] lost words here")]}
    chunks, frames = parse_sse(post(gateway, body, headers).get_data())
    assert stream_text(chunks) == "You said: lost"
    assert chunks[-1]["error"]["code"] == "upstream_error" and frames[-1] == "data: [DONE]"
    post(gateway, {"messages": [user("[[error-frame:1]] also lost")]}, headers)
    post(gateway, {"messages": [user("again")]}, headers)
    sent = fake.chat_requests()[-1].body["messages"]
    assert sent == [
        {"role": "system", "content": "You are up."},
        user("first"),
        {"role": "assistant", "content": "You said: first"},
        user("again"),
    ]


# -- chatcompat init --upstream ---------------------------------------------------------------


def init(tmp_path, capsys, *argv: str) -> tuple[int, str, str]:
    from chatcompat import cli

    status = cli.main(["init", "--path", str(tmp_path / "c.json5"), *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_init_upstream_writes_an_openai_agent_that_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MY_UPSTREAM_KEY", raising=False)
    status, out, _ = init(
        tmp_path,
        capsys,
        *("--upstream", "http://127.0.0.1:11434/v1/", "--model", "llama3.2"),
        *("--api-key-env", "MY_UPSTREAM_KEY"),
    )
    assert status == 0
    assert "Set MY_UPSTREAM_KEY" in out and "curl" in out
    from chatcompat.config import load_settings

    settings = load_settings(str(tmp_path / "c.json5"), environ={})
    (agent,) = settings.agents
    assert (agent.id, agent.backend, agent.default) == ("main", "openai", True)
    assert agent.options == {
        "baseUrl": "http://127.0.0.1:11434/v1",
        "model": "llama3.2",
        "apiKeyEnv": "MY_UPSTREAM_KEY",
    }


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--upstream", "http://h/v1"], "--upstream needs --model"),
        (["--model", "m"], "--model and --api-key-env go with --upstream"),
        (["--upstream", "ftp://h", "--model", "m"], "chatcompat: --upstream: 'ftp://h'"),
        (["--upstream", "http://h/v1", "--model", "m", "--api-key-env", "1X"], "--api-key-env:"),
    ],
)
def test_init_upstream_refuses_bad_options_before_writing(tmp_path, capsys, argv, message):
    status, _, err = init(tmp_path, capsys, *argv)
    assert status == 2 and message in err
    assert not (tmp_path / "c.json5").exists()


# -- every field the client sends, everything the upstream reports -------------------------

# One value per optional field the backend takes; each must reach the upstream verbatim.
FORWARDED = {
    "parallel_tool_calls": False,
    "logit_bias": {"50256": -100, "15": 7},
    "logprobs": True,
    "reasoning_effort": "low",
    "service_tier": "flex",
    "metadata": {"team": "search", "ticket": "T-1"},
    "prediction": {"type": "content", "content": "You said: a"},
    "verbosity": "low",
    "store": True,
    "safety_identifier": "user-hash-1",
    "prompt_cache_key": "cache-1",
    "prompt_cache_retention": "24h",
    "prompt_cache_options": {"ttl": "30m", "mode": "implicit"},
    "response_format": {"type": "json_object"},
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "top_p": 0.9,
}
TOOLS_SENT = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


@pytest.mark.parametrize("field", sorted(FORWARDED))
def test_gateway_forwards_each_field_verbatim(gateway, fake, field):
    response = post(gateway, {"messages": [user("a")], field: FORWARDED[field]})
    assert response.status_code == 200, response.get_data()
    assert fake.chat_requests()[0].body[field] == FORWARDED[field]


def test_gateway_forwards_them_all_at_once_with_tools(gateway, fake):
    body = {
        # The fake calls tools when told to: tool_choice "required" is then satisfied.
        "messages": [user("a [[tools]]")],
        **FORWARDED,
        "top_logprobs": 3,
        "tools": TOOLS_SENT,
        "tool_choice": "required",
        "modalities": ["text"],
    }
    response = post(gateway, body)
    assert response.status_code == 200, response.get_data()
    sent = fake.chat_requests()[0].body
    for field, value in FORWARDED.items():
        assert sent[field] == value, field
    assert sent["top_logprobs"] == 3 and sent["tools"] == TOOLS_SENT
    assert sent["tool_choice"] == "required"
    # Gateway-level fields are not the upstream's business.
    assert "modalities" not in sent and "user" not in sent
    # A JSON client's run asks for one completion; a streaming client's for a stream.
    assert sent["stream"] is False and "stream_options" not in sent
    assert post(gateway, {**body, "stream": True}).status_code == 200
    streamed = fake.chat_requests()[-1].body
    assert streamed["stream"] is True and streamed["stream_options"] == {"include_usage": True}


def test_provider_extensions_reach_the_upstream_as_sent(gateway, fake):
    body = {"messages": [user("a")], "top_k": 40, "min_p": 0.05, "chat_template_kwargs": {"x": 1}}
    assert post(gateway, body).status_code == 200
    sent = fake.chat_requests()[-1].body
    assert sent["top_k"] == 40 and sent["min_p"] == 0.05
    assert sent["chat_template_kwargs"] == {"x": 1}


@pytest.mark.parametrize(
    "extra,param,code",
    [
        ({"audio": {"voice": "ash", "format": "mp3"}}, "audio", "unsupported_parameter"),
        ({"modalities": ["text", "audio"]}, "modalities", "unsupported_value"),
        ({"functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
        ({"function_call": {"name": "f"}}, "function_call", "unsupported_parameter"),
        ({"web_search_options": {}}, "web_search_options", "unsupported_parameter"),
        (
            {"moderation": {"model": "omni-moderation-latest"}},
            "moderation",
            "unsupported_parameter",
        ),
        ({"top_logprobs": 2}, "top_logprobs", "invalid_value"),
        ({"logit_bias": {"15": 101}}, "logit_bias.15", "invalid_value"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "invalid_value"),
        (
            {"stream": True, "stream_options": {"include_obfuscation": True}},
            "stream_options.include_obfuscation",
            "unsupported_value",
        ),
    ],
)
def test_gateway_refuses_before_any_upstream_request(gateway, fake, extra, param, code):
    response = post(gateway, {"messages": [user("a")], **extra})
    assert response.status_code == 400
    error = check_error(response.get_json(), code=code)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert fake.chat_requests() == []


@pytest.mark.parametrize("upstream_json", [False, True], ids=["upstream-sse", "upstream-json"])
def test_gateway_relays_logprobs_in_json(gateway, upstream_json):
    text = "[[json]] a b" if upstream_json else "a b"
    body = {"messages": [user(text)], "logprobs": True, "top_logprobs": 2}
    reply = post(gateway, body).get_json()
    check_completion(reply)
    logprobs = reply["choices"][0]["logprobs"]
    assert logprobs["refusal"] is None
    assert [e["token"] for e in logprobs["content"]] == ["You", " said:", " a", " b"]
    first = logprobs["content"][0]
    assert first["bytes"] == list(b"You") and first["logprob"] == -0.25
    assert [e["token"] for e in first["top_logprobs"]] == ["You", "You#1"]


def test_gateway_relays_logprobs_per_stream_chunk(gateway):
    body = {"stream": True, "messages": [user("a b")], "logprobs": True, "top_logprobs": 1}
    chunks, _ = parse_sse(post(gateway, body).get_data())  # each chunk schema-checked
    pieces = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["delta"]]
    content = [p for p in pieces if p["delta"].get("content")]
    assert [p["delta"]["content"] for p in content] == ["You", " said:", " a", " b"]
    for piece in content:  # each on the chunk that carried its text, as received
        (entry,) = piece["logprobs"]["content"]
        assert entry["token"] == piece["delta"]["content"]
        assert len(entry["top_logprobs"]) == 1
    assert "logprobs" not in pieces[0]  # the role chunk


def test_gateway_without_logprobs_has_none(gateway):
    reply = post(gateway, {"messages": [user("a")]}).get_json()
    assert reply["choices"][0]["logprobs"] is None
    chunks, _ = parse_sse(post(gateway, {"stream": True, "messages": [user("a")]}).get_data())
    assert not any("logprobs" in c["choices"][0] for c in chunks if c["choices"])


DETAILS = {
    "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 3,
        "accepted_prediction_tokens": 1,
        "rejected_prediction_tokens": 0,
    },
}


@pytest.mark.parametrize("text", ["[[details]] a b", "[[details]] [[json]] a b"])
def test_gateway_relays_usage_details(gateway, text):
    reply = post(gateway, {"messages": [user(text)]}).get_json()
    check_completion(reply)
    usage = reply["usage"]
    assert {k: v for k, v in usage.items() if k.endswith("_details")} == DETAILS
    assert usage["completion_tokens"] == 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + 4
    body = {"stream": True, "stream_options": {"include_usage": True}, "messages": [user(text)]}
    chunks, _ = parse_sse(post(gateway, body).get_data())
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == reply["usage"]


def test_gateway_relays_service_tier_and_fingerprint(gateway):
    body = {"messages": [user("a")], "service_tier": "auto"}
    reply = post(gateway, body).get_json()
    check_completion(reply)
    assert reply["service_tier"] == "default" and reply["system_fingerprint"] == "fp_fake"
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    chunks, _ = parse_sse(post(gateway, stream).get_data())
    # From the first chunk after the upstream reported them: the deltas, finish and usage.
    assert all(c["service_tier"] == "default" for c in chunks[1:])
    assert all(c["system_fingerprint"] == "fp_fake" for c in chunks[1:])
    plain = post(gateway, {"messages": [user("a")]}).get_json()
    assert "service_tier" not in plain and "system_fingerprint" not in plain


def test_agent_events_carry_logprobs_usage_details_and_reply_info(fake):
    from chatcompat.agents.base import Logprobs
    from chatcompat.agents.base import ReplyInfo

    events = run(
        make_agent(fake.base_url),
        request(user("[[details]] a"), logprobs=True, service_tier="priority"),
    )
    infos = [e for e in events if isinstance(e, ReplyInfo)]
    assert infos == [ReplyInfo("priority", "fp_fake")]  # once: it did not change
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert all(isinstance(d.logprobs, Logprobs) for d in deltas)
    assert deltas[0].logprobs.content[0]["top_logprobs"] == []
    finish = events[-1]
    assert finish.usage.prompt_tokens_details == DETAILS["prompt_tokens_details"]
    assert finish.usage.completion_tokens_details == DETAILS["completion_tokens_details"]


def test_malformed_logprobs_are_a_malformed_chunk():
    from chatcompat.agents.openai_replies import chunk_events as _chunk_events

    chunk = {"choices": [{"index": 0, "delta": {"content": "x"}, "logprobs": {"content": [5]}}]}
    with pytest.raises((TypeError, ValueError, AttributeError)):
        list(_chunk_events(chunk))
    lenient = {"content": [{"token": "x", "logprob": -1}], "refusal": None}
    chunk["choices"][0]["logprobs"] = lenient  # vLLM may leave out bytes / top_logprobs
    (delta,) = _chunk_events(chunk)
    assert delta.logprobs.content == [
        {"token": "x", "logprob": -1, "bytes": None, "top_logprobs": []}
    ]


@pytest.mark.parametrize("upstream_json", [False, True], ids=["upstream-sse", "upstream-json"])
def test_gateway_relays_a_refusal_and_its_logprobs(gateway, upstream_json):
    text = "[[refuse]] [[json]] no" if upstream_json else "[[refuse]] no"
    body = {"messages": [user(text)], "logprobs": True}
    reply = post(gateway, body).get_json()
    check_completion(reply)
    message = reply["choices"][0]["message"]
    assert message["refusal"] == "You said: no" and not message["content"]
    logprobs = reply["choices"][0]["logprobs"]
    assert logprobs["content"] is None
    assert [e["token"] for e in logprobs["refusal"]] == ["You", " said:", " no"]
    if not upstream_json:
        chunks, _ = parse_sse(post(gateway, {**body, "stream": True}).get_data())
        pieces = [c["choices"][0] for c in chunks if c["choices"]]
        refusals = [p for p in pieces if p["delta"].get("refusal")]
        assert [p["delta"]["refusal"] for p in refusals] == ["You", " said:", " no"]
        assert [p["logprobs"]["refusal"][0]["token"] for p in refusals] == ["You", " said:", " no"]
        assert not any(p["delta"].get("content") for p in pieces)


# -- reasoning (reasoning_content, OpenRouter's reasoning) ------------------------------------

THOUGHT = REASONING  # what the fake reasons


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
@pytest.mark.parametrize("upstream_json", [False, True], ids=["upstream-sse", "upstream-json"])
def test_upstream_reasoning_becomes_reasoning_events_before_the_text(fake, field, upstream_json):
    text = f"[[reasoning:{field}]] hi" + (" [[json]]" if upstream_json else "")
    events = run(make_agent(fake.base_url), request(user(text)))
    thoughts = [i for i, e in enumerate(events) if isinstance(e, ReasoningDelta)]
    assert "".join(events[i].text for i in thoughts) == THOUGHT
    assert len(thoughts) == (1 if upstream_json else len(THOUGHT.split()))
    assert max(thoughts) < min(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert text_of(events) == "You said: hi"


def test_a_delta_with_both_reasoning_fields_is_read_once():
    # Some servers (chutes.ai) send the same text in both fields.
    chunk = {"choices": [{"index": 0, "delta": {"reasoning_content": "a", "reasoning": "a"}}]}
    assert list(chunk_events(chunk)) == [ReasoningDelta("a")]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_gateway_relays_reasoning_and_never_stores_it(gateway, fake, stream):
    headers = {"x-openclaw-session-key": f"think-{stream}"}
    body = {"messages": [user("[[reasoning]] hi")], "stream": stream}
    response = post(gateway, body, headers)
    if stream:
        chunks, _ = parse_sse(response.get_data())
        reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks)
    else:
        check_completion(response.get_json())
        reasoning = response.get_json()["choices"][0]["message"]["reasoning_content"]
    assert reasoning == THOUGHT
    post(gateway, {"messages": [user("next")]}, headers)
    history = fake.chat_requests()[1].body["messages"]
    assert history[2] == {"role": "assistant", "content": "You said: hi"}


def test_gateway_sends_no_reasoning_a_client_sends_back(gateway, fake):
    answer = {"role": "assistant", "content": "You said: hi", "reasoning_content": THOUGHT}
    post(gateway, {"messages": [user("hi"), answer, user("more")]})
    assert fake.chat_requests()[0].body["messages"][2] == {
        "role": "assistant",
        "content": "You said: hi",
    }


def test_gateway_drops_reasoning_for_an_agent_that_says_so(make_app, fake):
    agent = AgentConfig(
        id="quiet",
        backend="openai",
        default=True,
        reasoning="drop",
        options={"baseUrl": fake.base_url, "model": "m"},
    )
    client = make_app(agents=(agent,), default_agent_id="quiet").test_client()
    body = {"messages": [user("[[reasoning]] hi")]}
    assert "reasoning_content" not in post(client, body).get_json()["choices"][0]["message"]
    raw = post(client, {**body, "stream": True}).get_data()
    assert b"reasoning" not in raw and stream_text(parse_sse(raw)[0]) == "You said: hi"
