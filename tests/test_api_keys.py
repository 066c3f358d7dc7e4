"""Named API keys through the /v1 views (SPEC 16): scopes, agent allow-lists,
isolation of sessions and idempotency keys, limits and their headers."""

from __future__ import annotations

import hashlib
import json
import logging
import typing as t

import pytest

from chatcompat.settings import AgentConfig
from chatcompat.settings import ApiKey
from chatcompat.settings import KeyLimits
from tests.conftest import AUTH
from tests.wire import check_error

CHAT = "/v1/chat/completions"
APP1, APP2, LIMITED, MUTE = "app1-secret-token", "app2-secret-token", "limited-token", "mute-token"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


KEYS = (
    ApiKey("app1", digest(APP1), agents=frozenset({"main"})),
    ApiKey("app2", digest(APP2), agents=frozenset({"beta"})),
    ApiKey(
        "limited",
        digest(LIMITED),
        limits=KeyLimits(requests_per_minute=3, tokens_per_minute=None, concurrent_runs=1),
    ),
    ApiKey("mute", digest(MUTE), scopes=frozenset(), limits=KeyLimits(requests_per_minute=2)),
)


@pytest.fixture
def client(make_app: t.Callable[..., t.Any]) -> t.Any:
    return make_app(api_keys=KEYS).test_client()


def chat(client: t.Any, token: str, body: dict[str, t.Any] | None = None, **headers: str) -> t.Any:
    body = body or {"messages": [{"role": "user", "content": "hi"}]}
    sent = {**bearer(token), **{k.replace("_", "-"): v for k, v in headers.items()}}
    return client.post(CHAT, data=json.dumps(body), headers=sent)


def say(text: str, **fields: t.Any) -> dict[str, t.Any]:
    return {"messages": [{"role": "user", "content": text}], **fields}


def test_a_key_sees_only_its_agents(client: t.Any) -> None:
    ids = [m["id"] for m in client.get("/v1/models", headers=bearer(APP1)).get_json()["data"]]
    assert ids == ["openclaw", "openclaw/default", "openclaw/main"]
    ids = [m["id"] for m in client.get("/v1/models", headers=bearer(APP2)).get_json()["data"]]
    assert ids == ["openclaw/beta"], "the default agent (main) is not app2's"
    assert client.get("/v1/models/openclaw%2Fbeta", headers=bearer(APP1)).status_code == 404
    assert client.get("/v1/models/openclaw/default", headers=bearer(APP2)).status_code == 404
    assert client.get("/v1/models/openclaw/beta", headers=bearer(APP2)).status_code == 200
    operator = [m["id"] for m in client.get("/v1/models", headers=AUTH).get_json()["data"]]
    assert "openclaw/beta" in operator and "openclaw/scripted" in operator


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (say("hi", model="openclaw/beta"), {}),
        (say("hi", model="beta"), {}),
        (say("hi"), {"x_openclaw_agent_id": "beta"}),
    ],
)
def test_another_agent_does_not_exist_for_a_key(client: t.Any, body: t.Any, headers: t.Any) -> None:
    response = chat(client, APP1, body, **headers)
    assert response.status_code == 404
    message = check_error(response.get_json(), code="model_not_found")["message"]
    assert "scripted" not in message, "the message names no agent the key cannot use"
    # An agent that does not exist at all reads the same way.
    missing = {k: (v.replace("beta", "nope") if isinstance(v, str) else v) for k, v in body.items()}
    headers = {k: v.replace("beta", "nope") for k, v in headers.items()}
    absent = chat(client, APP1, missing, **headers)
    assert absent.status_code == 404
    assert absent.get_json()["error"]["message"] == message.replace("beta", "nope")


def test_the_default_agent_is_refused_when_not_allowed(client: t.Any) -> None:
    response = chat(client, APP2, say("hi"))
    assert response.status_code == 404
    assert "main" not in check_error(response.get_json(), code="model_not_found")["message"]
    assert chat(client, APP2, say("hi", model="openclaw/beta")).status_code == 200


def test_two_keys_with_the_same_user_get_two_conversations(client: t.Any) -> None:
    first = chat(client, APP1, say("one", user="alice"))
    assert first.headers["x-openclaw-session-key"] == "agent:main:key:app1:openai-user:alice"
    limited = chat(client, LIMITED, say("two", user="alice"))
    assert limited.headers["x-openclaw-session-key"] == "agent:main:key:limited:openai-user:alice"
    operator = client.post(CHAT, json=say("three", user="alice"), headers=AUTH)
    assert operator.headers["x-openclaw-session-key"] == "agent:main:openai-user:alice"
    store = client.application.extensions["chatcompat"].store
    assert len(store.transcript("agent:main:key:app1:openai-user:alice")) == 1
    assert len(store.transcript("agent:main:openai-user:alice")) == 1


def test_another_credentials_session_is_404_never_a_fresh_one(client: t.Any) -> None:
    own = chat(client, APP1, say("mine"), x_openclaw_session_key="chat-7")
    key = own.headers["x-openclaw-session-key"]
    assert key == "agent:main:key:app1:chat-7"
    assert chat(client, APP1, say("again"), x_openclaw_session_key=key).status_code == 200
    operator = client.post(CHAT, json=say("op", user="bob"), headers=AUTH)
    store = client.application.extensions["chatcompat"].store
    for foreign in (key, operator.headers["x-openclaw-session-key"], "agent:main:key:app2:x"):
        response = chat(client, LIMITED, say("steal"), x_openclaw_session_key=foreign)
        assert response.status_code == 404, foreign
        check_error(response.get_json(), code="session_not_found")
    assert len(store.transcript(key)) == 2, "nothing was added to app1's session"
    # The operator reaches every session by its full key.
    assert (
        client.post(
            CHAT, json=say("op"), headers={**AUTH, "x-openclaw-session-key": key}
        ).status_code
        == 200
    )
    assert len(store.transcript(key)) == 3


def test_idempotency_keys_are_per_credential(client: t.Any) -> None:
    first = chat(client, APP1, say("same", user="u"), Idempotency_Key="k1")
    other = chat(client, LIMITED, say("same", user="u"), Idempotency_Key="k1")
    assert first.status_code == other.status_code == 200
    assert first.get_json()["id"] != other.get_json()["id"], "two independent requests"
    repeat = chat(client, APP1, say("same", user="u"), Idempotency_Key="k1")
    assert repeat.get_json()["id"] == first.get_json()["id"]


def test_a_missing_scope_is_403_and_still_counted(client: t.Any) -> None:
    response = chat(client, MUTE)
    assert response.status_code == 403
    error = check_error(response.get_json(), code="permission_denied")
    assert error["type"] == "permission_error" and "'chat'" in error["message"]
    assert response.headers["x-ratelimit-remaining-requests"] == "1"
    assert client.get("/v1/models", headers=bearer(MUTE)).status_code == 403
    # Two counted: the third is over the limit, and a missing scope is still said first.
    assert chat(client, MUTE).status_code == 403
    assert chat(client, MUTE).headers["x-ratelimit-remaining-requests"] == "0"


def test_requests_per_minute_gives_429_with_headers_on_every_response(client: t.Any) -> None:
    statuses = []
    for n in range(3):
        response = chat(client, LIMITED)
        statuses.append(response.status_code)
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        assert response.headers["x-ratelimit-remaining-requests"] == str(2 - n)
        assert response.headers["x-ratelimit-reset-requests"].endswith("s")
        assert "x-ratelimit-limit-tokens" not in response.headers
    # A failed request counts too: this one is a 400 and the window is full.
    refused = chat(client, LIMITED, {"messages": []})
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    error = check_error(refused.get_json(), code="rate_limit_exceeded")
    assert error["type"] == "rate_limit_error" and "3 requests per minute" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    # Other keys and the operator are not affected; the operator gets no such headers.
    assert chat(client, APP1).status_code == 200
    operator = client.post(CHAT, json=say("x"), headers=AUTH)
    assert operator.status_code == 200 and "x-ratelimit-limit-requests" not in operator.headers


def test_a_failed_request_counts(client: t.Any) -> None:
    assert chat(client, LIMITED, {"messages": []}).status_code == 400
    assert chat(client, LIMITED, say("x", model="nope")).status_code == 404
    last = chat(client, LIMITED)
    assert last.status_code == 200 and last.headers["x-ratelimit-remaining-requests"] == "0"


def test_the_tokens_of_finished_runs_count(make_app: t.Callable[..., t.Any]) -> None:
    key = ApiKey("tok", digest("tok-token"), limits=KeyLimits(tokens_per_minute=5))
    client = make_app(api_keys=(key,)).test_client()
    first = chat(client, "tok-token", say("a few words of input here"))
    assert first.status_code == 200
    used = first.get_json()["usage"]["total_tokens"]
    assert used >= 5
    assert first.headers["x-ratelimit-remaining-tokens"] == "5", "counted after the run"
    refused = chat(client, "tok-token")
    assert refused.status_code == 429
    assert "5 tokens per minute" in refused.get_json()["error"]["message"]
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert "x-ratelimit-limit-requests" not in refused.headers


def test_a_run_slot_is_held_while_running_and_freed_at_the_end(client: t.Any) -> None:
    store = client.application.extensions["chatcompat"].store
    assert store.acquire_slot("limited", "another-worker", 1, 30.0)
    busy = chat(client, LIMITED)
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
    assert "1 concurrent runs" in busy.get_json()["error"]["message"]
    store.release_slot("limited", "another-worker")
    assert chat(client, LIMITED).status_code == 200
    # Freed after the run: the slot can be taken again right away.
    assert store.acquire_slot("limited", "check", 1, 30.0)
    store.release_slot("limited", "check")
    # A streamed run frees it too.
    stream = chat(client, LIMITED, say("hi", stream=True))
    assert stream.status_code == 200 and stream.get_data().endswith(b"data: [DONE]\n\n")
    assert stream.headers["x-ratelimit-remaining-requests"] == "0", "a stream has them too"
    stream.close()
    assert store.acquire_slot("limited", "check", 1, 30.0)


def test_the_lockout_counts_wrong_tokens_and_any_right_key_clears_it(client: t.Any) -> None:
    for _ in range(2):
        assert chat(client, "wrong").status_code == 401
    assert chat(client, APP1).status_code == 200  # clears the count
    for _ in range(3):
        assert chat(client, "wrong").status_code == 401
    locked = chat(client, APP2, say("x", model="openclaw/beta"))
    assert locked.status_code == 429
    check_error(locked.get_json(), code="too_many_auth_failures")


def test_logs_and_metrics_name_the_key_never_its_token(client: t.Any, caplog: t.Any) -> None:
    caplog.set_level(logging.INFO, logger="chatcompat")
    responses = [
        chat(client, APP1),
        chat(client, LIMITED, say("x", model="openclaw/nope")),
        client.post(CHAT, json=say("x"), headers=AUTH),
    ]
    assert [r.status_code for r in responses] == [200, 404, 200]
    for response in responses:
        response.close()  # the log line is written when the response is closed
    lines = [r.msg for r in caplog.records if r.name == "chatcompat.request"]
    assert [line.get("key") for line in lines] == ["app1", "limited", "operator"]
    exposition = client.get("/metrics").get_data(as_text=True)
    assert 'chatcompat_key_requests_total{key="app1",status="200"}' in exposition
    assert 'chatcompat_key_requests_total{key="limited",status="404"}' in exposition
    for token in (APP1, LIMITED, MUTE, AUTH["Authorization"][7:]):
        assert token not in caplog.text and token not in exposition


@pytest.mark.parametrize(
    ("text", "stream", "status"),
    [
        ("[[fail]]", False, 502),
        ("[[crash]]", False, 500),
        ("[[fail-after:2]]", True, 200),  # an error frame after two words
        ("[[timeout]]", False, 504),
    ],
)
def test_a_failed_run_frees_its_slot(client: t.Any, text: str, stream: bool, status: int) -> None:
    store = client.application.extensions["chatcompat"].store
    response = chat(client, LIMITED, say(text, model="openclaw/scripted", stream=stream))
    assert response.status_code == status
    response.get_data()
    response.close()
    assert store.acquire_slot("limited", "check", 1, 30.0), "the run's slot was given back"


def test_x_openclaw_model_needs_the_model_override_scope(make_app: t.Callable[..., t.Any]) -> None:
    keys = (
        ApiKey("plain", digest("plain-token-0123")),
        ApiKey("chooser", digest("chooser-token-01"), scopes=frozenset({"chat", "model_override"})),
    )
    agents = (AgentConfig(id="main", backend="echo", default=True, models=("m1",)),)
    client = make_app(api_keys=keys, agents=agents, default_agent_id="main").test_client()
    refused = chat(client, "plain-token-0123", x_openclaw_model="m1")
    assert refused.status_code == 403
    assert (
        "'model_override'" in check_error(refused.get_json(), code="permission_denied")["message"]
    )
    assert chat(client, "plain-token-0123", x_openclaw_model="  ").status_code == 200  # blank: none
    assert chat(client, "chooser-token-01", x_openclaw_model="m1").status_code == 200
    listed = chat(client, "chooser-token-01", x_openclaw_model="m2")
    assert listed.status_code == 400, "then the agent's list"
    assert (
        client.post(CHAT, json=say("x"), headers={**AUTH, "x-openclaw-model": "m1"}).status_code
        == 200
    )


def test_reserved_namespaces_stay_reserved_for_a_key(client: t.Any) -> None:
    response = chat(client, APP1, x_openclaw_session_key="subagent:x")
    assert response.status_code == 400
