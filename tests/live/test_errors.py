"""Every row of SPEC 12's error table, over real HTTP to gunicorn: status, envelope
(OpenAI's error schema), type, code, param and the headers the row promises."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from tests.live.conftest import AUTH
from tests.live.conftest import CHAT
from tests.live.conftest import MAX_BODY_BYTES
from tests.live.conftest import SCRIPTED as SCRIPTED_BACKEND
from tests.live.conftest import TOKEN
from tests.live.conftest import RawExchange
from tests.live.conftest import chat
from tests.live.conftest import close_open_exchanges
from tests.live.conftest import get_status
from tests.live.conftest import post_on
from tests.live.conftest import start_server
from tests.live.conftest import user
from tests.live.conftest import wait_until
from tests.wire import check_error
from tests.wire import parse_sse

pytestmark = pytest.mark.live

SCRIPTED = "openclaw/scripted"


def expect_error(
    exchange: RawExchange, status: int, type_: str, code: str | None, body: bytes | None = None
) -> dict:
    """The response is ``status`` with a valid JSON error envelope; returns ``error``."""
    body = exchange.body() if body is None else body
    assert exchange.status == status, (exchange.status_line, body[:300])
    assert exchange.header("Content-Type") == "application/json"
    assert exchange.header("x-request-id")
    error = check_error(json.loads(body), code=code)
    assert error["type"] == type_, error
    assert b"Traceback" not in body
    return error


# -- endpoint disabled ---------------------------------------------------------------------


def test_disabled_endpoint_is_404_before_method_and_auth(make_server):
    server = make_server(
        "disabled",
        workers=1,
        overrides={"gateway": {"http": {"endpoints": {"chatCompletions": {"enabled": False}}}}},
    )
    for method, path, headers in [
        ("POST", CHAT, AUTH),
        ("POST", CHAT, {}),  # no credential: still 404, the endpoint does not exist
        ("GET", CHAT, {}),  # wrong method: 404 comes first
        ("GET", "/v1/models", AUTH),
    ]:
        exchange = RawExchange(server.port, method, path, headers, b"{}")
        error = expect_error(exchange, 404, "invalid_request_error", "endpoint_disabled")
        assert "gateway.http.endpoints.chatCompletions.enabled" in error["message"]
        exchange.close()
    assert get_status(server.port, "/healthz") == 200


# -- unknown path, wrong method ------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    "path", ["/nope", "/v1/nope", "/v1/chat/completions/", "/v1/models/", "/healthz/"]
)
def test_unknown_path_is_json_404(live, method, path):
    exchange = RawExchange(live.port, method, path, AUTH, b"{}")
    expect_error(exchange, 404, "invalid_request_error", "not_found")


@pytest.mark.parametrize(
    "method,path,allowed",
    [
        ("GET", CHAT, {"POST"}),
        ("PUT", CHAT, {"POST"}),
        ("DELETE", CHAT, {"POST"}),
        ("PATCH", CHAT, {"POST"}),
        ("POST", "/v1/models", {"GET"}),
        ("DELETE", "/v1/models/openclaw", {"GET"}),
        ("POST", "/healthz", {"GET"}),
        ("POST", "/metrics", {"GET"}),
    ],
)
def test_wrong_method_is_405_with_allow_before_auth(live, method, path, allowed):
    exchange = RawExchange(live.port, method, path, {}, b"{}")  # no credential at all
    expect_error(exchange, 405, "invalid_request_error", "method_not_allowed")
    allow = {item.strip() for item in exchange.header("Allow").split(",")}
    assert allowed <= allow and "POST" not in allow - allowed, allow


# -- credentials and lockout ---------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer   ", "Basic abc"])
def test_missing_credential_is_401_with_www_authenticate(live, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    exchange = chat(live.port, {"messages": [user("hi")]}, headers, auth=False)
    expect_error(exchange, 401, "authentication_error", "invalid_api_key")
    assert exchange.header("WWW-Authenticate") == "Bearer"


def test_wrong_credential_is_401_and_the_right_one_resets_the_count(live):
    # Own client address, so the shared server's other tests are never locked out.
    source = "127.0.0.21"
    for _ in range(3):  # maxAttempts is 2: without the reset the third round is 429
        headers = {"Authorization": "Bearer nope"}
        wrong = chat(live.port, {"messages": [user("hi")]}, headers, auth=False, source=source)
        expect_error(wrong, 401, "authentication_error", "invalid_api_key")
        assert wrong.header("WWW-Authenticate") == "Bearer"
        right = chat(live.port, {"messages": [user("hi")]}, source=source)
        assert right.status == 200, right.body()
        right.body()


def test_lockout_is_429_with_integer_retry_after_even_for_the_right_token(live):
    source = "127.0.0.22"
    for _ in range(2):
        headers = {"Authorization": f"Bearer {TOKEN}x"}
        wrong = chat(live.port, {"messages": [user("hi")]}, headers, auth=False, source=source)
        expect_error(wrong, 401, "authentication_error", "invalid_api_key")
    locked = chat(live.port, {"messages": [user("hi")]}, source=source)
    expect_error(locked, 429, "rate_limit_error", "too_many_auth_failures")
    retry_after = locked.header("Retry-After")
    assert retry_after is not None and retry_after.isdigit(), retry_after
    assert 55 <= int(retry_after) <= 60  # lockoutMs 60000, rounded up
    # Another client address is not affected.
    assert chat(live.port, {"messages": [user("hi")]}, source="127.0.0.23").status == 200


def test_secrets_never_reach_the_server_log(live):
    wrong_secret = "sekrit-wrong-credential-42"
    headers = {"Authorization": f"Bearer {wrong_secret}", "x-request-id": "secret-check-1"}
    wrong = chat(live.port, {"messages": [user("hi")]}, headers, auth=False, source="127.0.0.24")
    expect_error(wrong, 401, "authentication_error", "invalid_api_key")
    right = chat(live.port, {"messages": [user("hi")]}, {"x-request-id": "secret-check-2"})
    assert right.status == 200
    right.body()
    # One structured line per request, written when the request ends.
    wait_until(lambda: "secret-check-2" in live.log_path.read_text(), 5, "the request log line")
    log = live.log_path.read_text()
    assert "secret-check-1" in log
    assert TOKEN not in log and wrong_secret not in log


# -- body ----------------------------------------------------------------------------------


def test_body_too_large_by_content_length_is_413_before_reading_it(live):
    # Only the headers are sent: an answer proves the body was never waited for.
    headers = {**AUTH, "Content-Length": "10000000"}
    started = time.monotonic()
    exchange = RawExchange(live.port, "POST", CHAT, headers, None, timeout=5)
    expect_error(exchange, 413, "invalid_request_error", "payload_too_large")
    assert time.monotonic() - started < 2


def _chunked_post(port: int, pieces: list[bytes]) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        # A generator body: http.client sends it with Transfer-Encoding: chunked.
        conn.request("POST", CHAT, body=iter(pieces), headers=AUTH, encode_chunked=True)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_chunked_body_over_the_limit_is_413(live):
    piece = b" " * 1000
    status, headers, body = _chunked_post(live.port, [piece] * (MAX_BODY_BYTES // 1000 + 1))
    assert status == 413, body
    assert headers["Content-Type"] == "application/json"
    check_error(json.loads(body), code="payload_too_large")


def test_chunked_body_under_the_limit_is_read_whole(live):
    document = json.dumps({"messages": [user("chunked upload arrives whole")]}).encode()
    pieces = [document[i : i + 7] for i in range(0, len(document), 7)]
    status, _, body = _chunked_post(live.port, pieces)
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"] == "chunked upload arrives whole"


@pytest.mark.parametrize("data", [b"{", b"not json", b'{"messages": NaN}', b"\xff\xfe{}"])
def test_not_json_is_400(live, data):
    expect_error(chat(live.port, data), 400, "invalid_request_error", "invalid_json")


@pytest.mark.parametrize(
    "body,param,code",
    [
        ({}, "messages", "missing_required_parameter"),
        ({"messages": []}, "messages", "invalid_value"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"messages": [user("x")], "max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"messages": [user("x")], "temperature": 3}, "temperature", "invalid_value"),
        ({"messages": [user("x")], "n": 2}, "n", "invalid_value"),
    ],
)
def test_schema_error_is_400_naming_the_param(live, body, param, code):
    error = expect_error(chat(live.port, body), 400, "invalid_request_error", code)
    assert error["param"] == param


# -- agent and session ---------------------------------------------------------------------


@pytest.mark.parametrize("model", ["openai/gpt-4o", "gpt-4o", "openclaw/ghost", "agent:"])
def test_unknown_model_is_404_model_not_found(live, model):
    exchange = chat(live.port, {"model": model, "messages": [user("x")]})
    error = expect_error(exchange, 404, "invalid_request_error", "model_not_found")
    assert error["param"] == "model"


def test_unknown_agent_header_is_404_model_not_found(live):
    ghost = chat(live.port, {"messages": [user("x")]}, {"x-openclaw-agent-id": "ghost"})
    expect_error(ghost, 404, "invalid_request_error", "model_not_found")


@pytest.mark.parametrize("model", ["openai/gpt-4o", "gpt-4o"])
def test_unknown_model_message_shows_the_accepted_forms(live, model):
    # SPEC 6: a model string naming no configured agent is 404 "with a message that
    # shows the accepted forms" -- the case every stock OpenAI client hits first.
    exchange = chat(live.port, {"model": model, "messages": [user("x")]})
    error = expect_error(exchange, 404, "invalid_request_error", "model_not_found")
    assert "openclaw/<agentId>" in error["message"], error["message"]


@pytest.mark.parametrize("key", ["agent:slow:chat-1", "agent:main:", "x" * 4097, "tab\there"])
def test_bad_session_key_is_400(live, key):
    exchange = chat(live.port, {"messages": [user("x")]}, {"x-openclaw-session-key": key})
    expect_error(exchange, 400, "invalid_request_error", "invalid_session_key")


def test_session_busy_is_409_across_workers_then_the_key_is_free(make_server):
    server = make_server("busy", overrides={"sessions": {"lockTimeoutSeconds": 0.5}})
    key = {"x-openclaw-session-key": "busy"}
    hang = {"model": SCRIPTED, "stream": True, "messages": [user("[[hang]]")]}
    holder = chat(server.port, hang, key)
    assert holder.status == 200
    first_frame, _ = next(holder.frames())
    assert first_frame.startswith("data: ")  # the run has started and holds the lock
    holder_worker = server.worker_of(holder.sock)
    # Asked on the other worker: the lock lives in the shared store.
    sock, _ = server.connection(lambda pid: pid != holder_worker)
    sent = time.monotonic()
    waiter = post_on(sock, {"model": SCRIPTED, "messages": [user("second")]}, {**AUTH, **key})
    waited = time.monotonic() - sent
    error = expect_error(waiter, 409, "invalid_request_error", "session_busy")
    assert "in progress" in error["message"]
    assert 0.45 <= waited < 3  # it waited lockTimeoutSeconds first
    holder.close()
    ended = server.wait_run_ends("agent:scripted:busy", timeout=3)
    assert ended[0]["outcome"] in ("cancelled", "closed")
    after = chat(server.port, {"model": SCRIPTED, "messages": [user("third")]}, key)
    assert after.status == 200, after.body()
    assert after.json()["choices"][0]["message"]["content"] == "third"


# -- the agent's failures ------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "directive,status,type_,code,message",
    [
        ("[[reject:429]]", 429, "invalid_request_error", "upstream_code", "upstream says no"),
        ("[[reject:403]]", 403, "invalid_request_error", "upstream_code", "upstream says no"),
        ("[[fail]]", 502, "api_error", "upstream_error", None),
        ("[[timeout]]", 504, "api_error", "timeout", None),
        ("[[crash]]", 500, "api_error", "internal_error", None),
    ],
)
def test_agent_failures_before_the_stream_are_plain_http_errors(
    live, stream, directive, status, type_, code, message
):
    body = {"model": SCRIPTED, "stream": stream, "messages": [user(f"{directive} go")]}
    exchange = chat(live.port, body)
    raw = exchange.body()
    error = expect_error(exchange, status, type_, code, raw)
    if message is not None:
        assert error["message"] == message
    # No stack trace, exception text or class name of the crash reaches the client.
    assert b"secret internals" not in raw and b"RuntimeError" not in raw


def test_run_longer_than_the_agent_timeout_is_504_or_a_timeout_frame(make_server):
    server = make_server(
        "timeout",
        workers=1,
        overrides={
            "agents": {
                "list": [
                    {"id": "main", "default": True, "backend": "echo"},
                    {"id": "scripted", "backend": SCRIPTED_BACKEND, "timeoutSeconds": 1},
                ]
            }
        },
    )
    started = time.monotonic()
    plain = chat(server.port, {"model": SCRIPTED, "messages": [user("[[hang]]")]})
    expect_error(plain, 504, "api_error", "timeout")
    assert 0.9 <= time.monotonic() - started < 3
    stream = chat(server.port, {"model": SCRIPTED, "stream": True, "messages": [user("[[hang]]")]})
    assert stream.status == 200
    chunks, frames = parse_sse(stream.body())
    assert chunks[-1]["error"]["code"] == "timeout"
    assert not any(c.get("choices") and c["choices"][0]["finish_reason"] for c in chunks[:-1])


@pytest.fixture(scope="module", params=[True, False], ids=["rate-limit-on", "rate-limit-off"])
def nostore(request, tmp_path_factory):
    """A server whose session store cannot be created (its directory would be below a
    regular file). With the rate limit on, authentication already reads the store;
    with it off, the request gets as far as the session."""
    directory = tmp_path_factory.mktemp("nostore")
    blocker = directory / "not-a-directory"
    blocker.write_text("a regular file: nothing can be created below it")
    server = start_server(
        directory / "server",
        workers=1,
        overrides={
            "sessions": {"store": f"sqlite:///{blocker}/sessions.db"},
            "gateway": {"auth": {"rateLimit": {} if request.param else False}},
        },
    )
    yield server
    close_open_exchanges()
    server.stop()


def test_store_unavailable_is_not_ready_but_alive(nostore):
    ready = RawExchange(nostore.port, "GET", "/readyz")
    expect_error(ready, 503, "api_error", "store_unavailable")
    assert get_status(nostore.port, "/healthz") == 200
    assert b"not-a-directory" not in RawExchange(nostore.port, "GET", "/readyz").body()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("session", [None, "kept"], ids=["stateless", "sticky"])
def test_store_unavailable_is_503_before_the_agent_runs(nostore, stream, session):
    # SPEC 8: an unreachable store is 503 store_unavailable; SPEC 11: failures before
    # the run are plain HTTP errors. The 503 says "nothing was run or stored": true only
    # if the agent never started.
    runs_before = len(nostore.runs())
    headers = {"x-openclaw-session-key": session} if session else {}
    body = {"model": "openclaw/scripted", "stream": stream, "messages": [user("hello there")]}
    exchange = chat(nostore.port, body, headers)
    raw = exchange.body()
    assert exchange.status == 503, raw[:400]
    expect_error(exchange, 503, "api_error", "store_unavailable", raw)
    assert len(nostore.runs()) == runs_before, "the agent ran although the store was down"


# -- x-request-id ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path,body,status",
    [
        ("POST", CHAT, {"messages": [user("hi")]}, 200),
        ("POST", CHAT, {"stream": True, "messages": [user("hi")]}, 200),
        ("POST", CHAT, {"messages": []}, 400),
        ("GET", CHAT, None, 405),
        ("GET", "/v1/nope", None, 404),
        ("GET", "/v1/models", None, 200),
        ("GET", "/healthz", None, 200),
        ("GET", "/metrics", None, 200),
    ],
)
def test_every_response_has_a_request_id_echoed_when_sent(live, method, path, body, status):
    data = None if body is None else json.dumps(body).encode()
    sent = RawExchange(live.port, method, path, {**AUTH, "x-request-id": "live-req.42"}, data)
    assert sent.status == status
    assert sent.header("x-request-id") == "live-req.42"
    sent.body()
    made = RawExchange(live.port, method, path, AUTH, data)
    assert made.status == status
    generated = made.header("x-request-id")
    assert generated and generated != "live-req.42"
    made.body()
    bad = RawExchange(live.port, method, path, {**AUTH, "x-request-id": "has spaces in it"}, data)
    replaced = bad.header("x-request-id")
    assert replaced and " " not in replaced
    bad.body()
