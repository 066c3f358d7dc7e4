"""The ``Idempotency-Key`` header through the Flask test client: replay as JSON and as
a stream, 409 while the first request runs, 422 for a different request, the key
freed by a failure, scoping by credential, and malformed keys."""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest

from chatcompat import idempotency
from chatcompat.auth import ANONYMOUS
from chatcompat.auth import OPERATOR
from chatcompat.auth import Authenticator
from tests.conftest import AUTH
from tests.polling import wait_until
from tests.scripted_agent import open_gate
from tests.scripted_agent import read_log
from tests.wire import check_completion
from tests.wire import check_error
from tests.wire import parse_sse
from tests.wire import stream_text

CHAT = "/v1/chat/completions"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def body(text: str = "hello there", **fields) -> dict:
    return {"model": "openclaw/scripted", "messages": [user(text)], **fields}


def post(client, payload, key="key-1", headers=None):
    sent = {**AUTH, **({"Idempotency-Key": key} if key is not None else {}), **(headers or {})}
    return client.post(CHAT, data=json.dumps(payload), headers=sent)


def starts(agent_log: str) -> int:
    return sum(1 for line in read_log(agent_log) if line["event"] == "start")


def transcript(app, key: str) -> list:
    return [turn.messages for turn in app.extensions["chatcompat"].store.transcript(key)]


# -- replay ---------------------------------------------------------------------------


def test_a_json_repeat_returns_the_stored_reply_without_running(app, client, agent_log):
    first = post(client, body(user="alice"))
    assert first.status_code == 200
    assert first.headers.get("Idempotent-Replayed") is None
    again = post(client, body(user="alice"))
    assert again.status_code == 200
    assert again.get_json() == first.get_json()  # same id, created, content, usage
    check_completion(again.get_json())
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["x-openclaw-session-key"] == first.headers["x-openclaw-session-key"]
    assert starts(agent_log) == 1
    assert len(transcript(app, "agent:scripted:openai-user:alice")) == 1


def test_a_stream_repeat_of_a_json_request_is_replayed_as_a_stream(client, agent_log):
    first = post(client, body()).get_json()
    again = post(client, body(stream=True, stream_options={"include_usage": True}))
    assert again.status_code == 200
    assert again.content_type.startswith("text/event-stream")
    chunks, frames = parse_sse(again.get_data())
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == {
        (first["id"], first["created"], first["model"])
    }
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert stream_text(chunks) == first["choices"][0]["message"]["content"] == "hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == first["usage"]
    assert starts(agent_log) == 1


def test_a_stream_is_replayed_with_its_tool_calls_and_without_usage_unless_asked(client, agent_log):
    first = post(client, body("[[tools]]", stream=True))
    chunks, _ = parse_sse(first.get_data())
    again = post(client, body("[[tools]]", stream=True))
    replayed, _ = parse_sse(again.get_data())
    assert all("usage" not in chunk for chunk in replayed)
    assert replayed[0]["id"] == chunks[0]["id"]
    calls = {}
    for chunk in replayed:
        for call in chunk["choices"][0]["delta"].get("tool_calls", []):
            entry = calls.setdefault(call["index"], {"id": None, "name": "", "arguments": ""})
            entry["id"] = call.get("id", entry["id"])
            entry["name"] += call["function"].get("name", "")
            entry["arguments"] += call["function"]["arguments"]
    assert calls == {
        0: {"id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        1: {"id": "call_2", "name": "get_time", "arguments": "{}"},
    }
    assert replayed[-1]["choices"][0]["finish_reason"] == "tool_calls"
    as_json = post(client, body("[[tools]]")).get_json()  # a streamed reply, asked as JSON
    check_completion(as_json)
    assert as_json["id"] == chunks[0]["id"]
    assert as_json["choices"][0]["message"]["content"] is None
    assert [c["id"] for c in as_json["choices"][0]["message"]["tool_calls"]] == [
        "call_1",
        "call_2",
    ]
    assert starts(agent_log) == 1


def test_a_stateless_repeat_names_the_session_the_first_request_made(app, client, agent_log):
    first = post(client, body())
    key = first.headers["x-openclaw-session-key"]
    assert key.startswith("agent:scripted:openai:")
    again = post(client, body())
    assert again.headers["x-openclaw-session-key"] == key
    assert again.get_json() == first.get_json()
    assert len(transcript(app, key)) == 1
    assert starts(agent_log) == 1


def test_the_key_is_trimmed(client, agent_log):
    first = post(client, body(), key="  key-1\t")
    assert post(client, body(), key="key-1").get_json() == first.get_json()
    assert starts(agent_log) == 1


def test_without_a_key_every_request_runs(client, agent_log):
    post(client, body(), key=None)
    post(client, body(), key=None)
    assert starts(agent_log) == 2


# -- running, failed, different -------------------------------------------------------


def test_a_repeat_while_the_first_runs_is_409_then_replays(client, agent_log):
    results = {}
    first = threading.Thread(
        target=lambda: results.setdefault("first", post(client, body("[[gate]] x")))
    )
    first.start()
    try:
        wait_until(lambda: starts(agent_log) == 1, 5, "the first run to start")
        busy = post(client, body("[[gate]] x"))
        assert busy.status_code == 409
        error = check_error(busy.get_json(), code="idempotency_key_in_use")
        assert error["type"] == "invalid_request_error" and error["param"] == "Idempotency-Key"
        streamed = post(client, body("[[gate]] x", stream=True))
        assert streamed.status_code == 409
    finally:
        open_gate(agent_log)
        first.join(10)
    assert results["first"].status_code == 200
    again = post(client, body("[[gate]] x"))
    assert again.get_json() == results["first"].get_json()
    assert starts(agent_log) == 1


@pytest.mark.parametrize(
    "text,stream,status",
    [
        ("[[fail]] x", False, 502),
        ("[[timeout]] x", False, 504),
        ("[[fail-after:1]] a b", True, 200),
    ],
)
def test_a_failed_request_frees_its_key(app, client, agent_log, text, stream, status):
    for runs in (1, 2):
        response = post(client, body(text, user="bob", stream=stream))
        assert response.status_code == status
        if stream:
            chunks, _ = parse_sse(response.get_data())
            assert "error" in chunks[-1]
        assert starts(agent_log) == runs  # the repeat ran again
    assert transcript(app, "agent:scripted:openai-user:bob") == []


def test_a_request_cancelled_by_its_client_frees_its_key(client, agent_log):
    response = client.post(
        CHAT,
        data=json.dumps(body("[[hang]]", stream=True)),
        headers={**AUTH, "Idempotency-Key": "key-1"},
        buffered=False,
    )
    assert response.status_code == 200
    response.close()  # what the server does when the client hangs up
    assert post(client, body("[[hang]]", stream=True)).status_code == 200  # ran, not 409


@pytest.mark.parametrize(
    "changed",
    [
        body("something else"),
        body(user="carol"),
        # A field this agent takes would do too; the scripted backend takes none.
        body(messages=[{"role": "system", "content": "Be brief."}, user("hello there")]),
        {**body(), "model": "openclaw/main"},
    ],
)
def test_the_same_key_for_a_different_request_is_422(client, agent_log, changed):
    assert post(client, body()).status_code == 200
    response = post(client, changed)
    assert response.status_code == 422
    error = check_error(response.get_json(), code="idempotency_key_reused")
    assert error["param"] == "Idempotency-Key"
    assert "different request" in error["message"]
    assert starts(agent_log) == 1


def test_a_different_session_header_is_a_different_request(client, agent_log):
    assert post(client, body(), headers={"x-openclaw-session-key": "s1"}).status_code == 200
    same = post(client, body(), headers={"x-openclaw-session-key": "agent:scripted:s1"})
    assert same.status_code == 200  # the same session, scoped or bare
    other = post(client, body(), headers={"x-openclaw-session-key": "s2"})
    assert other.status_code == 422


# -- credential, header ---------------------------------------------------------------


def test_the_authenticator_names_the_credential(settings):
    unlimited = dataclasses.replace(settings, rate_limit=None)
    assert Authenticator(unlimited).check(AUTH["Authorization"], "127.0.0.1", None) == OPERATOR
    password = dataclasses.replace(unlimited, auth_mode="password")
    assert Authenticator(password).check(AUTH["Authorization"], "127.0.0.1", None) == OPERATOR
    anonymous = dataclasses.replace(unlimited, auth_mode="none")
    assert Authenticator(anonymous).check(None, "127.0.0.1", None) == ANONYMOUS


def test_a_key_belongs_to_the_credential_that_sent_it(make_app, agent_log):
    with_token = make_app().test_client()
    without = make_app(auth_mode="none").test_client()  # the same store file
    first = post(with_token, body())
    other = post(without, body())
    assert other.status_code == 200 and other.get_json()["id"] != first.get_json()["id"]
    assert starts(agent_log) == 2
    assert post(with_token, body()).get_json() == first.get_json()
    assert post(without, body()).get_json() == other.get_json()
    assert starts(agent_log) == 2


@pytest.mark.parametrize(
    "key",
    ["", "   ", "k" * 256, "tab\tinside", "caf\u00e9", "nul\x01"],
)
def test_a_malformed_key_is_400_before_anything_runs(client, agent_log, key):
    response = post(client, body(), key=key)
    assert response.status_code == 400
    error = check_error(response.get_json(), code="invalid_idempotency_key")
    assert error["param"] == "Idempotency-Key"
    assert starts(agent_log) == 0


def test_the_longest_key_is_fine(client, agent_log):
    assert post(client, body(), key="k" * 255).status_code == 200


def test_the_openapi_document_names_the_header(client):
    operation = client.get("/openapi.json").get_json()["paths"][CHAT]["post"]
    assert "Idempotency-Key" in [parameter["name"] for parameter in operation["parameters"]]
    assert "422" in operation["responses"]
    assert "Idempotent-Replayed" in operation["responses"]["200"]["headers"]


# -- the module's functions ---------------------------------------------------------


def test_a_request_without_a_key_is_not_named():
    assert idempotency.for_request("operator", None, "main", None, {"messages": []}) is None
    named = idempotency.for_request("operator", "k", "main", None, {"messages": []})
    assert named is not None and named.scope != named.fingerprint


def test_another_model_override_is_another_request():
    def fingerprint(model: str | None) -> str:
        named = idempotency.for_request(
            "operator", "k", "main", None, {"messages": []}, model_override=model
        )
        assert named is not None
        return named.fingerprint

    without = idempotency.for_request("operator", "k", "main", None, {"messages": []})
    assert without is not None and fingerprint(None) == without.fingerprint
    assert len({fingerprint(None), fingerprint("a"), fingerprint("b")}) == 3
