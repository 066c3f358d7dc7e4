"""Named API keys on the Responses API (SPEC 16): the 'responses' scope, the key's
agents, and responses, sessions and forks that stay the key's own."""

from __future__ import annotations

import hashlib
import typing as t

import pytest

from chatcompat.settings import ApiKey
from chatcompat.settings import KeyLimits
from tests.conftest import AUTH

RESPONSES = "/v1/responses"
WEB, BOT, CHAT_ONLY = "web-token-0123456789", "bot-token-0123456789", "chat-only-0123456789"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@pytest.fixture
def client(make_app: t.Callable[..., t.Any]) -> t.Any:
    keys = (
        ApiKey(
            "web", digest(WEB), agents=frozenset({"main"}), limits=KeyLimits(requests_per_minute=50)
        ),
        ApiKey("bot", digest(BOT)),
        ApiKey("chatonly", digest(CHAT_ONLY), scopes=frozenset({"chat"})),
    )
    return make_app(responses_enabled=True, api_keys=keys).test_client()


def create(client: t.Any, token: str, body: dict[str, t.Any], **headers: str) -> t.Any:
    sent = {**bearer(token), **{k.replace("_", "-"): v for k, v in headers.items()}}
    return client.post(RESPONSES, json=body, headers=sent)


def test_the_responses_scope_and_the_keys_agents(client: t.Any) -> None:
    refused = create(client, CHAT_ONLY, {"input": "hi"})
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "permission_denied"
    assert "'responses'" in refused.get_json()["error"]["message"]
    other = create(client, WEB, {"model": "openclaw/beta", "input": "hi"})
    assert other.status_code == 404 and other.get_json()["error"]["code"] == "model_not_found"
    own = create(client, WEB, {"input": "hi", "user": "alice"})
    assert own.status_code == 200
    assert own.headers["x-openclaw-session-key"] == "agent:main:key:web:openai-user:alice"
    assert own.headers["x-ratelimit-limit-requests"] == "50"


def test_another_keys_response_does_not_exist(client: t.Any) -> None:
    first = create(client, WEB, {"input": "secret plan"}).get_json()
    response_id = first["id"]
    for path in (f"{RESPONSES}/{response_id}", f"{RESPONSES}/{response_id}/input_items"):
        assert client.get(path, headers=bearer(BOT)).status_code == 404
        assert client.get(path, headers=bearer(WEB)).status_code == 200
        assert client.get(path, headers=AUTH).status_code == 200  # the operator sees all
    continued = create(client, BOT, {"input": "go on", "previous_response_id": response_id})
    assert continued.status_code == 404
    assert continued.get_json()["error"]["code"] == "previous_response_not_found"
    assert client.delete(f"{RESPONSES}/{response_id}", headers=bearer(BOT)).status_code == 404
    assert client.get(f"{RESPONSES}/{response_id}", headers=bearer(WEB)).status_code == 200


def test_a_continuation_and_a_fork_stay_in_the_keys_namespace(client: t.Any) -> None:
    first = create(client, WEB, {"input": "one"})
    second = create(client, WEB, {"input": "two", "previous_response_id": first.get_json()["id"]})
    assert second.status_code == 200
    key = second.headers["x-openclaw-session-key"]
    assert key == first.headers["x-openclaw-session-key"] and key.startswith("agent:main:key:web:")
    fork = create(client, WEB, {"input": "three", "previous_response_id": first.get_json()["id"]})
    assert fork.status_code == 200
    fork_key = fork.headers["x-openclaw-session-key"]
    assert fork_key != key and fork_key.startswith("agent:main:key:web:openai:")


def test_another_keys_session_header_is_404(client: t.Any) -> None:
    web = create(client, WEB, {"input": "mine"}, x_openclaw_session_key="s1")
    key = web.headers["x-openclaw-session-key"]
    assert key == "agent:main:key:web:s1"
    stolen = create(client, BOT, {"input": "steal"}, x_openclaw_session_key=key)
    assert stolen.status_code == 404 and stolen.get_json()["error"]["code"] == "session_not_found"
    same_name = create(client, BOT, {"input": "mine too"}, x_openclaw_session_key="s1")
    assert same_name.headers["x-openclaw-session-key"] == "agent:main:key:bot:s1"


def test_x_openclaw_model_on_responses_needs_the_scope(client: t.Any) -> None:
    refused = create(client, BOT, {"input": "hi"}, x_openclaw_model="m1")
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "permission_denied"
