"""No configured secret leaves a real gateway: not in the JSON errors and error frames
relayed from an upstream that quotes the agent's key, not in the server's log."""

from __future__ import annotations

import json

import pytest

from tests.fake_upstream import FakeUpstream
from tests.live.conftest import AUTH
from tests.live.conftest import TOKEN
from tests.live.conftest import RawExchange
from tests.live.conftest import chat
from tests.live.conftest import close_open_exchanges
from tests.live.conftest import user
from tests.live.conftest import wait_until
from tests.wire import parse_sse

pytestmark = pytest.mark.live

KEY_VARIABLE = "LIVE_SECRET_UPSTREAM_KEY"  # not CHATCOMPAT_*: the live servers drop those
ENV_KEY = "sk-live-env-key-T3stAbCdEfGhIjKlMnOpQrStUv"
FILE_KEY = "sk-live-file-key-ZyXwVuTsRqPoNmLkJiHgFeDc"


@pytest.fixture
def server(make_server, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, ENV_KEY)  # the server's environment is copied from ours
    with FakeUpstream() as fake:
        upstream = {"backend": "openai", "baseUrl": fake.base_url, "model": "m"}
        agents = [
            {"id": "env", "default": True, **upstream, "apiKeyEnv": KEY_VARIABLE},
            {"id": "file", **upstream, "apiKey": FILE_KEY},
        ]
        yield make_server(overrides={"agents": {"list": agents}})


def body(model: str, text: str, stream: bool) -> dict:
    return {"model": f"openclaw/{model}", "stream": stream, "messages": [user(text)]}


@pytest.mark.parametrize(("agent", "key"), [("env", ENV_KEY), ("file", FILE_KEY)])
def test_upstream_errors_quoting_the_key_reach_neither_client_nor_log(server, agent, key):
    refused = chat(server.port, body(agent, "hi [[status:401]] [[quote-key:28]]", False))
    assert refused.status == 401
    error = refused.json()["error"]
    assert error["message"].endswith("Incorrect API key provided: <redacted>")

    streamed = chat(server.port, body(agent, "a b c [[error-frame:1]] [[quote-key]]", True))
    assert streamed.status == 200
    chunks, _ = parse_sse(streamed.body())
    assert "Incorrect API key provided: <redacted>" in chunks[-1]["error"]["message"]
    close_open_exchanges()

    # A client that put the gateway's token in a path: the request's log line names it.
    lost = RawExchange(server.port, "GET", f"/v1/{TOKEN}", {**AUTH, "Connection": "close"})
    assert lost.status == 404 and TOKEN not in lost.body().decode()
    wait_until(
        lambda: '"path":"/v1/<redacted>"' in server.log_path.read_text(),
        10,
        "the request line of the lost client",
    )
    log = server.log_path.read_text()
    for secret in (key[:20], TOKEN):
        assert secret not in log
        assert secret not in json.dumps(error) + json.dumps(chunks)
