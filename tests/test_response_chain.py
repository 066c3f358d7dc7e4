"""Which session a Responses request runs on: the header, previous_response_id (continue
the latest response, fork from an earlier one), user, else a fresh key."""

from __future__ import annotations

import pytest

from chatcompat import errors
from chatcompat.response_chain import choose_session
from chatcompat.response_chain import find_response
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
    key, sticky, continuation = choose_session(store, "main", None, None, None, "operator")
    assert key.startswith("agent:main:openai:") and not sticky and continuation is None


def test_the_latest_response_is_continued_in_its_session():
    store = Responses(record("resp_1", position=6))
    key, sticky, continuation = choose_session(store, "main", None, "resp_1", "bob", "operator")
    assert (key, sticky) == ("agent:main:openai-user:alice", True)  # not bob's: the id wins
    assert continuation is not None and not continuation.fork
    assert (continuation.source_key, continuation.position) == (key, 6)


def test_an_earlier_response_forks_a_new_session():
    store = Responses(record("resp_1", position=2, latest=False))
    key, sticky, continuation = choose_session(store, "main", None, "resp_1", None, "operator")
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
    for header, response_id in (("someone-else", "resp_1"), ("openai-user:alice", "resp_0")):
        with pytest.raises(errors.InvalidRequest) as raised:
            choose_session(store, "main", header, response_id, None, "operator")
        assert raised.value.param == "previous_response_id"


def test_a_route_id_that_is_not_found_is_404_response_not_found():
    with pytest.raises(errors.ResponseNotFound) as raised:
        find_response(Responses(), "resp_nope", "operator")
    assert (raised.value.status, raised.value.param) == (404, None)
