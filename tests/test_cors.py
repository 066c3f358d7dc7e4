"""CORS (``gateway.http.cors``) through the Flask test client: the preflight answered
before authentication for a listed origin only, the origin and exposed headers on
every /v1 response (errors and streams too), nothing when off."""

from __future__ import annotations

import pathlib
import re

import pytest

from chatcompat import cors as cors_module
from chatcompat.settings import Cors
from tests.conftest import AUTH
from tests.wire import parse_sse

CHAT = "/v1/chat/completions"
PAGE = "http://127.0.0.1:8123"
PREFLIGHT = {
    "Origin": PAGE,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, x-openclaw-model",
}
CORS_HEADERS = {
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
    "Access-Control-Max-Age",
}


@pytest.fixture
def client(make_app):
    cors = Cors(allow_origins=(PAGE, "https://webui.example"), max_age_seconds=120)
    return make_app(cors=cors).test_client()


def cors_headers(response) -> set[str]:
    return {name for name in response.headers.keys() if name.startswith("Access-Control-")}


@pytest.mark.parametrize("path", [CHAT, "/v1/models", "/v1/responses", "/v1/anything/later"])
def test_a_listed_origins_preflight_is_answered_before_auth_on_every_v1_path(client, path):
    response = client.options(path, headers=PREFLIGHT)  # no Authorization: browsers send none
    assert response.status_code == 204
    assert response.data == b""
    headers = response.headers
    assert headers["Access-Control-Allow-Origin"] == PAGE
    assert headers["Access-Control-Allow-Methods"] == "GET, POST, DELETE"
    allowed = [name.strip().lower() for name in headers["Access-Control-Allow-Headers"].split(",")]
    for name in ("authorization", "content-type", "idempotency-key", "x-openclaw-model",
                 "x-openclaw-session-key", "x-openclaw-agent-id"):  # fmt: skip
        assert name in allowed
    assert headers["Access-Control-Max-Age"] == "120"
    assert "Origin" in headers["Vary"]
    assert headers["x-request-id"]  # logged like any request


def test_the_origin_is_matched_case_insensitively_and_echoed_as_sent(client):
    response = client.options(CHAT, headers={**PREFLIGHT, "Origin": "https://WebUI.example"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://WebUI.example"


@pytest.mark.parametrize(
    "origin", ["http://127.0.0.1:8124", "https://webui.example.evil", "null", "http://127.0.0.1"]
)
def test_an_unlisted_origin_gets_no_cors_headers(client, origin):
    response = client.options(CHAT, headers={**PREFLIGHT, "Origin": origin})
    assert response.status_code == 405  # the view's answer to OPTIONS: no preflight here
    assert not cors_headers(response)
    response = client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}]},
                           headers={**AUTH, "Origin": origin})  # fmt: skip
    assert response.status_code == 200
    assert not cors_headers(response)
    assert "Origin" in response.headers["Vary"]


def test_an_options_request_that_is_no_preflight_goes_to_the_view(client):
    response = client.options(CHAT, headers={"Origin": PAGE})  # no Access-Control-Request-Method
    assert response.status_code == 405
    assert response.headers["Access-Control-Allow-Origin"] == PAGE  # a /v1 response like any


def test_json_replies_and_errors_carry_the_origin_and_expose_the_headers(client):
    body = {"messages": [{"role": "user", "content": "hi"}]}
    ok = client.post(CHAT, json=body, headers={**AUTH, "Origin": PAGE})
    refused = client.post(CHAT, json=body, headers={"Origin": PAGE})  # no token: 401
    assert (ok.status_code, refused.status_code) == (200, 401)
    for response in (ok, refused):
        assert response.headers["Access-Control-Allow-Origin"] == PAGE
        exposed = {
            name.strip() for name in response.headers["Access-Control-Expose-Headers"].split(",")
        }
        assert {"x-openclaw-session-key", "x-request-id", "x-ratelimit-remaining-requests",
                "x-ratelimit-limit-tokens", "Retry-After"} <= exposed  # fmt: skip
        assert "Origin" in response.headers["Vary"]
        assert "Access-Control-Allow-Methods" not in response.headers  # preflight only


def test_a_stream_carries_the_origin(client):
    body = {"messages": [{"role": "user", "content": "hello there"}], "stream": True}
    response = client.post(CHAT, json=body, headers={**AUTH, "Origin": PAGE})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    assert parse_sse(response.get_data())[1][-1] == "data: [DONE]"


def test_routes_outside_v1_get_no_cors_headers(client):
    for path in ("/healthz", "/metrics", "/openapi.json"):
        response = client.get(path, headers={"Origin": PAGE})
        assert not cors_headers(response), path
        assert "Origin" not in response.headers.get("Vary", "")
    assert client.options("/healthz", headers=PREFLIGHT).status_code != 204


def test_off_by_default(app):
    client = app.test_client()
    response = client.options(CHAT, headers=PREFLIGHT)
    assert response.status_code == 405
    assert not cors_headers(response)
    response = client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}]},
                           headers={**AUTH, "Origin": PAGE})  # fmt: skip
    assert not cors_headers(response) and "Vary" not in response.headers


def test_a_star_allows_any_origin_naming_it(make_app):
    client = make_app(cors=Cors(allow_origins=("*",))).test_client()
    response = client.options(CHAT, headers={**PREFLIGHT, "Origin": "https://any.example"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://any.example"
    assert response.headers["Access-Control-Max-Age"] == str(Cors.max_age_seconds)


def test_the_allowed_headers_name_every_x_openclaw_header_the_gateway_reads():
    package = pathlib.Path(cors_module.__file__).parent
    read = set()
    for source in package.rglob("*.py"):
        read |= {name.lower() for name in re.findall(r"x-openclaw-[a-z-]+", source.read_text())}
    allowed = {name.strip().lower() for name in cors_module.ALLOW_HEADERS.split(",")}
    assert read and read <= allowed
