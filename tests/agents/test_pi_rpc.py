"""The ``pi`` backend with the real pi (``tests/pi_support.py``) in front of the fake
upstream: the agent on its own, then the gateway through the Flask test client.

Warm processes are shared within the module (pi takes about a second to start); after
every test no zombie may be left and every pi process of this module must belong to a
pool that is still open.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import signal
import sys
import threading
import time
import typing as t
import uuid

import pytest

from chatcompat import create_app
from chatcompat.agents import backend_class
from chatcompat.agents.base import AgentError
from chatcompat.agents.base import AgentRejected
from chatcompat.agents.base import AgentRequest
from chatcompat.agents.base import AgentUnavailable
from chatcompat.agents.base import Cancellation
from chatcompat.agents.base import Finish
from chatcompat.agents.base import InputImage
from chatcompat.agents.base import ReasoningDelta
from chatcompat.agents.base import Started
from chatcompat.agents.base import TextDelta
from chatcompat.agents.base import Usage
from chatcompat.agents.pi import pool as pi_pool
from chatcompat.agents.pi import turn as pi_turn
from chatcompat.agents.pi.agent import BASE_ENV
from chatcompat.agents.pi.agent import IMAGE_ONLY_PROMPT
from chatcompat.agents.pi.agent import PiAgent
from chatcompat.agents.pi.process import parse_line
from chatcompat.agents.pi.turn import session_file
from chatcompat.config import ConfigError
from chatcompat.config import settings_from_document
from chatcompat.history import flatten_prompt
from chatcompat.sessions import SQLiteStore
from chatcompat.settings import AgentConfig
from chatcompat.settings import ImagePolicy
from chatcompat.settings import RateLimit
from chatcompat.settings import Settings
from tests.conftest import AUTH
from tests.conftest import TOKEN
from tests.fake_upstream import REASONING
from tests.fake_upstream import FakeUpstream
from tests.image_server import PNG
from tests.image_server import ImageServer
from tests.loopback_pi import LoopbackPiAgent
from tests.pi_support import check_no_leftovers
from tests.pi_support import pi_command
from tests.pi_support import processes
from tests.polling import wait_until
from tests.wire import check_completion
from tests.wire import check_error
from tests.wire import parse_sse
from tests.wire import stream_text

PREFIX = f"pitest{uuid.uuid4().hex[:6]}"
MARKER = f"chatcompat-pi-{PREFIX}"  # in the environment of every pi of this module (its dirs)
CHAT = "/v1/chat/completions"
_OPEN: list[PiAgent] = []


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def request(*messages: dict, history: int = 0, system: str | None = None) -> AgentRequest:
    return AgentRequest(
        agent_id="pi",
        session_key="agent:pi:k",
        messages=list(messages),
        history_count=history,
        system_prompt=system,
    )


def make_agent(name: str, system_prompt: str | None = None, **options) -> PiAgent:
    config = AgentConfig(
        id=f"{PREFIX}-{name}", backend="pi", options=options, system_prompt=system_prompt
    )
    agent = PiAgent(config)
    _OPEN.append(agent)
    return agent


def close(agent: PiAgent) -> None:
    agent.close()
    _OPEN.remove(agent)


def text_of(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.fixture(scope="module")
def command() -> list[str]:
    return pi_command()


@pytest.fixture(scope="module")
def fake(module_fake: FakeUpstream) -> FakeUpstream:
    """One fake upstream for the whole module (tests/conftest.py)."""
    return module_fake


@pytest.fixture(scope="module")
def agent(command, fake):
    """The shared warm agent: one process, runs wait up to 1 s for it."""
    options = {"command": command, "baseUrl": fake.base_url, "model": "fake-model"}
    yield make_agent("a", "You are Pi.", **options, poolSize=1, queueTimeoutSeconds=1)


@pytest.fixture(scope="module", autouse=True)
def nothing_left_at_the_end():
    yield
    while _OPEN:
        _OPEN.pop().close()
    check_no_leftovers(MARKER, set(), os.getpid())


@pytest.fixture(autouse=True)
def nothing_left_after_each_test():
    yield
    allowed = {pid for agent in _OPEN for pid in agent.pool_stats()["pids"]}
    check_no_leftovers(MARKER, allowed, os.getpid())


# -- configuration -------------------------------------------------------------------------


def load(agent: dict):
    document = {"agents": {"list": [{"id": "p", "backend": "pi", **agent}]}}
    return settings_from_document(document, environ={"CHATCOMPAT_GATEWAY_TOKEN": TOKEN})


def test_registered_and_options_validated():
    assert backend_class("pi") is PiAgent
    settings = load(
        {
            "command": ["/opt/pi/bin/pi"],
            "baseUrl": "http://127.0.0.1:8000/v1",
            "model": "qwen",
            "apiKeyEnv": "QWEN_KEY",
            "cwd": "/srv/work",
            "env": {"LOG": "1"},
            "passEnv": ["ANTHROPIC_API_KEY"],
            "tools": ["read", "ls"],
            "poolSize": 3,
            "startTimeoutSeconds": 20,
            "queueTimeoutSeconds": 5,
            "systemPrompt": "Be brief.",
        }
    )
    (config,) = settings.agents
    assert config.options["poolSize"] == 3 and config.system_prompt == "Be brief."
    assert "systemPrompt" not in config.options
    for bad, key in [
        ({"baseUrl": "http://x/v1"}, "model"),
        ({"apiKey": "k"}, "baseUrl"),
        ({"poolSize": 0}, "poolSize"),
        ({"command": []}, "command"),
        ({"env": {"A": 1}}, "env"),
        ({"colour": "red"}, "colour"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load(bad)
        assert key in " ".join(caught.value.problems), (bad, caught.value.problems)


def test_the_models_x_openclaw_model_may_choose_are_in_pis_models_json():
    (config,) = load(
        {"baseUrl": "http://127.0.0.1:8000/v1", "model": "own", "models": ["big", "own"],
         "modelsJson": {"providers": {"other": {"baseUrl": "http://o/v1"}}}}
    ).agents  # fmt: skip
    written = PiAgent(config)._models_json()
    assert [m["id"] for m in written["providers"]["chatcompat"]["models"]] == ["own", "big"]
    assert written["providers"]["other"] == {"baseUrl": "http://o/v1"}
    (old_name,) = load({"models": {"providers": {}}}).agents  # pi's models.json, old name
    assert old_name.models == () and PiAgent(old_name)._models_json() == {"providers": {}}


def test_a_model_override_needs_a_provider_and_a_model():
    for options in ({}, {"model": "m"}, {"provider": "p"}):
        with pytest.raises(ConfigError) as caught:
            load({**options, "models": ["big"]})  # pi's own default model: no --model
        assert caught.value.problems == [
            "agents.list[0].models: the pi backend runs a model chosen with x-openclaw-model"
            " only with 'model' and 'provider' (or 'baseUrl') set"
        ]
    load({"provider": "p", "model": "m", "models": ["big"]})
    (config,) = load({}).agents  # and at run time, should a request get there
    with pytest.raises(AgentError) as caught:
        PiAgent(config)._switch_model(t.cast(t.Any, None), "big")
    assert "needs 'provider' and 'model'" in caught.value.message


@pytest.mark.live
def test_nothing_starts_before_the_first_run(command, fake):
    agent = make_agent("lazy", command=command, baseUrl=fake.base_url, model="m")
    assert agent.pool_stats() == {"pids": [], "idle": []}
    close(agent)


# -- lines from pi -----------------------------------------------------------------------------


def test_delta_lines_are_cut_before_their_snapshots():
    snapshot = json.dumps({"role": "assistant", "content": [{"type": "text", "text": "x" * 5000}]})
    event = '{"type":"text_delta","contentIndex":0,"delta":"a \\"partial\\": b",'
    line = f'{{"type":"message_update","assistantMessageEvent":{event}"partial":{snapshot}}},'
    line += f'"message":{snapshot}}}\n'
    parsed = parse_line(line.encode())
    assert parsed == {
        "type": "message_update",
        "assistantMessageEvent": {
            "type": "text_delta",
            "contentIndex": 0,
            "delta": 'a "partial": b',
        },
    }
    # A "partial" key nested deeper (in tool call arguments): the whole line is parsed.
    nested = '{"type":"message_update","assistantMessageEvent":{"type":"toolcall_end",'
    nested += '"toolCall":{"arguments":{"x":1,"partial":2}},"partial":{}},"message":{}}'
    assert parse_line(nested.encode())["assistantMessageEvent"]["toolCall"]["arguments"] == {
        "x": 1,
        "partial": 2,
    }
    assert parse_line(b'{"type":"agent_end","messages":[' + b"9," * 1000 + b"9]}") == {
        "type": "agent_end"
    }
    assert parse_line(b'{"type":"turn_end","message":{}}') is None
    assert parse_line(b"not json\n") is None


def test_session_file_holds_the_history():
    history = [
        user("q1"),
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "r1"},
        user("and then?"),
        {"role": "assistant", "content": "a2"},
    ]  # fmt: skip
    lines = [json.loads(line) for line in session_file(history, "/w", "prov", "mod").splitlines()]
    assert lines[0]["type"] == "session" and lines[0]["cwd"] == "/w"
    entries = lines[1:]
    assert [e["parentId"] for e in entries] == [None, *[e["id"] for e in entries[:-1]]]
    messages = [(e["message"]["role"], e["message"]["content"][0]["text"]) for e in entries]
    assert messages == [
        ("user", "q1"),
        ("assistant", "tool_call id=c1 name=f arguments={}"),
        ("user", "Tool:c1: r1\n\nand then?"),
        ("assistant", "a2"),
    ]
    assert entries[1]["message"]["provider"] == "prov" and entries[1]["message"]["model"] == "mod"


# -- runs ------------------------------------------------------------------------------------


@pytest.mark.live
def test_run_streams_text_and_real_usage(agent, fake):
    events = list(agent.run(request(user("hello there pi"), system="You are Pi."), Cancellation()))
    assert isinstance(events[0], Started)
    assert text_of(events) == "You said: hello there pi"
    assert len([e for e in events if isinstance(e, TextDelta)]) == 5  # one per word
    # The fake counts words: the system message (pi adds date and cwd lines) + 3.
    sent = fake.chat_requests()[-1].body
    system = sent["messages"][0]["content"]
    assert system.startswith("You are Pi.\nCurrent date: ")
    prompt_words = len(system.split()) + 3
    assert events[-1] == Finish("stop", Usage(prompt_words, 5, prompt_words + 5))
    assert sent["model"] == "fake-model" and "tools" not in sent
    assert sent["messages"][1:] == [{"role": "user", "content": [
        {"type": "text", "text": "hello there pi"}]}]  # fmt: skip


@pytest.mark.live
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_thinking_becomes_reasoning_before_the_text(agent, fake, field):
    # The fake reasons first; pi reads either field as thinking (thinking_delta).
    events = list(agent.run(request(user(f"[[reasoning:{field}]] hi")), Cancellation()))
    thoughts = [i for i, e in enumerate(events) if isinstance(e, ReasoningDelta)]
    assert "".join(events[i].text for i in thoughts) == REASONING
    assert max(thoughts) < min(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert text_of(events) == "You said: hi"


@pytest.mark.live
def test_cache_reads_reported_by_the_upstream_reach_the_usage(agent, fake):
    # The fake reports prompt_tokens_details.cached_tokens 2; pi calls it cacheRead.
    events = list(agent.run(request(user("[[details]] cached")), Cancellation()))
    usage = events[-1].usage
    assert usage.prompt_tokens_details == {"cached_tokens": 2}
    assert usage.completion_tokens_details is None  # pi does not count reasoning apart


@pytest.mark.live
def test_history_and_system_prompt_change_per_run_on_one_process(agent, fake):
    (pid,) = agent.pool_stats()["pids"]
    history = [user("q1"), {"role": "assistant", "content": "a1"}]
    turn = [user("q2")]
    run = agent.run(request(*history, *turn, history=2, system="Be brief."), Cancellation())
    events = list(run)
    assert text_of(events) == "You said: q2"
    sent = fake.chat_requests()[-1].body["messages"]
    assert sent[0]["content"].startswith("Be brief.\n")
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", [{"type": "text", "text": "q1"}]),
        ("assistant", "a1"),
        ("user", [{"type": "text", "text": "q2"}]),
    ]
    # The next run starts from its own history only: nothing of the previous one.
    list(agent.run(request(user("fresh")), Cancellation()))
    sent = fake.chat_requests()[-1].body["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]
    assert not sent[0]["content"].startswith("Be brief.")  # pi's own prompt without one
    assert agent.pool_stats() == {"pids": [pid], "idle": [pid]}  # the same warm process


@pytest.mark.live
def test_a_turn_of_several_messages_is_sent_flattened(agent, fake):
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ],
    }
    turn = [{"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": "noon"}]  # fmt: skip
    list(agent.run(request(user("q"), assistant, *turn, history=2), Cancellation()))
    sent = fake.chat_requests()[-1].body["messages"]
    assert sent[-1]["content"] == [{"type": "text", "text": flatten_prompt(turn)}]
    assert "[Current message - respond to this]\nTool:c2: noon" in flatten_prompt(turn)


@pytest.mark.live
def test_upstream_failure_before_any_text_raises(agent):
    with pytest.raises(AgentError) as caught:
        list(agent.run(request(user("[[status:500]] boom")), Cancellation()))
    assert "500" in caught.value.message
    assert not isinstance(caught.value, AgentUnavailable)
    assert agent.pool_stats()["idle"]  # the process is fine


@pytest.mark.live
def test_upstream_failure_after_text_raises_after_started(agent):
    events = []
    with pytest.raises(AgentError):
        for event in agent.run(request(user("[[cut:3]] one two three four")), Cancellation()):
            events.append(event)
    assert isinstance(events[0], Started) and text_of(events) == "You said: one"


@pytest.mark.live
def test_cancel_aborts_and_the_process_serves_again(agent, fake):
    (pid,) = agent.pool_stats()["pids"]
    process = agent._pool._idle[0]
    aborts = process.aborts
    cancel = Cancellation()
    mark = uuid.uuid4().hex[:8]
    run = agent.run(request(user(f"[[delay:0.2]] {'word ' * 30}{mark}")), cancel)
    assert isinstance(next(run), Started)
    assert isinstance(next(run), TextDelta)
    cancel.cancel()  # as the runner does: cancel, then close the generator
    began = time.monotonic()
    run.close()
    assert time.monotonic() - began < 1.0
    assert process.aborts == aborts + 1
    (sent,) = [r for r in fake.chat_requests() if mark in json.dumps(r.body)]
    fake.wait_for(lambda _: sent.ended)
    assert sent.client_closed  # pi dropped its upstream request
    assert agent.pool_stats() == {"pids": [pid], "idle": [pid]}
    assert text_of(agent.run(request(user("after")), Cancellation())) == "You said: after"


@pytest.mark.live
def test_cancel_while_the_upstream_thinks(agent, fake):
    (pid,) = agent.pool_stats()["pids"]
    cancel = Cancellation()
    result: list = []
    mark = uuid.uuid4().hex[:8]
    run = agent.run(request(user(f"[[stall:5]] think {mark}")), cancel)
    thread = threading.Thread(target=lambda: result.extend(run), daemon=True)
    thread.start()
    # The upstream has the request and stalls: the producer thread blocks, waiting for
    # the first event.
    fake.wait_for(lambda _: fake.chat_requests_mentioning(mark))
    began = time.monotonic()
    cancel.cancel()  # the callback aborts pi at once
    thread.join(2)
    assert not thread.is_alive() and time.monotonic() - began < 1.0
    assert result == []
    assert agent.pool_stats() == {"pids": [pid], "idle": [pid]}


@pytest.mark.live
def test_crash_mid_run_is_an_error_and_the_process_is_replaced(agent):
    (pid,) = agent.pool_stats()["pids"]
    run = agent.run(request(user(f"[[delay:0.1]] {'word ' * 30}")), Cancellation())
    assert isinstance(next(run), Started)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(AgentError) as caught:
        list(run)
    assert "exited during the run (killed by SIGKILL)" in caught.value.message
    # Replaced in the background (the dead one had served runs): warm again.
    stats = wait_until(
        lambda: (s := agent.pool_stats())["idle"] and s["idle"] != [pid] and s,
        20,
        "a replacement process",
    )
    assert pid not in stats["pids"]
    assert text_of(agent.run(request(user("back")), Cancellation())) == "You said: back"


@pytest.mark.live
def test_a_process_that_does_not_answer_abort_is_killed_and_replaced(agent, monkeypatch):
    monkeypatch.setattr(pi_turn, "ABORT_SECONDS", 0.5)
    (pid,) = agent.pool_stats()["pids"]
    cancel = Cancellation()
    run = agent.run(request(user(f"[[delay:0.1]] {'word ' * 30}")), cancel)
    assert isinstance(next(run), Started)
    os.kill(pid, signal.SIGSTOP)  # hung: reads nothing, answers nothing
    cancel.cancel()
    began = time.monotonic()
    run.close()
    assert 0.4 < time.monotonic() - began < 2.0
    wait_until(
        lambda: (s := agent.pool_stats())["idle"] and pid not in s["pids"],
        20,
        "a replacement process",
    )
    assert text_of(agent.run(request(user("next")), Cancellation())) == "You said: next"


@pytest.mark.live
def test_an_idle_process_that_dies_is_replaced(agent):
    (pid,) = agent.pool_stats()["idle"]
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: (s := agent.pool_stats())["idle"] and pid not in s["pids"],
        20,
        "a replacement process",
    )
    assert text_of(agent.run(request(user("again")), Cancellation())) == "You said: again"


@pytest.mark.live
def test_busy_pool_waits_then_gives_up(agent, monkeypatch):
    held = agent.run(request(user(f"[[delay:0.1]] {'word ' * 40}")), Cancellation())
    assert isinstance(next(held), Started)
    began = time.monotonic()
    with pytest.raises(AgentUnavailable) as caught:
        list(agent.run(request(user("no room")), Cancellation()))
    assert 0.9 < time.monotonic() - began < 2.0
    from chatcompat.errors import from_agent_error

    shown = from_agent_error(caught.value)
    assert shown.status == 503 and shown.code == "agent_unavailable"
    assert shown.headers() == {"Retry-After": "1"}
    assert "busy" in caught.value.message and "poolSize" in caught.value.message
    # A run that waits gets the process as soon as it is free again: the release wakes
    # it. Its own re-checks (every WAIT_SLICE_SECONDS) and its give-up are pushed far
    # past the join below, so a release that forgot to notify leaves it asleep.
    monkeypatch.setattr(pi_pool, "WAIT_SLICE_SECONDS", 60)
    monkeypatch.setattr(agent, "_queue_timeout", 60)
    cond = agent._pool._cond
    waiting = threading.Event()

    def wait(timeout=None):
        waiting.set()
        return threading.Condition.wait(cond, timeout)

    monkeypatch.setattr(cond, "wait", wait)
    results: list = []
    waiter = threading.Thread(
        target=lambda: results.extend(agent.run(request(user("waited")), Cancellation())),
        daemon=True,
    )
    waiter.start()
    assert waiting.wait(10), "the second run never waited for the busy process"
    held.close()  # as the runner does when its client is gone: pi aborts, the process is free
    waiter.join(10)
    assert not waiter.is_alive(), "the waiting run was not woken when the process came back"
    assert text_of(results) == "You said: waited"


@pytest.mark.live
def test_isolation_of_the_process(agent, fake):
    (pid,) = agent.pool_stats()["pids"]
    environ = dict(
        item.split("=", 1)
        for item in pathlib.Path(f"/proc/{pid}/environ").read_text().split("\0")
        if "=" in item
    )
    assert environ["PI_OFFLINE"] == "1"
    home = pathlib.Path(environ["HOME"])
    assert environ["PI_CODING_AGENT_DIR"] == str(home / "agent") and MARKER in str(home)
    own = {"HOME", "PI_OFFLINE", "PI_CODING_AGENT_DIR", "CHATCOMPAT_PI_API_KEY"}
    assert set(environ) <= set(BASE_ENV) | own  # nothing else of the gateway's environment
    assert os.readlink(f"/proc/{pid}/cwd") == str(home / "cwd")
    assert os.listdir(home / "cwd") == []
    argv = agent._pool._idle[0].argv  # not /proc: pi overwrites its command line
    for flag in ("--no-tools", "--no-context-files", "--no-extensions", "--no-skills"):
        assert flag in argv
    settings = json.loads((home / "agent" / "settings.json").read_text())
    assert settings["retry"] == {"enabled": False, "provider": {"maxRetries": 0}}
    models = json.loads((home / "agent" / "models.json").read_text())
    assert models["providers"]["chatcompat"]["baseUrl"] == fake.base_url
    assert os.getpgid(pid) == pid  # its own process group
    assert [p.pid for p in processes(MARKER)] == [pid]  # what the leftover checks look for


# -- starting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command,timeout,message",
    [
        (["/nonexistent/pi"], 5, "Could not start pi (/nonexistent/pi)"),
        ([sys.executable, "-c", "import sys; sys.exit(3)"], 5, "exited while starting"),
        ([sys.executable, "-c", "import time; time.sleep(60)"], 0.5, "did not start within"),
    ],
)
@pytest.mark.live
def test_start_failures_are_agent_errors(command, timeout, message):
    agent = make_agent("bad", command=command, startTimeoutSeconds=timeout)
    with pytest.raises(AgentError) as caught:
        list(agent.run(request(user("hi")), Cancellation()))
    assert message in caught.value.message
    assert agent.pool_stats()["pids"] == []
    close(agent)


@pytest.mark.live
def test_a_refused_prompt_is_an_error_and_the_process_stays(command):
    # One of pi's own providers without its key: pi refuses before calling anything.
    agent = make_agent("nokey", command=command, provider="anthropic", model="claude-x")
    with pytest.raises(AgentError) as caught:
        list(agent.run(request(user("hi")), Cancellation()))
    assert caught.value.message == "pi refused the prompt: No API key found for anthropic."
    (pid,) = agent.pool_stats()["pids"]
    assert agent.pool_stats()["idle"] == [pid]
    close(agent)


@pytest.mark.live
def test_close_stops_every_process_and_removes_their_directories(command, fake):
    agent = make_agent("closing", command=command, baseUrl=fake.base_url, model="m", poolSize=2)
    holding = agent.run(request(user(f"[[delay:1]] {'word ' * 20}")), Cancellation())
    next(holding)
    list(agent.run(request(user("second")), Cancellation()))
    pids = agent.pool_stats()["pids"]
    assert len(pids) == 2
    root = agent._root
    close(agent)
    assert agent.pool_stats()["pids"] == [] and not root.exists()
    with pytest.raises(AgentError):
        list(holding)  # its process was stopped under it


# -- through the gateway (Flask test client) ------------------------------------------------


@pytest.fixture(scope="module")
def gateway(command, fake, tmp_path_factory):
    directory = tmp_path_factory.mktemp("pi-gateway")
    config = AgentConfig(
        id=f"{PREFIX}-gw",
        backend="pi",
        default=True,
        system_prompt="You are Pi.",
        options={"command": command, "baseUrl": fake.base_url, "model": "fake-model"},
        timeout_seconds=10,
    )
    settings = Settings(
        state_dir=str(directory),
        auth_secret=TOKEN,
        chat_completions_enabled=True,
        session_store=f"sqlite:///{directory}/sessions.db",
        rate_limit=RateLimit(exempt_loopback=False),
        agents=(config,),
        default_agent_id=config.id,
    )
    app = create_app(settings)
    gateway = app.extensions["chatcompat"]
    _OPEN.append(gateway.agents.get(config.id))  # the instance the app uses
    yield app.test_client(), directory / "sessions.db"
    gateway.close()


def post(client, body: dict, headers: dict | None = None):
    return client.post(CHAT, data=json.dumps(body), headers={**AUTH, **(headers or {})})


def transcript(db: pathlib.Path, key: str) -> list:
    store = SQLiteStore(str(db))
    try:
        return [turn.messages for turn in store.transcript(key)]
    finally:
        store.close()


@pytest.mark.live
def test_gateway_json_and_stream(gateway):
    client, _ = gateway
    response = post(client, {"model": "openclaw", "messages": [user("hi there")]})
    assert response.status_code == 200, response.get_data()
    body = response.get_json()
    check_completion(body)
    assert body["choices"][0]["message"]["content"] == "You said: hi there"
    assert body["usage"]["completion_tokens"] == 4 and body["usage"]["prompt_tokens"] > 2
    stream = {"stream": True, "stream_options": {"include_usage": True}, "messages": [user("a b")]}
    response = post(client, stream)
    assert response.status_code == 200
    chunks, _ = parse_sse(response.get_data())
    assert stream_text(chunks) == "You said: a b"
    assert chunks[-1]["usage"]["completion_tokens"] == 4


@pytest.mark.live
def test_gateway_sticky_session(gateway, fake):
    client, db = gateway
    headers = {"x-openclaw-session-key": f"sticky-{uuid.uuid4().hex[:6]}"}
    post(client, {"messages": [user("my name is Ada")]}, headers)
    post(client, {"messages": [user("what is my name?")]}, headers)
    sent = fake.chat_requests()[-1].body["messages"]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", [{"type": "text", "text": "my name is Ada"}]),
        ("assistant", "You said: my name is Ada"),
        ("user", [{"type": "text", "text": "what is my name?"}]),
    ]
    key = f"agent:{PREFIX}-gw:{headers['x-openclaw-session-key']}"
    assert len(transcript(db, key)) == 2


@pytest.mark.live
def test_gateway_errors_before_and_after_the_stream_began(gateway):
    client, db = gateway
    response = post(client, {"stream": True, "messages": [user("[[status:503]]")]})
    assert response.status_code == 502
    check_error(response.get_json(), code="upstream_error")
    headers = {"x-openclaw-session-key": "broken"}
    body = {"stream": True, "messages": [user("[[error-frame:2]] lost words")]}
    chunks, frames = parse_sse(post(client, body, headers).get_data())
    assert stream_text(chunks) == "You said:"
    assert chunks[-1]["error"]["code"] == "upstream_error" and frames[-1] == "data: [DONE]"
    assert transcript(db, f"agent:{PREFIX}-gw:broken") == []


# -- images ------------------------------------------------------------------------------------


def image_request(text: str, *images: InputImage) -> AgentRequest:
    parts = [{"type": "image_url", "image_url": {"url": "data:,"}} for _ in images]
    message = {"role": "user", "content": [{"type": "text", "text": text}, *parts]}
    return AgentRequest(agent_id="pi", session_key="agent:pi:k", messages=[message],
                        images=images)  # fmt: skip


@pytest.fixture(scope="module")
def image_server():
    with ImageServer("127.0.0.1") as started:
        yield started


def open_urls(**limits) -> ImagePolicy:
    return ImagePolicy(allow_url=True, **limits)


def test_a_private_image_url_is_refused_before_any_process(image_server):
    # The URL passed the policy (allowUrl on); the fetch guard refuses loopback.
    config = AgentConfig(id=f"{PREFIX}-img", backend="pi", images=open_urls())
    agent = PiAgent(config)
    image = InputImage(param="messages[0].content[1].image_url.url", url=image_server.url("/png"))
    with pytest.raises(AgentRejected) as refused:
        list(agent.run(image_request("what is it?", image), Cancellation()))
    assert refused.value.status == 400 and refused.value.code == "invalid_image_url"
    assert refused.value.param == "messages[0].content[1].image_url.url"
    assert "non-public address" in refused.value.message
    assert image_server.requests == []
    assert agent.pool_stats() == {"pids": [], "idle": []}  # no process was started


@pytest.mark.parametrize(
    ("path", "limits", "words"),
    [
        ("/svg", {}, "no image of a known type"),
        ("/big?n=500", {"max_bytes": 200}, "larger than 200 bytes"),
        ("/png", {"allowed_mimes": ("image/jpeg",)}, "an image/png image"),
        ("/loop", {"max_redirects": 1}, "more than 1 times"),
    ],
)
def test_what_an_allowed_fetch_brings_is_checked(image_server, path, limits, words):
    config = AgentConfig(id=f"{PREFIX}-img", backend="pi", images=open_urls(**limits))
    agent = LoopbackPiAgent(config)
    image = InputImage(param="messages[0].content[1].image_url", url=image_server.url(path))
    with pytest.raises(AgentRejected) as refused:
        list(agent.run(image_request("what is it?", image), Cancellation()))
    assert refused.value.param == "messages[0].content[1].image_url"
    assert words in refused.value.message
    assert agent.pool_stats() == {"pids": [], "idle": []}


def test_fetched_and_inline_images_together_are_capped():
    config = AgentConfig(id=f"{PREFIX}-img", backend="pi",
                         images=ImagePolicy(max_total_bytes=len(PNG) + 1))  # fmt: skip
    agent = PiAgent(config)
    images = [InputImage(param=f"p{i}", data=PNG, mime_type="image/png") for i in range(2)]
    with pytest.raises(AgentRejected) as refused:
        list(agent.run(image_request("two", *images), Cancellation()))
    assert refused.value.param == "p1" and "maxTotalBytes" in refused.value.message


@pytest.mark.live
def test_images_reach_the_model_as_sent_and_as_fetched(command, fake, image_server):
    options = {"command": command, "baseUrl": fake.base_url, "model": "fake-model",
               "poolSize": 1}  # fmt: skip
    config = AgentConfig(id=f"{PREFIX}-loop", backend="tests.loopback_pi.LoopbackPiAgent",
                         options=options, images=open_urls())  # fmt: skip
    agent = LoopbackPiAgent(config)
    _OPEN.append(agent)
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01"
    inline = InputImage(param="a", data=jpeg, mime_type="image/jpeg")
    fetched = InputImage(param="b", url=image_server.url("/png"))
    events = list(agent.run(image_request("two images", inline, fetched), Cancellation()))
    assert isinstance(events[-1], Finish)
    content = fake.chat_requests()[-1].body["messages"][-1]["content"]
    urls = [part["image_url"]["url"] for part in content if part["type"] == "image_url"]
    assert urls == [
        "data:image/jpeg;base64," + base64.b64encode(jpeg).decode(),
        "data:image/png;base64," + base64.b64encode(PNG).decode(),
    ]
    assert {"type": "text", "text": "two images"} in content
    # An image without text: OpenClaw's words as the prompt.
    only = AgentRequest(agent_id="pi", session_key="agent:pi:k", images=(inline,),
                        messages=[{"role": "user", "content": [
                            {"type": "image_url", "image_url": {"url": "data:,"}}]}])  # fmt: skip
    list(agent.run(only, Cancellation()))
    content = fake.chat_requests()[-1].body["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": IMAGE_ONLY_PROMPT}
    assert [part["type"] for part in content] == ["text", "image_url"]
