"""The Responses API views through the Flask test client: the switch, the order of
checks, JSON and SSE, previous_response_id (continue, fork), the routes on a stored
response, and one conversation across both endpoints."""

from __future__ import annotations

import pytest

from chatcompat.settings import AgentConfig
from tests.conftest import AUTH
from tests.wire import check
from tests.wire import check_error
from tests.wire import check_response
from tests.wire import parse_response_sse

RESPONSES = "/v1/responses"
CHAT = "/v1/chat/completions"
SESSION = "x-openclaw-session-key"


@pytest.fixture
def client(make_app):
    return make_app(responses_enabled=True).test_client()


def create(client, body, headers=None):
    return client.post(RESPONSES, json=body, headers={**AUTH, **(headers or {})})


def text_of(document: dict) -> str:
    (message,) = [item for item in document["output"] if item["type"] == "message"]
    return "".join(part["text"] for part in message["content"])


def test_disabled_by_default_404_naming_the_switch_before_method_and_auth(make_app):
    client = make_app().test_client()
    for method, path in (("POST", RESPONSES), ("PUT", RESPONSES), ("GET", RESPONSES + "/x")):
        response = client.open(path, method=method)
        error = check_error(response, 404, "endpoint_disabled")
        assert "gateway.http.endpoints.responses.enabled" in error["message"]


def test_models_are_served_with_either_endpoint(make_app):
    only_responses = make_app(chat_completions_enabled=False, responses_enabled=True)
    assert only_responses.test_client().get("/v1/models", headers=AUTH).status_code == 200
    neither = make_app(chat_completions_enabled=False)
    check_error(neither.test_client().get("/v1/models", headers=AUTH), 404, "endpoint_disabled")


def test_method_then_auth_then_body(client):
    check_error(client.get(RESPONSES), 405, "method_not_allowed")
    check_error(client.post(RESPONSES, json={"input": "hi"}), 401, "invalid_api_key")
    check_error(create(client, {}), 400)
    error = check_error(create(client, {"input": 7}), 400)
    assert error["param"] == "input"


def test_a_json_response_passes_the_schema_and_names_its_session(client):
    response = create(client, {"model": "openclaw", "input": "hello there"})
    assert response.status_code == 200
    document = response.get_json()
    check_response(document)
    assert document["id"].startswith("resp_") and document["status"] == "completed"
    assert text_of(document) == "hello there"
    assert response.headers[SESSION].startswith("agent:main:openai:")
    assert client.get(f"{RESPONSES}/{document['id']}", headers=AUTH).get_json() == document


def test_a_stream_is_named_events_ending_in_completed(client):
    response = create(client, {"input": "a b c", "stream": True})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events, _ = parse_response_sse(response.get_data())
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed"
    final = events[-1]["response"]
    assert text_of(final) == "a b c"
    stored = client.get(f"{RESPONSES}/{final['id']}", headers=AUTH).get_json()
    assert stored == final


def test_previous_response_id_continues_then_forks(client):
    first = create(client, {"input": "one"}).get_json()
    second = create(client, {"input": "two", "previous_response_id": first["id"]})
    key = second.headers[SESSION]
    third = create(client, {"input": "three", "previous_response_id": second.get_json()["id"]})
    assert third.headers[SESSION] == key  # the latest: the same session
    fork = create(client, {"input": "branch", "previous_response_id": first["id"]})
    assert fork.status_code == 200 and fork.headers[SESSION] != key
    transcript = client.get(f"{RESPONSES}/{third.get_json()['id']}/input_items", headers=AUTH)
    assert [item["content"][0]["text"] for item in transcript.get_json()["data"]] == ["three"]
    # Both branches go on: the fork's next turn follows the fork, the original's its own.
    again = create(client, {"input": "x", "previous_response_id": fork.get_json()["id"]})
    assert again.headers[SESSION] == fork.headers[SESSION]


def test_an_unknown_previous_response_is_404_and_runs_nothing(client):
    response = create(client, {"input": "hi", "previous_response_id": "resp_nope"})
    error = check_error(response, 404, "previous_response_not_found")
    assert error["param"] == "previous_response_id"


def test_another_agents_response_is_400(client):
    first = create(client, {"model": "openclaw/beta", "input": "hi"}).get_json()
    response = create(
        client, {"model": "openclaw/main", "input": "x", "previous_response_id": first["id"]}
    )
    error = check_error(response, 400, "invalid_value")
    assert error["param"] == "previous_response_id"


def test_one_conversation_across_both_endpoints(client):
    headers = {SESSION: "both"}
    chat = client.post(
        CHAT,
        json={"messages": [{"role": "user", "content": "from chat"}]},
        headers={**AUTH, **headers},
    )
    assert chat.status_code == 200
    response = create(client, {"input": "from responses"}, headers)
    assert response.headers[SESSION] == chat.headers[SESSION] == "agent:main:both"
    record = client.application.extensions["chatcompat"].store.get_response(
        response.get_json()["id"]
    )
    assert record.position == 4 and record.latest
    after = client.post(
        CHAT,
        json={"messages": [{"role": "user", "content": "chat again"}]},
        headers={**AUTH, **headers},
    )
    assert after.status_code == 200
    assert not client.application.extensions["chatcompat"].store.get_response(record.id).latest


def test_store_false_keeps_nothing(client):
    document = create(client, {"input": "secret", "store": False}).get_json()
    check_error(
        client.get(f"{RESPONSES}/{document['id']}", headers=AUTH), 404, "response_not_found"
    )
    check_error(
        create(client, {"input": "x", "previous_response_id": document["id"]}),
        404,
        "previous_response_not_found",
    )


def test_delete_then_it_is_gone(client):
    document = create(client, {"input": "hi"}).get_json()
    deleted = client.delete(f"{RESPONSES}/{document['id']}", headers=AUTH)
    assert deleted.get_json() == {"id": document["id"], "object": "response", "deleted": True}
    check_error(
        client.get(f"{RESPONSES}/{document['id']}", headers=AUTH), 404, "response_not_found"
    )
    check_error(client.delete(f"{RESPONSES}/{document['id']}", headers=AUTH), 404)
    check_error(client.open(f"{RESPONSES}/{document['id']}", method="PUT", headers=AUTH), 405)


def test_input_items_pages(client):
    items = [{"role": "user", "content": f"m{n}"} for n in range(3)]
    document = create(client, {"input": items}).get_json()
    url = f"{RESPONSES}/{document['id']}/input_items"
    page = client.get(url + "?limit=2&order=asc", headers=AUTH).get_json()
    assert [item["content"][0]["text"] for item in page["data"]] == ["m0", "m1"]
    assert page["has_more"] is True and page["object"] == "list"
    rest = client.get(f"{url}?order=asc&after={page['last_id']}", headers=AUTH).get_json()
    assert [item["content"][0]["text"] for item in rest["data"]] == ["m2"]
    check_error(client.get(url + "?limit=0", headers=AUTH), 400)


def test_an_idempotent_repeat_replays_the_stored_response(client):
    headers = {"Idempotency-Key": "k1"}
    first = create(client, {"input": "hi"}, headers)
    repeat = create(client, {"input": "hi"}, headers)
    assert repeat.headers.get("Idempotent-Replayed") == "true"
    assert repeat.get_json() == first.get_json()
    chat_repeat = client.post(
        CHAT, json={"messages": [{"role": "user", "content": "hi"}]}, headers={**AUTH, **headers}
    )
    check_error(chat_repeat, 422, "idempotency_key_reused")


def test_the_repeat_of_a_continuation_replays_it(client):
    # The first try makes its previous_response_id an earlier response: the repeat must
    # still be recognised (not forked, not refused), with or without the session header.
    for header in ({}, {SESSION: "retry"}):
        first = create(client, {"input": "one"}, header).get_json()
        body = {"input": "two", "previous_response_id": first["id"]}
        keyed = {**header, "Idempotency-Key": f"cont{len(header)}"}
        second = create(client, body, keyed)
        assert second.status_code == 200
        for stream in (False, True):
            repeat = create(client, {**body, "stream": stream}, keyed)
            assert repeat.status_code == 200, repeat.get_data()
            assert repeat.headers.get("Idempotent-Replayed") == "true"
            assert repeat.headers[SESSION] == second.headers[SESSION]
        assert create(client, {"input": "x"}, keyed).status_code == 422  # another request
    # A new request with the header still may not follow an earlier response (400,
    # nothing run), and its refusal frees its Idempotency-Key at once.
    late = {"input": "late", "previous_response_id": first["id"]}
    stale = create(client, late, {**header, "Idempotency-Key": "k"})
    assert check_error(stale, 400, "invalid_value")["param"] == "previous_response_id"
    assert create(client, {"input": "free"}, {**header, "Idempotency-Key": "k"}).status_code == 200


def test_a_deleted_response_is_not_replayed_either(client):
    headers = {"Idempotency-Key": "del1"}
    document = create(client, {"input": "hi"}, headers).get_json()
    assert client.delete(f"{RESPONSES}/{document['id']}", headers=AUTH).status_code == 200
    error = check_error(create(client, {"input": "hi"}, headers), 404, "response_not_found")
    assert error["param"] == "Idempotency-Key"


def test_item_references_bring_back_the_stored_items(upstream_app, fake):
    # As the Vercel AI SDK sends a conversation whose earlier responses were stored.
    client = upstream_app()
    first = create(client, {"model": "openclaw/up", "input": "2+2?"}).get_json()
    (message,) = first["output"]
    assert message["id"].startswith("msg_") and first["id"][5:] in message["id"]
    body = {
        "model": "openclaw/up",
        "input": [
            {"role": "user", "content": "2+2?"},
            {"type": "item_reference", "id": message["id"]},
            {"type": "item_reference", "id": "msg_not_ours"},
            {"role": "user", "content": "and times 3?"},
        ],
    }
    assert create(client, body).status_code == 200
    sent = fake.chat_requests()[-1].body["messages"]
    assert [m["role"] for m in sent if m["role"] != "system"] == ["user", "assistant", "user"]
    assert [m for m in sent if m["role"] == "assistant"][0]["content"] == text_of(first)


def test_include_values_that_change_nothing_are_accepted(client):
    body = {"input": "hi", "include": ["reasoning.encrypted_content", "file_search_call.results"]}
    assert create(client, body).status_code == 200
    refused = create(client, {"input": "hi", "include": ["made.up"]})
    assert check_error(refused, 400, "unsupported_value")["param"] == "include[0]"


def test_input_items_list_an_assistants_input_text_as_output_text(client):
    items = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "input_text", "text": "b"}]},
        {"role": "user", "content": "c"},
    ]
    document = create(client, {"input": items}).get_json()
    listed = client.get(f"{RESPONSES}/{document['id']}/input_items", headers=AUTH).get_json()
    check("ResponseItemList", listed)
    assert listed["data"][1]["content"][0]["type"] == "output_text"


def test_a_text_format_without_a_type_names_the_type(client):
    error = check_error(create(client, {"input": "hi", "text": {"format": {}}}), 400)
    assert error["param"] == "text.format.type"


# -- x-openclaw-model, sessions.userKeys, reserved session keys (issue 13) -------------------


@pytest.fixture
def upstream_app(make_app, settings, fake):
    """An ``openai`` agent ``up`` on the fake upstream (own model ``base-model``)."""
    up = AgentConfig(
        id="up",
        backend="openai",
        options={"baseUrl": fake.base_url, "model": "base-model"},
        models=("small-model",),
    )
    return lambda **overrides: make_app(
        responses_enabled=True, agents=(*settings.agents, up), **overrides
    ).test_client()


def test_the_model_header_picks_the_upstream_model(upstream_app, fake):
    client = upstream_app()
    for stream in (False, True):
        response = create(
            client,
            {"model": "openclaw/up", "input": "hi", "stream": stream},
            {"x-openclaw-model": "small-model"},
        )
        assert response.status_code == 200
        assert fake.chat_requests()[-1].body["model"] == "small-model"
    create(client, {"model": "openclaw/up", "input": "hi"})
    assert fake.chat_requests()[-1].body["model"] == "base-model"
    refused = create(client, {"model": "openclaw/up", "input": "hi"}, {"x-openclaw-model": "x"})
    assert check_error(refused, 400, "model_not_allowed")["param"] == "x-openclaw-model"
    assert len(fake.chat_requests()) == 3


def test_a_json_response_asks_the_upstream_for_one_completion(upstream_app, fake):
    client = upstream_app()
    for stream in (False, True):
        response = create(client, {"model": "openclaw/up", "input": "hi", "stream": stream})
        assert response.status_code == 200
        assert fake.chat_requests()[-1].body["stream"] is stream
    whole = create(client, {"model": "openclaw/up", "input": "hi"}).get_json()
    assert whole["output"][0]["content"][0]["text"] == "You said: hi"
    assert whole["usage"]["output_tokens"] == 3


def test_without_user_keys_user_selects_no_session(upstream_app, fake):
    client = upstream_app(session_user_keys=False)
    keys = set()
    for _ in range(2):
        response = create(client, {"model": "openclaw/up", "input": "hi", "user": "Alice"})
        keys.add(response.headers[SESSION])
        assert fake.chat_requests()[-1].body["user"] == "Alice"
    assert len(keys) == 2 and all(key.startswith("agent:up:openai:") for key in keys)


def test_a_reserved_session_key_is_400(client):
    response = create(client, {"input": "hi"}, {SESSION: "cron:nightly"})
    assert check_error(response, 400, "reserved_session_key")["param"] == SESSION


def test_the_agents_image_policy_names_the_input_part(client):
    def image_item(part):
        return [{"role": "user", "content": [{"type": "input_text", "text": "look"}, part]}]

    url = {"type": "input_image", "image_url": "https://example.com/cat.png"}
    error = check_error(create(client, {"input": image_item(url)}), 400, "invalid_image")
    assert error["param"] == "input[0].content[1].image_url"  # allowUrl is off by default
    pdf = "data:image/png;base64,JVBERi0xLjQK"  # "%PDF-1.4": no image, whatever it claims
    source = {"type": "input_image", "source": {"type": "base64", "media_type": "image/png",
                                                "data": pdf.split(",")[1]}}  # fmt: skip
    error = check_error(create(client, {"input": image_item(source)}), 400, "invalid_image")
    assert error["param"] == "input[0].content[1].source"
