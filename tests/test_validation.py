"""The request schema as data: each invalid body gives the expected code and ``param``."""

from __future__ import annotations

import json
import pathlib

import pytest
from jsonschema import Draft202012Validator

from chatcompat.errors import InvalidRequest
from chatcompat.validation import forwarded_params
from chatcompat.validation import param_path
from chatcompat.validation import request_schema
from chatcompat.validation import split_conversation
from chatcompat.validation import validate_request

CORPUS = pathlib.Path(__file__).parent / "requests"
INVALID = json.loads((CORPUS / "invalid.json").read_text())
VALID = json.loads((CORPUS / "valid.json").read_text())


def test_schema_is_a_valid_2020_12_schema():
    Draft202012Validator.check_schema(request_schema())


@pytest.mark.parametrize("case", VALID, ids=[c["name"] for c in VALID])
def test_valid_bodies_pass(case):
    validate_request(case["body"])


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_invalid_bodies_name_the_field(case):
    with pytest.raises(InvalidRequest) as caught:
        validate_request(case["body"])
    error = caught.value.to_dict()["error"]
    assert error["code"] == case["code"], error
    assert error["param"] == case["param"], error
    assert error["type"] == "invalid_request_error"
    if error["param"]:
        assert f"'{error['param']}'" in error["message"]
    if "message_has" in case:
        assert case["message_has"] in error["message"]


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_invalid_bodies_are_400_through_the_endpoint(client, case):
    from tests.conftest import AUTH

    response = client.post("/v1/chat/completions", json=case["body"], headers=AUTH)
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == case["param"]


def test_param_path():
    assert param_path(["messages", 2, "role"]) == "messages[2].role"
    assert param_path([]) == ""
    assert param_path(["tools", 0, "function", "name"]) == "tools[0].function.name"


def test_forwarded_params_normalise():
    body = {
        "messages": [],
        "temperature": 0,
        "max_tokens": 5,
        "max_completion_tokens": 7,
        "stop": "END",
        "seed": None,
        "user": "u",
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    assert forwarded_params(body) == {
        "temperature": 0,
        "max_tokens": 7,
        "stop": ["END"],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    assert forwarded_params({"max_tokens": 3}) == {"max_tokens": 3}
    # Keys OpenAI's request does not have go as they are (the view refuses them for
    # backends that take no extensions); gateway fields never do.
    assert forwarded_params({"top_k": 5, "min_p": None, "user": "u", "n": 1}) == {"top_k": 5}
    assert forwarded_params({}) == {}


# -- the fast accept-path validator (jsonschema-rs) and jsonschema agree --------------------

EDGE_BODIES = [
    {"messages": [{"role": "user", "content": "a"}], "seed": 1.0},
    {"messages": [{"role": "user", "content": "a"}], "seed": 1.5},
    {"messages": [{"role": "user", "content": "a"}], "temperature": True},
    {"messages": [{"role": "user", "content": "a"}], "max_tokens": 9007199254740992},
    {"messages": [{"role": "user", "content": "a"}], "max_tokens": 10**30},
    {"messages": [{"role": "user", "content": "a"}], "user": "\U0001f600" * 256},
    {"messages": [{"role": "user", "content": "a"}], "user": "\U0001f600" * 257},
    {"messages": [{"role": "user", "content": "a"}], "stop": ["a", ""]},
    {"messages": [{"role": "user", "content": "a"}], "unknown": {"deep": [[[[]]]]}},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
    {"messages": [{"role": "user", "content": "a"}], "n": 2},
    {"messages": []},
    [],
    "messages",
    None,
]


@pytest.mark.parametrize(
    "body", [c["body"] for c in VALID + INVALID] + EDGE_BODIES, ids=lambda b: str(b)[:40]
)
def test_fast_validator_agrees_with_jsonschema(body):
    from chatcompat.validation import CHAT_REQUEST

    assert CHAT_REQUEST.is_valid(body) == CHAT_REQUEST.validator.is_valid(body)


def test_fast_validator_is_jsonschema_rs():
    pytest.importorskip("jsonschema_rs")
    from chatcompat.validation import CHAT_REQUEST

    assert "jsonschema_rs" in type(CHAT_REQUEST.is_valid.__self__).__module__


@pytest.mark.parametrize("case", VALID + INVALID, ids=[c["name"] for c in VALID + INVALID])
def test_jsonschema_decides_what_the_fast_validator_refuses(case, monkeypatch):
    """A body the fast validator refuses is judged again by jsonschema: the same error
    for an invalid body, and no error when only the fast one refused it."""
    from chatcompat import validation

    monkeypatch.setattr(validation.CHAT_REQUEST, "is_valid", lambda body: False)
    if case in VALID:
        validate_request(case["body"])
    else:
        with pytest.raises(InvalidRequest) as caught:
            validate_request(case["body"])
        assert caught.value.to_dict()["error"]["param"] == case["param"]


def test_split_conversation_needs_a_new_turn_to_answer():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    system_text, earlier, new_turn = split_conversation({"messages": messages})
    assert (system_text, earlier, new_turn) == ("Be brief.", messages[1:3], messages[3:])
    with pytest.raises(InvalidRequest) as caught:
        split_conversation({"messages": messages[:3]})
    assert caught.value.param == "messages" and caught.value.status == 400
