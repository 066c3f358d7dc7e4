"""The per-request log line: JSON, complete, and free of secrets."""

from __future__ import annotations

import json
import logging

import pytest
from flask import Flask
from flask import abort

from chatcompat import requestlog
from chatcompat import security_headers
from chatcompat.requestlog import JsonFormatter
from tests.conftest import AUTH
from tests.conftest import TOKEN


def records(caplog):
    return [r.msg for r in caplog.records if r.name == "chatcompat.request"]


def test_one_line_per_request_with_the_fields(client, caplog):
    caplog.set_level(logging.INFO, logger="chatcompat")
    response = client.post(
        "/v1/chat/completions",
        json={"user": "alice", "stream": True, "messages": [{"role": "user", "content": "a b"}]},
        headers={**AUTH, "x-request-id": "req-1"},
    )
    response.get_data()
    response.close()
    (line,) = records(caplog)
    assert line["request_id"] == "req-1"
    assert line["status"] == 200 and line["agent"] == "main" and line["stream"] is True
    assert line["outcome"] == "ok"
    assert line["prompt_tokens"] == 2 and line["completion_tokens"] == 2
    assert line["ttfb_ms"] <= line["duration_ms"]
    assert len(line["session"]) == 16 and "alice" not in json.dumps(line)


def test_failed_auth_is_logged_without_the_secret(client, caplog):
    caplog.set_level(logging.INFO, logger="chatcompat")
    # The line is written when the server closes the response (gunicorn always does).
    client.post(
        "/v1/chat/completions", json={}, headers={"Authorization": f"Bearer {TOKEN}xx"}
    ).close()
    client.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}, headers=AUTH
    ).close()
    assert [line["status"] for line in records(caplog)] == [401, 200]
    assert TOKEN not in caplog.text


def test_json_formatter():
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "chatcompat.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None
    )
    line = json.loads(formatter.format(record))
    assert (
        line["message"] == "hello you" and line["level"] == "warning" and line["ts"].endswith("Z")
    )
    record = logging.LogRecord(
        "chatcompat.request", logging.INFO, __file__, 1, {"status": 200}, None, None
    )
    assert json.loads(formatter.format(record))["status"] == 200


# -- init_app: the hooks on a bare app ---------------------------------------------------


@pytest.fixture
def bare_client():
    """An app with only the request-log and security-header hooks, and two routes."""
    app = Flask(__name__)
    security_headers.init_app(app)
    requestlog.init_app(app)

    @app.get("/routed")
    def routed() -> str:
        requestlog.current().routed("main", "agent:main:s1", stream=False)
        return "ok"

    @app.get("/gone")
    def gone() -> str:
        abort(404)

    return app.test_client()


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("req-1", True), ("a/b+c=d:e.f_g-h", True), ("x" * 129, False), ("bad id", False)],
)
def test_a_tame_request_id_is_kept_and_another_replaced(bare_client, sent, kept):
    echoed = bare_client.get("/routed", headers={"x-request-id": sent}).headers["x-request-id"]
    assert (echoed == sent) is kept
    assert kept or len(echoed) == 32


def test_every_response_carries_the_security_headers_and_its_request_id(bare_client):
    for path, status in [("/routed", 200), ("/gone", 404), ("/nowhere", 404)]:
        response = bare_client.get(path)
        assert response.status_code == status
        for name, value in security_headers.SECURITY_HEADERS.items():
            assert response.headers[name] == value
        assert response.headers["x-request-id"]


def test_the_session_key_header_once_the_view_routed_the_request(bare_client):
    assert bare_client.get("/routed").headers["x-openclaw-session-key"] == "agent:main:s1"
    assert "x-openclaw-session-key" not in bare_client.get("/gone").headers


def test_the_line_is_written_once_when_the_response_closes(bare_client, caplog):
    caplog.set_level(logging.INFO, logger="chatcompat")
    response = bare_client.get("/routed", headers={"x-request-id": "req-2"})
    assert records(caplog) == []  # not before the server closes the response
    response.close()
    response.close()
    (line,) = records(caplog)
    assert line["request_id"] == "req-2"
    assert line["status"] == 200 and line["agent"] == "main" and line["outcome"] == "ok"
