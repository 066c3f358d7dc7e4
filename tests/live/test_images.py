"""The image policy live: ``chatcompat serve`` (one gevent worker) with agents of
different ``images`` policies, the fake upstream behind the ``openai`` and ``pi``
backends, and a real HTTP image server on loopback for the fetches of ``pi``.

Each refusal is a 400 whose ``param`` names the part; ``pi`` refuses to fetch from a
private address (loopback here), and fetches from it only in the test subclass whose
guard admits exactly 127.0.0.1 (``tests.loopback_pi``).
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import openai
import pytest

from tests.fake_upstream import FakeUpstream
from tests.image_server import PNG
from tests.image_server import SVG
from tests.image_server import ImageServer
from tests.live.conftest import TOKEN
from tests.live.conftest import chat
from tests.live.conftest import start_server
from tests.pi_support import pi_command
from tests.wire import check_completion
from tests.wire import check_error

pytestmark = pytest.mark.live

PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()
BODY_BYTES = 400_000


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def turn(text: str, *parts: dict) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text}, *parts]}


def mark() -> str:
    return f"m{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def fake(module_fake: FakeUpstream) -> FakeUpstream:
    return module_fake


@pytest.fixture(scope="module")
def images():
    with ImageServer("127.0.0.1") as started:
        yield started


@pytest.fixture(scope="module")
def server(fake, tmp_path_factory):
    command = pi_command()
    up = {"backend": "openai", "baseUrl": fake.base_url, "model": "fake-model"}
    pi = {"command": command, "baseUrl": fake.base_url, "model": "fake-model", "poolSize": 1,
          "images": {"allowUrl": True, "timeoutMs": 3000}}  # fmt: skip
    agents = {
        "defaults": {"images": {"maxParts": 3}},
        "list": [
            {"id": "main", "default": True, "backend": "echo"},
            {"id": "small", "backend": "echo", "images": {"maxBytes": 100, "maxParts": 4}},
            {"id": "up", **up, "images": {"allowUrl": True, "urlAllowlist": ["cdn.example.com"]}},
            {"id": "keep", **up, "images": {"history": "keep"}},
            {"id": "pi", "backend": "pi", **pi},
            {"id": "piloop", "backend": "tests.loopback_pi.LoopbackPiAgent", **pi},
        ],
    }
    overrides = {
        "agents": agents,
        "gateway": {"http": {"endpoints": {"chatCompletions": {"maxBodyBytes": BODY_BYTES}}}},
    }
    started = start_server(tmp_path_factory.mktemp("images"), workers=1, overrides=overrides)
    yield started
    started.stop()


def refused(server, model: str, messages: list, code: str = "invalid_image") -> dict:
    exchange = chat(server.port, {"model": model, "messages": messages})
    body = exchange.body()
    assert exchange.status == 400, (exchange.status_line, body[:300])
    return check_error(json.loads(body), code=code)


# -- the policy's refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "url", "words"),
    [
        ("openclaw", "   ", "blank"),
        ("openclaw", "htp:/broken", "neither a base64 data URI nor an http(s) URL"),
        ("openclaw", "https://cdn.example.com/a.png", "images.allowUrl is off"),
        ("openclaw", "data:image/png;base64,%%%", "not valid base64"),
        ("openclaw", "data:image/png," + base64.b64encode(PNG).decode(), "must be base64"),
        ("openclaw", "data:image/svg+xml;base64," + base64.b64encode(SVG).decode(),
         "'image/svg+xml' is not taken"),
        ("openclaw", "data:image/png;base64," + base64.b64encode(b"%PDF-1.7\n%").decode(),
         "no image of a known type"),
        ("openclaw/small", "data:image/png;base64," + base64.b64encode(PNG + bytes(120)).decode(),
         "larger than 100 bytes"),
        ("openclaw/up", "https://evil.example.com/a.png", "not in this agent's"
         " images.urlAllowlist"),
        ("openclaw/up", "https://cdn..example.com/a.png", "host is neither a valid host name"),
        ("openclaw/up", "https://cdn.example.com:0/a.png", "its port is empty or 0"),
    ],
)  # fmt: skip
def test_each_refusal_is_400_naming_the_part(server, model, url, words):
    messages = [{"role": "system", "content": "s"}, turn("look", image(PNG_URI), image(url))]
    error = refused(server, model, messages)
    assert words in error["message"]
    assert error["param"] == "messages[1].content[2].image_url.url"


def test_too_many_parts_names_the_first_one_over_the_limit(server):
    # agents.defaults.images.maxParts 3 for main; "small" overrides it with 4.
    four = [turn("four", *[image(PNG_URI)] * 4)]
    error = refused(server, "openclaw", four)
    assert "at most 3 image parts" in error["message"]
    assert error["param"] == "messages[0].content[4].image_url.url"
    exchange = chat(server.port, {"model": "openclaw/small", "messages": four})
    assert exchange.status == 200, exchange.body()[:300]
    check_completion(exchange.json())


def test_the_openai_sdk_sees_the_param(server):
    client = openai.OpenAI(base_url=server.url("/v1"), api_key=TOKEN, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="openclaw", messages=[turn("x", image(" "))])
    client.close()
    assert caught.value.code == "invalid_image"
    assert caught.value.param == "messages[0].content[1].image_url.url"


# -- what reaches the agent ------------------------------------------------------------------


def test_allowed_images_reach_the_openai_upstream_as_sent(server, fake):
    word = mark()
    url = "https://cdn.example.com/cat.png"  # allowed; the gateway does not fetch it
    messages = [turn(word, image(PNG_URI), image(url))]
    exchange = chat(server.port, {"model": "openclaw/up", "messages": messages})
    assert exchange.status == 200, exchange.body()[:300]
    (sent,) = fake.chat_requests_mentioning(word)
    assert sent.body["messages"][-1]["content"][1:] == [image(PNG_URI), image(url)]


def test_earlier_images_reach_the_agent_as_a_marker_unless_keep(server, fake):
    for model, expected in (("openclaw/up", "marker"), ("openclaw/keep", "image")):
        word, key = mark(), mark()
        headers = {"x-openclaw-session-key": key}
        first = chat(server.port, {"model": model, "messages": [turn(word, image(PNG_URI))]},
                     headers)  # fmt: skip
        assert first.status == 200, first.body()[:300]
        first.body()
        again = mark()
        second = chat(server.port, {"model": model, "messages": [turn(again)]}, headers)
        assert second.status == 200, second.body()[:300]
        (sent,) = fake.chat_requests_mentioning(again)
        earlier = sent.body["messages"][0]["content"]
        if expected == "marker":
            assert earlier[1] == {"type": "text", "text": "[image from an earlier turn: not"
                                  " sent again]"}  # fmt: skip
        else:
            assert earlier[1] == image(PNG_URI)
        # The stored transcript keeps the image as sent, either way.
        assert server.transcript(second.header("x-openclaw-session-key"))[0][0] == (
            turn(word, image(PNG_URI))
        )


def test_a_tool_loop_sends_the_users_images_again(server, fake):
    # The assistant's tool calls and their results do not end the user's turn: the
    # image it asked about is still the current turn's, not an earlier marker.
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    word, key = mark(), mark()
    headers = {"x-openclaw-session-key": key}
    body = {"model": "openclaw/up", "tools": tools,
            "messages": [turn(f"{word} [[tools]]", image(PNG_URI))]}  # fmt: skip
    first = chat(server.port, body, headers)
    assert first.status == 200, first.body()[:300]
    calls = first.json()["choices"][0]["message"]["tool_calls"]
    results = [{"role": "tool", "tool_call_id": call["id"], "content": "ok"} for call in calls]
    again = chat(server.port, {"model": "openclaw/up", "tools": tools, "messages": results},
                 headers)  # fmt: skip
    assert again.status == 200, again.body()[:300]
    last = fake.chat_requests_mentioning(word)[-1].body["messages"]
    assert last[0]["content"] == [{"type": "text", "text": f"{word} [[tools]]"}, image(PNG_URI)]


# -- pi: the gateway fetches, under the guard -----------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_pi_refuses_to_fetch_from_a_private_address(server, images, fake, host):
    before = len(images.requests)
    url = f"http://{host}:{images.port}/png"
    word = mark()
    error = refused(server, "openclaw/pi", [turn(word, image(url))], code="invalid_image_url")
    assert error["param"] == "messages[0].content[1].image_url.url"
    assert "non-public address" in error["message"]
    assert len(images.requests) == before  # never connected
    assert fake.chat_requests_mentioning(word) == []  # pi never ran


def test_pi_refuses_a_redirect_away_from_the_admitted_address(server, images):
    # The test guard admits 127.0.0.1 only: a redirect to 127.0.0.2 is refused.
    url = images.url("/to?u=http://127.0.0.2:1/png")
    error = refused(server, "openclaw/piloop", [turn("r", image(url))], code="invalid_image_url")
    assert error["param"] == "messages[0].content[1].image_url.url"
    assert "'127.0.0.2' is refused" in error["message"]


def test_pi_refuses_a_redirect_that_adds_credentials(server, images):
    before = len(images.requests)
    url = images.url(f"/to?u=http://user:pw@127.0.0.1:{images.port}/png")
    error = refused(server, "openclaw/piloop", [turn("c", image(url))], code="invalid_image_url")
    assert error["param"] == "messages[0].content[1].image_url.url"
    assert "redirects to a URL with credentials" in error["message"]
    assert len(images.requests) == before + 1  # the redirect only


def test_pi_gets_the_fetched_and_inline_images_as_bytes(server, images, fake):
    word = mark()
    messages = [turn(word, image(images.url("/png")), image(PNG_URI))]
    exchange = chat(server.port, {"model": "openclaw/piloop", "messages": messages})
    assert exchange.status == 200, exchange.body()[:300]
    check_completion(exchange.json())
    (sent,) = fake.chat_requests_mentioning(word)
    parts = sent.body["messages"][-1]["content"]
    assert [p["image_url"]["url"] for p in parts if p["type"] == "image_url"] == [PNG_URI] * 2
    # What the image server sent that is no image is refused, naming the part.
    error = refused(server, "openclaw/piloop", [turn("svg", image(images.url("/svg")))])
    assert error["param"] == "messages[0].content[1].image_url.url"
    assert "no image of a known type" in error["message"]


@pytest.mark.parametrize("path", ["/drip-headers?s=6", "/drip-chunks?s=6"])
def test_pi_cuts_a_trickling_image_server_at_timeout_ms(server, images, path):
    # timeoutMs 3000 covers every read of the fetch (under gevent here), not each one.
    started = time.monotonic()
    error = refused(server, "openclaw/piloop", [turn("drip", image(images.url(path)))],
                    code="invalid_image_url")  # fmt: skip
    assert time.monotonic() - started < 3 + 1
    assert error["param"] == "messages[0].content[1].image_url.url"
    assert "did not answer within 3 s" in error["message"]
