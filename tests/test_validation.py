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
    assert forwarded_params({}) == {}
