"""JSON responses through real gunicorn, validated against OpenAI's schemas; the README's
curl examples run verbatim with the real curl; models, OpenAPI, health."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from jsonschema import Draft202012Validator

from tests.live.conftest import AUTH
from tests.live.conftest import REPO
from tests.live.conftest import TOKEN
from tests.live.conftest import RawExchange
from tests.live.conftest import chat
from tests.live.conftest import user
from tests.wire import check
from tests.wire import check_completion
from tests.wire import parse_sse
from tests.wire import stream_text

pytestmark = pytest.mark.live


def test_json_completion_validates_against_openai_schema(live):
    exchange = chat(live.port, {"model": "openclaw", "messages": [user("hello  brave world")]})
    assert exchange.status == 200
    assert exchange.header("Content-Type") == "application/json"
    assert exchange.header("Transfer-Encoding") is None
    raw = exchange.body()
    assert int(exchange.header("Content-Length")) == len(raw)
    body = json.loads(raw)
    check_completion(body)
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["model"] == "openclaw"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "hello  brave world"
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert exchange.header("x-openclaw-session-key").startswith("agent:main:openai:")


def test_json_tool_calls_validate(live):
    body = chat(live.port, {"model": "openclaw/scripted", "messages": [user("[[tools]]")]}).json()
    check_completion(body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert [call["function"]["name"] for call in choice["message"]["tool_calls"]] == [
        "get_weather",
        "get_time",
    ]
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == '{"city":"Paris"}'


# -- README ----------------------------------------------------------------------------------


def readme_curl_examples() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    # The sentence may wrap anywhere: match it with any whitespace between words.
    marker = re.search(r"With\s+the\s+token\s+in\s+place\s+of\s+`YOUR_TOKEN`", text)
    assert marker, "README.md lost its curl examples"
    blocks = re.findall(r"```sh\n(.*?)```", text[marker.end() :], re.S)
    assert len(blocks) >= 2, "README.md: fewer than two ```sh blocks after the marker"
    return blocks[:2]


@pytest.fixture(scope="module")
def curl_outputs(live):
    if shutil.which("curl") is None:
        pytest.fail("the real curl binary is needed (.ci/run installs it)")
    outputs = []
    for block in readme_curl_examples():
        assert "YOUR_TOKEN" in block and "18789" in block, block
        command = block.replace("YOUR_TOKEN", TOKEN).replace("18789", str(live.port))
        done = subprocess.run(["bash", "-c", command], capture_output=True, timeout=30, check=False)
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(done.stdout)
    return outputs


def test_readme_curl_json_example_verbatim(curl_outputs):
    body = json.loads(curl_outputs[0])
    check_completion(body)
    assert body["model"] == "openclaw"
    assert body["choices"][0]["message"]["content"] == "hi"


def test_readme_curl_stream_example_verbatim(curl_outputs):
    chunks, frames = parse_sse(curl_outputs[1])
    assert frames[-1] == "data: [DONE]"
    assert stream_text(chunks) == "hi"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


# -- models, OpenAPI, health ------------------------------------------------------------------


def test_models_list_and_one_model(live):
    listing = RawExchange(live.port, "GET", "/v1/models", AUTH)
    assert listing.status == 200
    body = listing.json()
    check("ListModelsResponse", body)
    assert [m["id"] for m in body["data"]] == [
        "openclaw",
        "openclaw/default",
        "openclaw/main",
        "openclaw/slow",
        "openclaw/scripted",
    ]
    one = RawExchange(live.port, "GET", "/v1/models/openclaw%2Fslow", AUTH)
    assert one.status == 200
    model = one.json()
    check("Model", model)
    assert model["id"] == "openclaw/slow" and model["owned_by"] == "chatcompat"
    assert RawExchange(live.port, "GET", "/v1/models").status == 401


def test_openapi_document_publishes_the_request_schema(live):
    exchange = RawExchange(live.port, "GET", "/openapi.json")
    assert exchange.status == 200
    assert exchange.header("Content-Type") == "application/json"
    document = exchange.json()
    assert document["openapi"] == "3.1.0"
    post = document["paths"]["/v1/chat/completions"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/ChatCompletionRequest"
    # The published schema is usable as is: it accepts and refuses what the server does.
    validator = Draft202012Validator({**document, "$ref": ref})
    assert validator.is_valid({"messages": [user("hi")], "stream": True})
    for bad in ({}, {"messages": []}, {"messages": [{"role": "wizard", "content": "x"}]}):
        assert not validator.is_valid(bad), bad
        refused = chat(live.port, bad)
        assert refused.status == 400
        refused.body()
    assert {"/v1/models", "/healthz", "/readyz", "/metrics"} <= set(document["paths"])


def test_health_and_readiness(live):
    health = RawExchange(live.port, "GET", "/healthz")
    assert (health.status, health.json()) == (200, {"status": "ok"})
    ready = RawExchange(live.port, "GET", "/readyz")
    assert (ready.status, ready.json()) == (200, {"status": "ready"})
