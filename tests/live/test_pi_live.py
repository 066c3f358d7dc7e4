"""The ``pi`` backend live: ``chatcompat serve`` (one gevent worker) running the real pi
(``tests/pi_support.py``) against the fake upstream, called with the official ``openai``
SDK, curl and raw sockets.

One worker on purpose: a pi process that blocked the worker would stall everything
else it serves. After every test each pi process is a live child of that worker (no
zombie, no orphan); after the server stopped none is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid

import openai
import pytest

from tests.fake_upstream import REASONING
from tests.fake_upstream import FakeUpstream
from tests.live.conftest import TOKEN
from tests.live.conftest import chat
from tests.live.conftest import start_server
from tests.live.conftest import user
from tests.pi_support import check_no_leftovers
from tests.pi_support import pi_command
from tests.pi_support import processes
from tests.pi_support import zombie_children
from tests.polling import wait_until
from tests.wire import check_error

pytestmark = pytest.mark.live

P = f"pl{uuid.uuid4().hex[:6]}"
MAIN, ONE = f"{P}-main", f"{P}-one"  # agent ids; their pi dirs are named after them
KEY_VARIABLE = "FAKE_UPSTREAM_API_KEY"  # not CHATCOMPAT_*: the live servers drop those
KEY = "sk-live-pi-0123456789"
RESPONSES_ON = {"gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}}}


def pids(agent: str) -> list[int]:
    return sorted(p.pid for p in processes(f"chatcompat-pi-{agent}-"))


def marker() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def fake(module_fake: FakeUpstream) -> FakeUpstream:
    """One fake upstream for the whole module (tests/conftest.py)."""
    return module_fake


@pytest.fixture(scope="module")
def server(fake, tmp_path_factory):
    command = pi_command()
    upstream = {"backend": "pi", "command": command, "baseUrl": fake.base_url,
                "model": "fake-model"}  # fmt: skip
    agents = [
        {"id": MAIN, "default": True, **upstream, "apiKeyEnv": KEY_VARIABLE,
         "systemPrompt": "You are Pi.", "poolSize": 1, "queueTimeoutSeconds": 10,
         "timeoutSeconds": 30, "models": ["fake-model-large"]},
        {"id": ONE, **upstream, "poolSize": 1, "queueTimeoutSeconds": 1},
        {"id": "echo", "backend": "echo"},
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_VARIABLE, KEY)  # the server's environment is copied from ours
        started = start_server(
            tmp_path_factory.mktemp("pi-live"),
            workers=1,
            overrides={"agents": {"list": agents}, **RESPONSES_ON},
        )
    yield started
    started.stop()
    check_no_leftovers(f"chatcompat-pi-{P}-", set(), os.getpid())


@pytest.fixture(autouse=True)
def every_pi_is_a_live_child_of_the_worker(server):
    yield
    (worker,) = server.worker_pids()

    def clean():
        found = processes(f"chatcompat-pi-{P}-")
        healthy = all(p.ppid == worker and p.state != "Z" for p in found)
        return healthy and not zombie_children(worker)

    wait_until(clean, 5, f"pi processes to be live children of the worker: {processes(P)}")


@pytest.fixture
def client(server):
    sdk = openai.OpenAI(base_url=server.url("/v1"), api_key=TOKEN, max_retries=0, timeout=30)
    yield sdk
    sdk.close()


# -- answers ---------------------------------------------------------------------------------


def test_sdk_json_and_stream(client, fake):
    mark = marker()
    reply = client.chat.completions.create(model="openclaw", messages=[user(f"hello {mark}")])
    assert reply.choices[0].message.content == f"You said: hello {mark}"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 4 and reply.usage.prompt_tokens > 2
    (sent,) = fake.chat_requests_mentioning(mark)
    assert sent.headers["authorization"] == f"Bearer {KEY}"  # apiKeyEnv, through pi's env
    assert sent.body["messages"][0]["content"].startswith("You are Pi.\n")
    stream = client.chat.completions.create(
        model=f"openclaw/{MAIN}",
        messages=[user(f"[[delay:0.02]] stream {mark}")],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"You said: stream {mark}"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4


def test_pi_thinking_is_relayed_as_reasoning_content(client, fake):
    # The fake reasons first (reasoning_content); pi thinks it (thinking_delta).
    mark = marker()
    stream = client.chat.completions.create(
        model="openclaw", messages=[user(f"[[reasoning]] think {mark}")], stream=True
    )
    deltas = [chunk.choices[0].delta for chunk in stream if chunk.choices]
    thoughts = "".join(getattr(delta, "reasoning_content", None) or "" for delta in deltas)
    assert thoughts == REASONING
    assert "".join(delta.content or "" for delta in deltas) == f"You said: think {mark}"
    reply = client.chat.completions.create(
        model="openclaw", messages=[user(f"[[reasoning]] again {mark}")]
    )
    assert reply.choices[0].message.reasoning_content == REASONING  # type: ignore[attr-defined]


@pytest.mark.parametrize("choice", ["auto", "none"])
def test_pi_takes_tool_choice(client, choice):
    # Clients that always send tool_choice reach pi; "required" needs tools, which pi refuses.
    mark = marker()
    reply = client.chat.completions.create(
        model="openclaw", messages=[user(f"choose {mark}")], tool_choice=choice
    )
    assert reply.choices[0].message.content == f"You said: choose {mark}"


def test_curl_json_and_stream(server):
    if not shutil.which("curl"):
        if os.environ.get("CI"):
            pytest.fail("curl is required under CI (.ci/run installs it)")
        pytest.skip("curl is not installed")
    base = ["curl", "-sS", "--max-time", "20", server.url("/v1/chat/completions"), "-H",
            f"Authorization: Bearer {TOKEN}", "-H", "Content-Type: application/json"]  # fmt: skip
    body = {"model": "openclaw", "messages": [user("hi from curl")]}
    done = subprocess.run([*base, "-d", json.dumps(body)], capture_output=True, timeout=30)
    assert json.loads(done.stdout)["choices"][0]["message"]["content"] == "You said: hi from curl"
    body["stream"] = True
    done = subprocess.run([*base, "-N", "-d", json.dumps(body)], capture_output=True, timeout=30)
    frames = done.stdout.decode().strip().split("\n\n")
    assert frames[-1] == "data: [DONE]"
    chunks = [json.loads(frame.removeprefix("data: ")) for frame in frames[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "You said: hi from curl"


def test_sticky_session_is_remembered(client, fake, server):
    mark = marker()
    session = {"x-openclaw-session-key": f"pi-{mark}"}
    for text in (f"my name is Ada {mark}", f"what is my name? {mark}"):
        client.chat.completions.create(
            model="openclaw", messages=[user(text)], extra_headers=session
        )
    second = fake.chat_requests_mentioning(mark)[-1].body["messages"]
    assert [(m["role"], m["content"]) for m in second[1:]] == [
        ("user", [{"type": "text", "text": f"my name is Ada {mark}"}]),
        ("assistant", f"You said: my name is Ada {mark}"),
        ("user", [{"type": "text", "text": f"what is my name? {mark}"}]),
    ]
    assert len(server.transcript(f"agent:{MAIN}:pi-{mark}")) == 2


def test_the_worker_serves_others_while_pi_works(server, client):
    results: list = []

    def slow() -> None:
        # pi writes nothing for 2 s: a blocking read of its pipe would stall the worker.
        stream = client.chat.completions.create(
            model="openclaw", messages=[user("[[stall:2]] a b c d")], stream=True
        )
        results.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)
    for _ in range(5):
        began = time.monotonic()
        exchange = chat(server.port, {"model": "openclaw/echo", "messages": [user("quick")]})
        assert exchange.status == 200 and exchange.json()["choices"][0]["message"]["content"]
        assert time.monotonic() - began < 0.5
        exchange.close()
    assert not results  # all of that while pi was still waiting
    thread.join(10)
    assert results == ["You said: a b c d"]


def test_the_model_header_runs_pi_on_that_model_for_one_run_only(client, fake):
    """x-openclaw-model: pi switches its model for the run (set_model); the next run
    on the same warm process is back on the agent's own model."""
    (pid,) = pids(MAIN)
    marks = [marker() for _ in range(3)]
    runs = (("fake-model-large", False), (None, False), ("fake-model-large", True))
    for mark, (header, stream) in zip(marks, runs, strict=True):
        extra = {"x-openclaw-model": header} if header else {}
        reply = client.chat.completions.create(
            model="openclaw", messages=[user(f"hi {mark}")], extra_headers=extra, stream=stream
        )
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
        else:
            text = reply.choices[0].message.content
        assert text == f"You said: hi {mark}"
    sent = [fake.chat_requests_mentioning(mark)[-1].body["model"] for mark in marks]
    assert sent == ["fake-model-large", "fake-model", "fake-model-large"]
    assert pids(MAIN) == [pid]  # one warm process served all three
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="openclaw", messages=[user("x")], extra_headers={"x-openclaw-model": "gpt-5"}
        )
    assert caught.value.code == "model_not_allowed"


# -- the client goes away, pi dies ------------------------------------------------------------


def test_disconnect_aborts_pi_and_the_process_serves_again(server, fake, client):
    before = pids(MAIN)
    assert len(before) == 1
    mark = marker()
    body = {"stream": True, "messages": [user(f"[[delay:0.2]] {'word ' * 30}{mark}")]}
    exchange = chat(server.port, body, {"x-openclaw-session-key": f"gone-{mark}"})
    assert exchange.status == 200
    exchange.close_after_contents(2)
    gone = time.monotonic()
    (sent,) = fake.chat_requests_mentioning(mark)
    fake.wait_for(lambda _: sent.ended, timeout=5)
    assert sent.client_closed and sent.ended - gone < 1.0  # pi aborted its upstream call
    assert server.transcript(f"agent:{MAIN}:gone-{mark}") == []
    reply = client.chat.completions.create(model="openclaw", messages=[user("still there?")])
    assert reply.choices[0].message.content == "You said: still there?"
    assert pids(MAIN) == before  # the same process, back in the pool


def test_pi_crash_mid_run_is_an_error_and_it_is_replaced(server, client):
    (pid,) = pids(MAIN)
    mark = marker()
    stream = client.chat.completions.create(
        model="openclaw",
        messages=[user(f"[[delay:0.2]] {'word ' * 30}")],
        stream=True,
        extra_headers={"x-openclaw-session-key": f"crash-{mark}"},
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
                if len(received) == 1:
                    os.kill(pid, signal.SIGKILL)
    assert "exited during the run (killed by SIGKILL)" in caught.value.message
    assert server.transcript(f"agent:{MAIN}:crash-{mark}") == []
    replaced = wait_until(lambda: [p for p in pids(MAIN) if p != pid], 20, "a new pi process")
    reply = client.chat.completions.create(model="openclaw", messages=[user("recovered")])
    assert reply.choices[0].message.content == "You said: recovered"
    assert pids(MAIN) == replaced


def test_busy_pool_makes_requests_wait_then_503(server):
    held = chat(
        server.port,
        {
            "model": f"openclaw/{ONE}",
            "stream": True,
            "messages": [user(f"[[delay:0.2]] {'w ' * 30}")],
        },
    )
    assert held.status == 200
    began = time.monotonic()
    refused = chat(server.port, {"model": f"openclaw/{ONE}", "messages": [user("room?")]})
    assert refused.status == 503 and 0.9 < time.monotonic() - began < 3.0
    assert refused.header("Retry-After") == "1"
    error = check_error(refused.json(), code="agent_unavailable")
    assert error["type"] == "api_error"
    assert "busy" in error["message"] and "poolSize" in error["message"]
    streamed = chat(
        server.port, {"model": f"openclaw/{ONE}", "stream": True, "messages": [user("s")]}
    )
    assert streamed.status == 503  # a plain HTTP error, before any stream
    # A request that waits gets the process once the first one lets go of it.
    results: list = []

    def waiting() -> None:
        exchange = chat(server.port, {"model": f"openclaw/{ONE}", "messages": [user("waited")]})
        results.append((exchange.status, exchange.json()))

    thread = threading.Thread(target=waiting)
    thread.start()
    time.sleep(0.3)
    held.close()
    thread.join(10)
    ((status, body),) = results
    assert status == 200 and body["choices"][0]["message"]["content"] == "You said: waited"
    assert len(pids(ONE)) == 1


def test_responses_api_on_pi_json_stream_and_continuation(client, fake):
    """/v1/responses on the pi backend with the SDK: JSON, a stream with pi's thinking
    as a reasoning item, and a continuation by previous_response_id (pi's upstream
    gets the earlier turn, as on chat completions)."""
    mark = marker()
    first = client.responses.create(model="openclaw", input=f"my name is Ada {mark}")
    assert first.output_text == f"You said: my name is Ada {mark}"
    assert first.status == "completed" and first.usage.output_tokens == 7
    with client.responses.stream(
        model="openclaw", input=f"[[reasoning]] who am I? {mark}", previous_response_id=first.id
    ) as stream:
        kinds = [event.type for event in stream]
        second = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    reasoning, message = second.output
    assert reasoning.type == "reasoning" and message.type == "message"
    assert REASONING in [part.text for part in [*reasoning.summary, *(reasoning.content or [])]]
    assert second.output_text == f"You said: who am I? {mark}"
    sent = fake.chat_requests_mentioning(mark)[-1].body["messages"]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", [{"type": "text", "text": f"my name is Ada {mark}"}]),
        ("assistant", f"You said: my name is Ada {mark}"),
        ("user", [{"type": "text", "text": f"[[reasoning]] who am I? {mark}"}]),
    ]
