"""The /v1 views through the Flask test client: order of checks, JSON, SSE, sessions."""

from __future__ import annotations

import io
import json

import pytest

from chatcompat.settings import AgentConfig
from tests.conftest import AUTH
from tests.conftest import TOKEN
from tests.wire import check
from tests.wire import check_completion
from tests.wire import check_error
from tests.wire import parse_sse
from tests.wire import stream_text

CHAT = "/v1/chat/completions"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def post(client, body=None, headers=None, **kwargs):
    data = kwargs.pop("data", None)
    if data is None:
        data = json.dumps(body if body is not None else {"messages": [user("hi")]})
    return client.post(CHAT, data=data, headers={**AUTH, **(headers or {})}, **kwargs)


# -- order of checks ---------------------------------------------------------------


def test_disabled_endpoint_is_404_before_method_and_auth(make_app):
    client = make_app(chat_completions_enabled=False).test_client()
    for method in ("GET", "POST"):
        response = client.open(CHAT, method=method)
        assert response.status_code == 404
        error = check_error(response.get_json(), code="endpoint_disabled")
        assert "gateway.http.endpoints.chatCompletions.enabled" in error["message"]
    assert client.get("/v1/models").status_code == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405_before_auth(client, method):
    response = client.open(CHAT, method=method)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    check_error(response.get_json(), code="method_not_allowed")


def test_missing_credential_is_401_with_www_authenticate(client):
    response = client.post(CHAT, json={"messages": [user("hi")]})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (
        check_error(response.get_json(), code="invalid_api_key")["type"] == "authentication_error"
    )


@pytest.mark.parametrize(
    "header",
    [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER   {TOKEN}  ", f"Bearer {TOKEN}\t"],
)
def test_bearer_word_is_case_insensitive_and_secret_trimmed(client, header):
    response = client.post(CHAT, json={"messages": [user("hi")]}, headers={"Authorization": header})
    assert response.status_code == 200


@pytest.mark.parametrize("header", ["Bearer wrong", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x"])
def test_wrong_credential_is_401(client, header):
    response = client.post(CHAT, json={"messages": [user("hi")]}, headers={"Authorization": header})
    assert response.status_code == 401
    assert TOKEN not in response.get_data(as_text=True)


def test_lockout_after_max_attempts_even_with_the_right_token(client):
    for _ in range(3):
        assert post(client, headers={"Authorization": "Bearer nope"}).status_code == 401
    response = post(client)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) == 300
    assert (
        check_error(response.get_json(), code="too_many_auth_failures")["type"]
        == "rate_limit_error"
    )


def test_missing_credential_does_not_count_and_success_resets(client):
    for _ in range(5):
        assert client.post(CHAT, json={}).status_code == 401
    assert post(client, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert post(client, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert post(client).status_code == 200  # resets the count
    assert post(client, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert post(client, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert post(client).status_code == 200


def test_max_attempts_one(make_app, settings):
    from chatcompat.settings import RateLimit

    client = make_app(rate_limit=RateLimit(max_attempts=1, exempt_loopback=False)).test_client()
    assert post(client, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert post(client).status_code == 429


@pytest.mark.parametrize(
    ("first", "second"),
    [("203.0.113.9", "::ffff:203.0.113.9"), ("::ffff:203.0.113.9", "203.0.113.9")],
)
def test_an_ipv4_mapped_address_is_the_same_client_for_the_lockout(make_app, first, second):
    from chatcompat.settings import RateLimit

    client = make_app(rate_limit=RateLimit(max_attempts=1)).test_client()
    bad = {"Authorization": "Bearer nope"}
    assert post(client, headers=bad, environ_base={"REMOTE_ADDR": first}).status_code == 401
    assert post(client, environ_base={"REMOTE_ADDR": second}).status_code == 429


def test_an_ipv4_mapped_forwarded_address_is_the_same_client(make_app):
    from chatcompat.settings import RateLimit

    client = make_app(
        rate_limit=RateLimit(max_attempts=1), trusted_proxies=("127.0.0.1/32",)
    ).test_client()
    bad = {"Authorization": "Bearer nope", "X-Forwarded-For": "::ffff:203.0.113.7"}
    assert post(client, headers=bad).status_code == 401
    assert post(client, headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 429


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", CHAT),
        ("GET", CHAT),
        ("GET", "/v1/models"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/nowhere"),
    ],
)
def test_every_response_carries_the_security_headers(client, method, path):
    response = client.open(path, method=method, headers=AUTH, json={"messages": [user("hi")]})
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_loopback_is_exempt_when_configured(make_app):
    from chatcompat.settings import RateLimit

    client = make_app(rate_limit=RateLimit(max_attempts=1)).test_client()
    for _ in range(3):
        assert post(client, headers={"Authorization": "Bearer nope"}).status_code == 401


def test_trusted_proxy_forwarded_for_is_the_client(make_app):
    from chatcompat.settings import RateLimit

    client = make_app(
        rate_limit=RateLimit(max_attempts=1), trusted_proxies=("127.0.0.1/32",)
    ).test_client()
    bad = {"Authorization": "Bearer nope", "X-Forwarded-For": "203.0.113.7"}
    assert post(client, headers=bad).status_code == 401
    assert post(client, headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 429
    # Another client behind the same proxy is not locked out; loopback stays exempt.
    assert post(client, headers={"X-Forwarded-For": "203.0.113.8"}).status_code == 200
    assert post(client).status_code == 200


def test_auth_mode_none(make_app):
    client = make_app(auth_mode="none", auth_secret=None).test_client()
    assert client.post(CHAT, json={"messages": [user("hi")]}).status_code == 200


def test_password_mode_uses_bearer(make_app):
    client = make_app(auth_mode="password", auth_secret="pw-123").test_client()
    ok = client.post(
        CHAT, json={"messages": [user("hi")]}, headers={"Authorization": "Bearer pw-123"}
    )
    assert ok.status_code == 200


# -- body -----------------------------------------------------------------------


def test_body_over_limit_by_content_length_is_413(make_app):
    client = make_app(max_body_bytes=100).test_client()
    response = post(client, data="x" * 101)
    assert response.status_code == 413
    check_error(response.get_json(), code="payload_too_large")


def test_chunked_body_over_limit_is_413(make_app):
    client = make_app(max_body_bytes=100).test_client()

    # No Content-Length: the limit is enforced while reading (as with chunked uploads).
    response = client.post(
        CHAT,
        input_stream=io.BytesIO(b" " * 200),
        headers=AUTH,
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413


@pytest.mark.parametrize("data", ["", "   \n", "{}"])
def test_empty_body_counts_as_empty_object(client, data):
    response = post(client, data=data)
    assert response.status_code == 400
    error = check_error(response.get_json(), code="missing_required_parameter")
    assert error["param"] == "messages"


@pytest.mark.parametrize(
    "data", ["{", "not json", '{"messages": NaN}', '{"a": Infinity}', b"\xff\xfe"]
)
def test_not_json_is_400(client, data):
    response = post(client, data=data)
    assert response.status_code == 400
    check_error(response.get_json(), code="invalid_json")


def test_deeply_nested_json_is_400_not_500(client):
    response = post(client, data="[" * 100000 + "]" * 100000)
    assert response.status_code == 400


def test_form_content_type_is_accepted(client):
    body = json.dumps({"messages": [user("hi there")]})
    response = post(client, data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert response.get_json()["choices"][0]["message"]["content"] == "hi there"


# -- JSON response ------------------------------------------------------------------


def test_json_completion_shape(client):
    response = post(client, {"model": "openclaw", "messages": [user("hello  brave world")]})
    assert response.status_code == 200
    assert response.content_type == "application/json"
    body = response.get_json()
    check_completion(body)
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "openclaw"
    assert body["choices"][0]["message"]["content"] == "hello  brave world"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert response.headers["x-openclaw-session-key"].startswith("agent:main:openai:")


def test_model_is_echoed_unchanged_and_defaults_to_openclaw(client):
    assert post(client, {"messages": [user("a")]}).get_json()["model"] == "openclaw"
    body = post(client, {"model": " OpenClaw/Beta", "messages": [user("a")]}).get_json()
    assert body["model"] == " OpenClaw/Beta"


def test_request_id_is_echoed_or_made(client):
    response = post(client, headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    made = post(client, headers={"x-request-id": "bad id with spaces"}).headers["x-request-id"]
    assert made and " " not in made
    assert client.get("/nope").headers["x-request-id"]


# -- SSE --------------------------------------------------------------------------------


def test_stream_frames_in_order(client):
    response = post(
        client,
        {
            "stream": True,
            "model": "m-echo-ignored" if False else "openclaw",
            "messages": [user("one two three")],
        },
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Length" not in response.headers
    chunks, frames = parse_sse(response.get_data())
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"] for c in chunks[1:4]] == [
        {"content": "one"},
        {"content": " two"},
        {"content": " three"},
    ]
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert not any("usage" in c for c in chunks)


@pytest.mark.parametrize(
    "options,expected",
    [
        ({"include_usage": True}, True),
        ({"include_usage": False}, False),
        ({}, False),
        (None, False),
    ],
)
def test_usage_chunk_only_when_exactly_true(client, options, expected):
    body = {"stream": True, "messages": [user("a b")], "stream_options": options}
    chunks, _ = parse_sse(post(client, body).get_data())
    has_usage = chunks[-1].get("choices") == []
    assert has_usage is expected
    if expected:
        assert chunks[-1]["usage"]["completion_tokens"] == 2
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("stream", [False, None, "yes"])
def test_only_true_streams(client, stream):
    response = post(client, {"stream": stream, "messages": [user("a")]})
    if stream == "yes":
        assert response.status_code == 400
    else:
        assert response.content_type == "application/json"


@pytest.mark.live  # waits out real timeouts
def test_keepalive_comments_while_agent_is_silent(client):
    body = {"stream": True, "model": "openclaw/scripted", "messages": [user("[[silent:0.7]] hi")]}
    _, frames = parse_sse(post(client, body).get_data())
    assert frames.count(": keepalive") >= 2
    assert frames.index(": keepalive") > 0  # after the role chunk


def test_error_after_stream_started_is_an_error_frame_then_done(client):
    body = {
        "stream": True,
        "model": "openclaw/scripted",
        "messages": [user("[[fail-after:2]] one two three")],
    }
    chunks, frames = parse_sse(post(client, body).get_data())
    assert stream_text(chunks) == "one two"
    error = chunks[-1]["error"]
    assert error["code"] == "upstream_error" and error["type"] == "api_error"
    assert not any(c.get("choices") and c["choices"][0]["finish_reason"] for c in chunks[:-1])


def test_tool_calls_in_json_and_stream(client):
    body = {"model": "openclaw/scripted", "messages": [user("[[tools]]")]}
    completion = post(client, body).get_json()
    check_completion(completion)
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        },
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    chunks, _ = parse_sse(post(client, {**body, "stream": True}).get_data())
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert (
        "".join(c["function"]["arguments"] for c in calls if c["index"] == 0) == '{"city":"Paris"}'
    )
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


# -- errors before the stream: plain HTTP --------------------------------------------------


@pytest.mark.parametrize(
    "directive,status,code",
    [
        ("[[reject:429]]", 429, "upstream_code"),
        ("[[reject:400]]", 400, "upstream_code"),
        ("[[fail]]", 502, "upstream_error"),
        ("[[timeout]]", 504, "timeout"),
        ("[[crash]]", 500, "internal_error"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_agent_errors_before_start_are_http_errors(client, directive, status, code, stream):
    body = {"stream": stream, "model": "openclaw/scripted", "messages": [user(directive)]}
    response = post(client, body)
    assert response.status_code == status
    assert response.content_type == "application/json"
    check_error(response.get_json(), code=code)
    assert "secret internals" not in response.get_data(as_text=True)


@pytest.mark.live  # waits out real timeouts
def test_run_timeout_is_504(make_app, settings):
    import dataclasses

    agents = tuple(
        dataclasses.replace(a, timeout_seconds=0.3) if a.id == "scripted" else a
        for a in settings.agents
    )
    client = make_app(agents=agents).test_client()
    body = {"model": "openclaw/scripted", "messages": [user("[[hang]]")]}
    response = post(client, body)
    assert response.status_code == 504
    check_error(response.get_json(), code="timeout")


# -- routing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model,agent",
    [
        ("openclaw", "main"),
        ("openclaw/default", "main"),
        ("OPENCLAW/BETA", "beta"),
        ("openclaw:beta", "beta"),
        ("agent:beta", "beta"),
        ("beta", "beta"),
        (None, "main"),
    ],
)
def test_model_strings_pick_the_agent(client, model, agent):
    body = {"messages": [user("x")]} | ({"model": model} if model else {})
    response = post(client, body)
    assert response.status_code == 200
    assert response.headers["x-openclaw-session-key"].startswith(f"agent:{agent}:")


@pytest.mark.parametrize("model", ["gpt-4o", "openclaw/missing", "agent:", "openclaw/Bad Id"])
def test_unknown_model_is_404_model_not_found(client, model):
    response = post(client, {"model": model, "messages": [user("x")]})
    assert response.status_code == 404
    error = check_error(response.get_json(), code="model_not_found")
    assert error["param"] == "model"


def test_agent_header_wins_and_foreign_model_is_ignored(client):
    for header in ("x-openclaw-agent-id", "x-openclaw-agent"):
        response = post(
            client, {"model": "gpt-4o", "messages": [user("x")]}, headers={header: "Beta"}
        )
        assert response.status_code == 200
        assert response.headers["x-openclaw-session-key"].startswith("agent:beta:")
        assert response.get_json()["model"] == "gpt-4o"


def test_unknown_agent_header_is_404(client):
    response = post(client, headers={"x-openclaw-agent-id": "ghost"})
    assert response.status_code == 404
    check_error(response.get_json(), code="model_not_found")


# -- sessions ------------------------------------------------------------------------------


def test_session_key_from_user_is_lowercased_and_sticky(client):
    first = post(client, {"user": "Alice", "messages": [user("one")]})
    assert first.headers["x-openclaw-session-key"] == "agent:main:openai-user:alice"
    second = post(client, {"user": "alice", "messages": [user("two")]})
    assert second.headers["x-openclaw-session-key"] == "agent:main:openai-user:alice"


@pytest.mark.parametrize(
    "header,expected",
    [
        ("chat-1", "agent:main:chat-1"),
        ("  chat-1  ", "agent:main:chat-1"),
        ("agent:main:chat-1", "agent:main:chat-1"),
        ("AGENT:Main:chat-1", "agent:main:chat-1"),
    ],
)
def test_session_header(client, header, expected):
    response = post(client, headers={"x-openclaw-session-key": header})
    assert response.headers["x-openclaw-session-key"] == expected


@pytest.mark.parametrize(
    "header", ["agent:beta:chat-1", "agent:main", "agent:main:", "x" * 4097, "tab\there"]
)
def test_bad_session_header_is_400(client, header):
    response = post(client, headers={"x-openclaw-session-key": header})
    assert response.status_code == 400
    check_error(response.get_json(), code="invalid_session_key")


def test_bare_session_key_is_scoped_to_the_routed_agent(client):
    response = post(
        client,
        {"model": "openclaw/beta", "messages": [user("x")]},
        headers={"x-openclaw-session-key": "chat-1"},
    )
    assert response.headers["x-openclaw-session-key"] == "agent:beta:chat-1"


def _scripted_log(tmp_path, monkeypatch):
    from tests.scripted_agent import read_log

    path = tmp_path / "agent.log"
    monkeypatch.setenv("SCRIPTED_AGENT_LOG", str(path))
    return lambda: [line for line in read_log(str(path)) if line["event"] == "start"]


def test_history_is_stored_and_not_duplicated(client, tmp_path, monkeypatch):
    runs = _scripted_log(tmp_path, monkeypatch)
    headers = {"x-openclaw-session-key": "hist"}
    model = "openclaw/scripted"
    post(
        client,
        {
            "model": model,
            "messages": [{"role": "system", "content": "Be brief."}, user("first question")],
        },
        headers=headers,
    )
    # The client resends its copy of the history, as OpenAI clients do.
    post(
        client,
        {
            "model": model,
            "messages": [
                {"role": "system", "content": "Be brief."},
                user("first question"),
                {"role": "assistant", "content": "first question"},
                user("second question"),
            ],
        },
        headers=headers,
    )
    first, second = runs()
    assert first["messages"] == [user("first question")]
    assert first["system"] == "Be brief."
    assert second["history_count"] == 2
    assert second["messages"] == [
        user("first question"),
        {"role": "assistant", "content": "first question"},
        user("second question"),
    ]


def test_new_session_uses_the_request_history_and_stores_it(client, tmp_path, monkeypatch):
    runs = _scripted_log(tmp_path, monkeypatch)
    headers = {"x-openclaw-session-key": "imported"}
    earlier = [user("old q"), {"role": "assistant", "content": "old a"}]
    post(
        client,
        {"model": "openclaw/scripted", "messages": [*earlier, user("new q")]},
        headers=headers,
    )
    post(client, {"model": "openclaw/scripted", "messages": [user("next q")]}, headers=headers)
    first, second = runs()
    assert first["history_count"] == 2
    assert second["messages"] == [
        *earlier,
        user("new q"),
        {"role": "assistant", "content": "new q"},
        user("next q"),
    ]


def test_agent_system_prompt_comes_before_request_system_text(client, tmp_path, monkeypatch):
    from chatcompat.settings import AgentConfig  # noqa: F401  (documentation of the shape)

    runs = _scripted_log(tmp_path, monkeypatch)
    post(
        client,
        {
            "model": "openclaw/scripted",
            "messages": [
                {"role": "developer", "content": "Dev says."},
                {"role": "system", "content": [{"type": "text", "text": "Sys says."}]},
                user("q"),
            ],
        },
    )
    assert runs()[0]["system"] == "Dev says.\n\nSys says."


def test_failed_run_stores_nothing(client, app):
    headers = {"x-openclaw-session-key": "fails"}
    post(client, {"model": "openclaw/scripted", "messages": [user("hello")]}, headers=headers)
    post(
        client,
        {
            "model": "openclaw/scripted",
            "stream": True,
            "messages": [user("[[fail-after:1]] a b c")],
        },
        headers=headers,
    ).get_data()
    post(client, {"model": "openclaw/scripted", "messages": [user("[[fail]]")]}, headers=headers)
    store = app.extensions["chatcompat"].store
    history = store.load_history("agent:scripted:fails", 100)
    assert history == [user("hello"), {"role": "assistant", "content": "hello"}]


def test_missing_user_message_is_400(client):
    for messages in (
        [{"role": "system", "content": "only system"}],
        [user("q"), {"role": "assistant", "content": "a"}],
        [user("   ")],
    ):
        response = post(client, {"messages": messages})
        assert response.status_code == 400, messages
        assert check_error(response.get_json())["message"] == "Missing user message in messages."


# -- models ----------------------------------------------------------------------------------


def test_models_list_and_detail(client):
    listing = client.get("/v1/models", headers=AUTH)
    assert listing.status_code == 200
    body = listing.get_json()
    check("ListModelsResponse", body)
    assert [m["id"] for m in body["data"]] == [
        "openclaw",
        "openclaw/default",
        "openclaw/main",
        "openclaw/beta",
        "openclaw/scripted",
    ]
    assert {m["owned_by"] for m in body["data"]} == {"chatcompat"}
    detail = client.get("/v1/models/openclaw%2Fbeta", headers=AUTH)
    assert detail.status_code == 200
    check("Model", detail.get_json())
    assert detail.get_json()["id"] == "openclaw/beta"
    missing = client.get("/v1/models/openclaw/ghost", headers=AUTH)
    assert missing.status_code == 404
    check_error(missing.get_json(), code="model_not_found")
    assert client.get("/v1/models").status_code == 401
    assert client.post("/v1/models", headers=AUTH).headers["Allow"] == "GET"


@pytest.mark.parametrize("path", ["/v1/nope", "/v1/chat/completions/", "/v1/models/", "/elsewhere"])
def test_unknown_paths_are_json_404(client, path):
    response = client.post(path, headers=AUTH)
    assert response.status_code == 404
    assert response.content_type == "application/json"
    check_error(response.get_json(), code="not_found")


def test_images_are_dropped_with_a_warning_for_text_only_agents(
    client, tmp_path, monkeypatch, caplog
):
    runs = _scripted_log(tmp_path, monkeypatch)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = {
        "model": "openclaw/scripted",
        "messages": [user([{"type": "text", "text": "see"}, image])],
    }
    assert post(client, body).status_code == 200
    assert runs()[0]["messages"] == [user([{"type": "text", "text": "see"}])]
    assert "dropped 1 image part" in caplog.text


def test_a_stateless_conversation_continues_with_the_returned_key(client, tmp_path, monkeypatch):
    runs = _scripted_log(tmp_path, monkeypatch)
    first = post(client, {"model": "openclaw/scripted", "messages": [user("remember me")]})
    key = first.headers["x-openclaw-session-key"]
    assert key.startswith("agent:scripted:openai:")
    post(
        client,
        {"model": "openclaw/scripted", "messages": [user("again")]},
        headers={"x-openclaw-session-key": key},
    )
    assert runs()[1]["messages"] == [
        user("remember me"),
        {"role": "assistant", "content": "remember me"},
        user("again"),
    ]


def test_untrusted_loopback_proxy_is_warned_about_once(client, caplog):
    for _ in range(2):
        post(client, headers={"X-Forwarded-For": "203.0.113.7"})
    assert caplog.text.count("gateway.trustedProxies") == 1


@pytest.mark.parametrize(
    "raw",
    [
        '{"user": "\\udfff", "messages": [{"role": "user", "content": "hi"}]}',
        '{"messages": [{"role": "user", "content": "a \\ud800 b"}]}',
        '{"messages": [{"role": "user", "content": "a"}], "metadata": {"k": "\\ud83d"}}',
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_lone_surrogate_escapes_are_400_not_500(client, raw, stream):
    body = json.loads(raw)
    body["stream"] = stream
    response = post(client, data=json.dumps(body))  # ensure_ascii keeps the escapes
    assert response.status_code == 400
    assert "surrogate" in check_error(response.get_json(), code="invalid_json")["message"]


def test_escaped_surrogate_pairs_are_fine(client):
    raw = '{"messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}]}'
    response = post(client, data=raw)
    assert response.status_code == 200
    assert response.get_json()["choices"][0]["message"]["content"] == "smile \U0001f600"


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1E400"])
def test_numbers_out_of_float_range_are_400_before_anything_runs(client, number):
    raw = '{"messages": [{"role": "user", "content": "hi", "x": NUM}]}'.replace("NUM", number)
    response = post(client, data=raw)
    assert response.status_code == 400
    check_error(response.get_json(), code="invalid_json")


def test_missing_user_message_is_checked_before_routing(client):
    body = {"model": "gpt-4o", "messages": [{"role": "assistant", "content": "hi"}]}
    response = post(client, body, headers={"x-openclaw-session-key": "agent:other:x"})
    assert response.status_code == 400
    assert check_error(response.get_json())["message"] == "Missing user message in messages."


# -- x-openclaw-model and sessions.userKeys (issue 13) ------------------------------------


@pytest.fixture
def upstream_client(make_app, settings, fake):
    """The app with one more agent, ``up``: the openai backend on the fake upstream,
    whose own model is ``base-model`` and which may switch to two others."""
    up = AgentConfig(
        id="up",
        backend="openai",
        options={"baseUrl": fake.base_url, "model": "base-model"},
        models=("small-model", "vendor/big-model"),
    )
    return make_app(agents=(*settings.agents, up)).test_client()


def test_the_model_header_picks_the_upstream_model_of_this_run(upstream_client, fake):
    body = {"model": "openclaw/up", "messages": [user("hi")]}
    for header, sent in ((None, "base-model"), ("vendor/big-model", "vendor/big-model")):
        headers = {"x-openclaw-model": header} if header else {}
        for stream in (False, True):
            response = post(upstream_client, {**body, "stream": stream}, headers)
            assert response.status_code == 200, response.get_data()
            assert fake.chat_requests()[-1].body["model"] == sent
            if not stream:  # the reply still names the model the client asked for
                assert response.get_json()["model"] == "openclaw/up"


def test_an_unlisted_model_is_400_before_anything_runs(upstream_client, fake):
    for agent, header in (("up", "gpt-5"), ("main", "small-model")):  # main lists none
        response = post(
            upstream_client,
            {"model": f"openclaw/{agent}", "messages": [user("hi")]},
            {"x-openclaw-model": header},
        )
        assert response.status_code == 400
        error = check_error(response.get_json(), code="model_not_allowed")
        assert error["param"] == "x-openclaw-model"
    assert fake.chat_requests() == []


def test_the_model_header_is_checked_after_authentication(upstream_client):
    response = upstream_client.post(
        CHAT,
        json={"model": "openclaw/up", "messages": [user("hi")]},
        headers={"x-openclaw-model": "gpt-5"},
    )
    assert response.status_code == 401


def test_a_reserved_session_key_is_400(client):
    response = post(client, headers={"x-openclaw-session-key": "agent:main:subagent:spoofed"})
    assert response.status_code == 400
    error = check_error(response.get_json(), code="reserved_session_key")
    assert error["param"] == "x-openclaw-session-key"


def test_without_user_keys_user_is_passed_on_and_selects_no_session(make_app, settings, fake):
    up = AgentConfig(id="up", backend="openai", options={"baseUrl": fake.base_url, "model": "m"})
    agents = (*settings.agents, up)
    keyed = make_app(agents=agents).test_client()
    unkeyed = make_app(agents=agents, session_user_keys=False).test_client()
    body = {"model": "openclaw/up", "user": "alice", "messages": [user("hi")]}
    first = post(keyed, body).headers["x-openclaw-session-key"]
    assert first == "agent:up:openai-user:alice"
    assert "user" not in fake.chat_requests()[-1].body  # the gateway's: it chose the session
    keys = {post(unkeyed, body).headers["x-openclaw-session-key"] for _ in range(2)}
    assert len(keys) == 2 and all(key.startswith("agent:up:openai:") for key in keys)
    assert fake.chat_requests()[-1].body["user"] == "alice"


def test_a_models_detail_lists_the_models_the_header_may_choose(upstream_client):
    detail = upstream_client.get("/v1/models/openclaw%2Fup", headers=AUTH)
    check("Model", detail.get_json())
    assert detail.get_json()["models"] == ["small-model", "vendor/big-model"]
    for plain in ("openclaw/main", "openclaw", "openclaw/default"):
        body = upstream_client.get(f"/v1/models/{plain}", headers=AUTH).get_json()
        check("Model", body)
        assert "models" not in body and body["id"] == plain
