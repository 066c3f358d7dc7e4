"""Operational routes: health, readiness, metrics, the OpenAPI document."""

from __future__ import annotations

import json

from jsonschema import Draft202012Validator

from chatcompat import responses_request
from chatcompat.validation import request_schema
from tests.conftest import AUTH


def test_healthz_needs_no_credential(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_readyz_follows_the_store(make_app, tmp_path):
    assert make_app().test_client().get("/readyz").status_code == 200
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    broken = make_app(session_store=f"sqlite:///{blocker}/sessions.db").test_client()
    response = broken.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "store_unavailable"
    assert broken.get("/healthz").status_code == 200
    chat = broken.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}, headers=AUTH
    )
    assert chat.status_code == 503
    assert chat.get_json()["error"]["code"] == "store_unavailable"


def test_readyz_names_the_primary_of_a_store_that_has_one(make_app, monkeypatch):
    # A Redis store returns the address of the server that answered (live:
    # tests/live/test_sentinel.py); SQLite has none to give.
    app = make_app()
    store = app.extensions["chatcompat"].store
    assert app.test_client().get("/readyz").get_json() == {"status": "ready"}
    monkeypatch.setattr(store, "ping", lambda: "10.0.0.7:6380")
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "store": {"primary": "10.0.0.7:6380"}}


def test_metrics_count_requests_by_route_and_status(client):
    def count(text: str) -> float:
        for line in text.splitlines():
            if (
                line.startswith("chatcompat_requests_total{")
                and 'route="/v1/chat/completions"' in line
                and 'status="200"' in line
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = count(client.get("/metrics").get_data(as_text=True))
    for _ in range(3):
        client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "x"}]},
            headers=AUTH,
        ).close()
    response = client.get("/metrics")
    assert response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    assert count(text) == before + 3
    assert "chatcompat_time_to_first_byte_seconds_bucket" in text
    assert "test-token" not in text


def test_openapi_document_publishes_the_validator_schema(client):
    document = client.get("/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) >= {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/responses/{response_id}",
        "/v1/responses/{response_id}/input_items",
        "/v1/models",
        "/v1/models/{model_id}",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    schemas = document["components"]["schemas"]
    for name, source, prefix in (
        ("ChatCompletionRequest", request_schema(), "Chat"),
        ("CreateResponseRequest", responses_request.request_schema(), "Responses"),
    ):
        assert schemas[name]["properties"] == json.loads(
            json.dumps(source["properties"]).replace('"#/$defs/', f'"#/components/schemas/{prefix}')
        )
        assert {prefix + key for key in source["$defs"]} <= set(schemas)
    # Every reference resolves inside the document.
    text = json.dumps(document)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}:
        assert ref in schemas, ref
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)
