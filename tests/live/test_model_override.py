"""``x-openclaw-model`` live: ``chatcompat serve`` (gunicorn) with an ``openai`` agent in
front of the fake upstream, whose log shows the model each run really asked for.

Chat completions and the Responses API both. The pi backend's side (the model
switched for one run of a warm process) is in ``test_pi_live.py``.
"""

from __future__ import annotations

import json
import uuid

import openai
import pytest

from tests.fake_upstream import FakeUpstream
from tests.live.conftest import TOKEN
from tests.live.conftest import chat
from tests.live.conftest import start_server
from tests.live.conftest import user
from tests.wire import check_completion
from tests.wire import check_error
from tests.wire import parse_sse

pytestmark = pytest.mark.live

ALLOWED = ["fake-small", "vendor/fake-large"]


@pytest.fixture(scope="module")
def fake(module_fake: FakeUpstream) -> FakeUpstream:
    return module_fake


@pytest.fixture(scope="module")
def server(fake, tmp_path_factory):
    agents = [
        {"id": "main", "default": True, "backend": "echo"},
        {"id": "up", "backend": "openai", "baseUrl": fake.base_url, "model": "fake-own",
         "models": ALLOWED},
        {"id": "fixed", "backend": "openai", "baseUrl": fake.base_url, "model": "fake-own"},
    ]  # fmt: skip
    started = start_server(
        tmp_path_factory.mktemp("model-override"),
        workers=1,
        overrides={
            "agents": {"list": agents},
            "gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}},
        },
    )
    yield started
    started.stop()


def mark() -> str:
    return uuid.uuid4().hex[:8]


def sent_model(fake: FakeUpstream, marker: str) -> str:
    (request,) = fake.chat_requests_mentioning(marker)
    return request.body["model"]


def test_json_and_stream_run_on_the_model_the_header_names(server, fake):
    for model in (*ALLOWED, None):
        headers = {"x-openclaw-model": model} if model else {}
        m = mark()
        exchange = chat(server.port, {"model": "openclaw/up", "messages": [user(m)]}, headers)
        assert exchange.status == 200
        completion = exchange.json()
        check_completion(completion)
        assert completion["model"] == "openclaw/up"  # the client's model string, as sent
        assert sent_model(fake, m) == (model or "fake-own")
        m = mark()
        body = {"model": "openclaw/up", "stream": True, "messages": [user(m)]}
        exchange = chat(server.port, body, headers)
        assert exchange.status == 200
        chunks, _ = parse_sse(exchange.body())
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == (
            f"You said: {m}"
        )
        assert sent_model(fake, m) == (model or "fake-own")


def test_the_sdk_sends_it_as_an_extra_header(server, fake):
    sdk = openai.OpenAI(base_url=server.url("/v1"), api_key=TOKEN, max_retries=0, timeout=20)
    m = mark()
    reply = sdk.chat.completions.create(
        model="openclaw/up",
        messages=[user(m)],
        extra_headers={"x-openclaw-model": "vendor/fake-large"},
    )
    assert reply.choices[0].message.content == f"You said: {m}"
    assert sent_model(fake, m) == "vendor/fake-large"
    sdk.close()


def test_the_responses_api_honours_it_too(server, fake):
    sdk = openai.OpenAI(base_url=server.url("/v1"), api_key=TOKEN, max_retries=0, timeout=20)
    m = mark()
    response = sdk.responses.create(
        model="openclaw/up", input=m, extra_headers={"x-openclaw-model": "fake-small"}
    )
    assert response.output_text == f"You said: {m}"
    assert sent_model(fake, m) == "fake-small"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(
            model="openclaw/up", input=mark(), extra_headers={"x-openclaw-model": "gpt-5"}
        )
    assert caught.value.code == "model_not_allowed"
    sdk.close()


@pytest.mark.parametrize(
    ("agent", "model"),
    [
        ("up", "gpt-5"),  # not in the list
        ("up", "FAKE-SMALL"),  # compared exactly
        ("fixed", "fake-small"),  # the agent lists no models
        ("main", "fake-small"),
    ],
)
def test_a_model_the_agent_does_not_list_is_400_and_nothing_runs(server, fake, agent, model):
    m = mark()
    for stream in (False, True):
        body = {"model": f"openclaw/{agent}", "stream": stream, "messages": [user(m)]}
        exchange = chat(server.port, body, {"x-openclaw-model": model})
        assert exchange.status == 400  # a plain HTTP error, also when asked to stream
        assert exchange.header("Content-Type") == "application/json"
        error = check_error(json.loads(exchange.body()), code="model_not_allowed")
        assert error["param"] == "x-openclaw-model"
    assert fake.chat_requests_mentioning(m) == []
