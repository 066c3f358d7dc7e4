"""Secrets never leave the gateway: the redactor, the secrets it is built from, and the
places text leaves (error envelopes, stream error frames, log records)."""

from __future__ import annotations

import json
import logging

import pytest

from chatcompat import errors
from chatcompat.config import settings_from_document
from chatcompat.redaction import REDACTED
from chatcompat.redaction import Redactor
from chatcompat.redaction import protect
from chatcompat.redaction import secrets_of
from chatcompat.requestlog import JsonFormatter
from chatcompat.settings import AgentConfig
from chatcompat.settings import Settings
from tests.conftest import AUTH
from tests.wire import parse_sse

KEY = "sk-proj-T3stKeyAbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
CHAT = "/v1/chat/completions"


# -- the redactor ------------------------------------------------------------------------


def test_whole_secret_is_replaced_everywhere():
    redactor = Redactor([KEY])
    text = f"Incorrect API key provided: {KEY}. Again: '{KEY}'"
    assert redactor.redact(text) == f"Incorrect API key provided: {REDACTED}. Again: '{REDACTED}'"


@pytest.mark.parametrize("length", [20, 24, len(KEY) - 1])
def test_a_long_leading_part_of_a_secret_is_replaced(length):
    # Some upstreams quote a truncated key; the part they quote is the secret's start.
    redactor = Redactor([KEY])
    assert redactor.redact(f"key {KEY[:length]}... refused") == f"key {REDACTED}... refused"


def test_a_short_leading_part_or_a_masked_key_is_left_alone():
    # "sk-proj-" and a handful of characters say which kind of key it is, not the key;
    # masked forms (OpenAI's sk-proj-***...6789) are the upstream's own business.
    redactor = Redactor([KEY])
    for text in (f"keys look like {KEY[:12]}", f"{KEY[:10]}***...{KEY[-4:]}"):
        assert redactor.redact(text) == text


def test_the_leading_part_threshold_is_half_of_a_short_secret():
    secret = "0123456789abcdef"  # 16 characters: 8 of them are already half of it
    redactor = Redactor([secret])
    assert redactor.redact("x 01234567 y") == f"x {REDACTED} y"
    assert redactor.redact("x 0123456 y") == "x 0123456 y"


def test_secrets_shorter_than_eight_characters_are_not_redacted():
    # Redacting "a" or "admin" would destroy every message and protect nothing.
    redactor = Redactor(["a", "admin", "1234567", "12345678"])
    assert redactor.redact("admin: a 1234567 12345678") == f"admin: a 1234567 {REDACTED}"


def test_several_secrets_and_nested_values():
    other = "second-secret-value-0001"
    redactor = Redactor([KEY, other])
    value = {"error": {"message": f"{KEY} and {other}", "list": [other, 3, None]}}
    assert redactor.redact_value(value) == {
        "error": {"message": f"{REDACTED} and {REDACTED}", "list": [REDACTED, 3, None]}
    }


def test_a_redactor_without_secrets_returns_the_same_text():
    text = "nothing to hide"
    assert Redactor([]).redact(text) is text


# -- which strings are secrets -----------------------------------------------------------


def _settings(**fields):
    return Settings(state_dir="/tmp", **fields)


def test_secrets_of_the_gateway_and_the_store():
    settings = _settings(
        auth_secret="gateway-token-0123456789",
        session_store="redis://:p%40ss-word-42@127.0.0.1:6379/0",
    )
    found = secrets_of(settings, environ={})
    assert {"gateway-token-0123456789", "p%40ss-word-42", "p@ss-word-42"} <= found


def test_secrets_of_a_sentinel_store_include_the_sentinels_password():
    settings = _settings(
        session_store="redis+sentinel://:primary-pass-42@h1,h2/m/0?sentinel_password=sentinel-pass-42",
    )
    found = secrets_of(settings, environ={})
    assert {"primary-pass-42", "sentinel-pass-42"} <= found


def test_secrets_of_the_agents():
    agents = (
        AgentConfig(id="a", backend="openai", options={"apiKey": KEY}),
        AgentConfig(id="b", backend="openai", options={"apiKeyEnv": "B_KEY"}),
        AgentConfig(
            id="c",
            backend="openai",
            options={
                "headers": {
                    "Authorization": "Bearer header-credential-0001",
                    "api-key": "azure-key-000000001",
                    "OpenAI-Organization": "org-not-a-secret-01",
                }
            },
        ),
        AgentConfig(
            id="d",
            backend="pi",
            options={
                "env": {"ANTHROPIC_API_KEY": "env-key-00000001", "LOG_LEVEL": "debug-verbose"},
                "passEnv": ["GITHUB_TOKEN", "EDITOR"],
            },
        ),
    )
    environ = {"B_KEY": "env-named-key-0001", "GITHUB_TOKEN": "ghp_passed0001", "EDITOR": "vim-x"}
    found = secrets_of(_settings(agents=agents), environ=environ)
    expected = {
        KEY,
        "env-named-key-0001",
        "Bearer header-credential-0001",
        "header-credential-0001",
        "azure-key-000000001",
        "env-key-00000001",
        "ghp_passed0001",
    }
    assert expected <= found
    # Values under names that do not say "secret" are left alone (see README).
    assert not {"org-not-a-secret-01", "debug-verbose", "vim-x"} & found


# -- logs ----------------------------------------------------------------------------------


@pytest.fixture
def protected():
    secret = "log-secret-0123456789abcdef"
    protect(_settings(auth_secret=secret), environ={})
    return secret


def test_log_messages_and_their_arguments_are_redacted(protected, caplog):
    log = logging.getLogger("chatcompat.anything")
    log.warning("the upstream said %s", f"bad key {protected}")
    log.warning(f"inline {protected}")
    assert protected not in caplog.text
    assert caplog.text.count(REDACTED) == 2


def test_tracebacks_are_redacted(protected, caplog):
    log = logging.getLogger("chatcompat.anything")
    try:
        raise ValueError(f"Invalid header value {protected!r}")
    except ValueError:
        log.exception("the run failed")
    assert "Traceback" in caplog.text and REDACTED in caplog.text
    assert protected not in caplog.text


def test_gunicorn_error_log_lines_are_redacted(protected, caplog):
    logging.getLogger("gunicorn.error").error("Error handling request %s", protected)
    assert protected not in caplog.text


def test_json_log_lines_are_redacted(protected):
    record = logging.getLogger("chatcompat.request").makeRecord(
        "chatcompat.request", logging.INFO, __file__, 1, {"path": f"/{protected}"}, None, None
    )
    line = JsonFormatter().format(record)
    assert protected not in line and json.loads(line)["path"] == f"/{REDACTED}"


# -- what the client gets ------------------------------------------------------------------


def test_error_envelopes_are_redacted(protected):
    error = errors.UpstreamRejected(401, f"key {protected} refused", "auth_error", "bad_key")
    assert protected not in json.dumps(error.to_dict())
    assert protected not in error.get_response().get_data(as_text=True)


@pytest.fixture
def upstream_client(make_app, fake, monkeypatch):
    monkeypatch.setenv("TEST_UPSTREAM_KEY", KEY)
    agents = (
        AgentConfig(
            id="up",
            backend="openai",
            default=True,
            options={"baseUrl": fake.base_url, "model": "m", "apiKeyEnv": "TEST_UPSTREAM_KEY"},
        ),
    )
    return make_app(agents=agents, default_agent_id="up").test_client()


def _post(client, text, stream):
    body = {"model": "openclaw", "stream": stream, "messages": [{"role": "user", "content": text}]}
    return client.post(CHAT, json=body, headers=AUTH)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("quote", ["[[quote-key]]", "[[quote-key:30]]"])
def test_an_upstream_refusal_quoting_the_key_reaches_nobody(upstream_client, caplog, stream, quote):
    response = _post(upstream_client, f"hi [[status:401]] {quote}", stream)
    text = response.get_data(as_text=True)
    assert response.status_code == 401, text
    assert "Incorrect API key provided: " + REDACTED in text
    assert KEY[:20] not in text and KEY[:20] not in caplog.text


@pytest.mark.parametrize("quote", ["[[quote-key]]", "[[quote-key:30]]"])
def test_an_error_frame_quoting_the_key_reaches_nobody(upstream_client, caplog, quote):
    response = _post(upstream_client, f"one two three [[error-frame:2]] {quote}", True)
    text = response.get_data(as_text=True)
    assert response.status_code == 200
    chunks, _ = parse_sse(response.get_data())
    error = chunks[-1]["error"]
    assert error["code"] == "upstream_error" and REDACTED in error["message"]
    assert KEY[:20] not in text and KEY[:20] not in caplog.text


def test_a_key_with_a_control_character_is_refused_without_being_logged(
    make_app, fake, monkeypatch, caplog
):
    # Today http.client refuses the header and the traceback quotes it.
    monkeypatch.setenv("TEST_UPSTREAM_KEY", KEY[:30] + "\n" + KEY[30:])
    agents = (
        AgentConfig(
            id="up",
            backend="openai",
            default=True,
            options={"baseUrl": fake.base_url, "model": "m", "apiKeyEnv": "TEST_UPSTREAM_KEY"},
        ),
    )
    client = make_app(agents=agents, default_agent_id="up").test_client()
    response = _post(client, "hi", False)
    text = response.get_data(as_text=True)
    assert response.status_code == 502, text
    assert "TEST_UPSTREAM_KEY" in text and "control characters" in text
    assert KEY[:20] not in text and KEY[:20] not in caplog.text
    assert fake.chat_requests() == []


def test_a_named_keys_token_is_a_secret_when_the_config_gives_it():
    doc = {
        "gateway": {
            "auth": {
                "token": "operator-token-0123456789",
                "keys": [
                    {"id": "web", "token": "web-token-0123456789"},
                    {"id": "bot", "tokenEnv": "BOT_TOKEN"},
                    {"id": "app", "tokenSha256": "ab" * 32},
                ],
            }
        }
    }
    environ = {"BOT_TOKEN": "bot-token-0123456789"}
    settings = settings_from_document(doc, environ=environ)
    found = secrets_of(settings, environ)
    assert {"web-token-0123456789", "bot-token-0123456789"} <= found
    assert "web-token-0123456789" not in repr(settings)
