"""The per-request log line: JSON, complete, and free of secrets."""

from __future__ import annotations

import json
import logging

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
