"""Which session a Responses request runs on: the header, previous_response_id (continue
the latest response, fork from an earlier one), user, else a fresh key."""

from __future__ import annotations

import pytest

from chatcompat import errors
from chatcompat.protocol.responses import output_item_id
from chatcompat.response_chain import check_replayable
from chatcompat.response_chain import choose_session
from chatcompat.response_chain import find_response
from chatcompat.response_chain import resolve_item_references
from chatcompat.sessions.base import ResponseRecord


class Responses:
    """The part of a session store the chooser reads."""

    def __init__(self, *records: ResponseRecord) -> None:
        self.records = {record.id: record for record in records}

    def get_response(self, response_id: str) -> ResponseRecord | None:
        return self.records.get(response_id)


def record(id: str, key: str = "agent:main:openai-user:alice", **fields) -> ResponseRecord:
    values = dict(
        id=id,
        session_key=key,
        agent_id="main",
        owner="operator",
        position=4,
        latest=True,
        created=0.0,
        document={},
        input_items=[],
    )
    values.update(fields)
    return ResponseRecord(**values)


def test_without_previous_response_id_the_chat_rules_apply():
    store = Responses()
    assert choose_session(store, "main", "k", None, None, "operator")[:2] == (
        "agent:main:k",
        True,
    )
    assert choose_session(store, "main", None, None, "Alice", "operator")[:2] == (
        "agent:main:openai-user:alice",
        True,
    )
    key, sticky, continuation, _ = choose_session(store, "main", None, None, None, "operator")
    assert key.startswith("agent:main:openai:") and not sticky and continuation is None


def test_the_latest_response_is_continued_in_its_session():
    store = Responses(record("resp_1", position=6))
    key, sticky, continuation, refusal = choose_session(
        store, "main", None, "resp_1", "bob", "operator"
    )
    assert refusal is None
    assert (key, sticky) == ("agent:main:openai-user:alice", True)  # not bob's: the id wins
    assert continuation is not None and not continuation.fork
    assert (continuation.source_key, continuation.position) == (key, 6)


def test_an_earlier_response_forks_a_new_session():
    store = Responses(record("resp_1", position=2, latest=False))
    key, sticky, continuation, _ = choose_session(store, "main", None, "resp_1", None, "operator")
    assert key.startswith("agent:main:openai:") and sticky
    assert continuation is not None and continuation.fork
    assert continuation.source_key == "agent:main:openai-user:alice"
    assert continuation.position == 2
    again = choose_session(store, "main", None, "resp_1", None, "operator")
    assert again.key != key  # every fork is a conversation of its own


def test_an_unknown_id_is_404_previous_response_not_found():
    with pytest.raises(errors.PreviousResponseNotFound) as raised:
        choose_session(Responses(), "main", None, "resp_nope", None, "operator")
    assert raised.value.status == 404
    assert raised.value.code == "previous_response_not_found"
    assert raised.value.param == "previous_response_id"


def test_another_agents_response_is_400():
    store = Responses(record("resp_1", agent_id="other", key="agent:other:x"))
    with pytest.raises(errors.InvalidRequest) as raised:
        choose_session(store, "main", None, "resp_1", None, "operator")
    assert (raised.value.status, raised.value.code) == (400, "invalid_value")
    assert raised.value.param == "previous_response_id"


def test_a_header_must_name_the_responses_session_and_it_must_be_the_latest():
    store = Responses(record("resp_1"), record("resp_0", position=2, latest=False))
    chosen = choose_session(store, "main", "openai-user:alice", "resp_1", None, "operator")
    assert chosen.key == "agent:main:openai-user:alice"
    assert chosen.continuation is not None and not chosen.continuation.fork
    with pytest.raises(errors.InvalidRequest) as raised:
        choose_session(store, "main", "someone-else", "resp_1", None, "operator")
    assert raised.value.param == "previous_response_id"
    # Not the latest: refused by the caller after the Idempotency-Key claim, so that
    # the repeat of the request that made it an earlier one still gets its reply.
    chosen = choose_session(store, "main", "openai-user:alice", "resp_0", None, "operator")
    assert isinstance(chosen.refusal, errors.InvalidRequest)
    assert chosen.refusal.param == "previous_response_id"
    assert chosen.key == "agent:main:openai-user:alice"
    assert chosen.continuation is not None and not chosen.continuation.fork


def test_a_route_id_that_is_not_found_is_404_response_not_found():
    with pytest.raises(errors.ResponseNotFound) as raised:
        find_response(Responses(), "resp_nope", "operator")
    assert (raised.value.status, raised.value.param) == (404, None)


# -- item_reference ----------------------------------------------------------------------

RESP = "resp_" + "ab" * 16


def stored_output(owner: str = "operator") -> ResponseRecord:
    message = {
        "id": output_item_id("msg", RESP, 0),
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "4", "annotations": [], "logprobs": []}],
    }
    call = {
        "id": output_item_id("fc", RESP, 1),
        "type": "function_call",
        "call_id": "call_1",
        "name": "times",
        "arguments": "{}",
        "status": "completed",
    }
    return record(RESP, owner=owner, document={"id": RESP, "output": [message, call]})


def test_item_references_become_the_stored_items_they_name():
    store = Responses(stored_output())
    body = {
        "input": [
            {"role": "user", "content": "2+2?"},
            {"type": "item_reference", "id": output_item_id("msg", RESP, 0)},
            {"type": "item_reference", "id": output_item_id("fc", RESP, 1)},
            {"type": "function_call_output", "call_id": "call_1", "output": "8"},
        ]
    }
    resolved = resolve_item_references(store, body, "operator")
    assert resolved is not None
    assert [item.get("type", "message") for item in resolved["input"]] == [
        "message",
        "message",
        "function_call",
        "function_call_output",
    ]
    assert resolved["input"][1]["content"][0]["text"] == "4"
    assert body["input"][1]["type"] == "item_reference"  # the client's body is untouched


def test_item_references_that_name_nothing_visible_are_ignored():
    body = {
        "input": [
            {"role": "user", "content": "hi"},
            {"type": "item_reference", "id": output_item_id("msg", RESP, 0)},
            {"type": "item_reference", "id": output_item_id("msg", RESP, 5)},  # no such index
            {"type": "item_reference", "id": "msg_123"},  # not one of ours
        ]
    }
    assert resolve_item_references(Responses(), body, "operator") is None  # unknown
    assert resolve_item_references(Responses(stored_output("key:b")), body, "key:a") is None
    resolved = resolve_item_references(Responses(stored_output()), body, "operator")
    assert resolved is not None and len(resolved["input"]) == 2
    assert resolve_item_references(Responses(), {"input": "hi"}, "operator") is None


def test_a_replay_of_a_deleted_response_is_404():
    check_replayable(Responses(stored_output()), {"id": RESP})
    with pytest.raises(errors.ResponseNotFound) as raised:
        check_replayable(Responses(), {"id": RESP})
    assert (raised.value.status, raised.value.param) == (404, "Idempotency-Key")
