"""Compact JSON for the wire."""

from __future__ import annotations

import json

import pytest

from chatcompat.protocol.jsonenc import dumps
from chatcompat.protocol.jsonenc import dumps_bytes
from chatcompat.protocol.jsonenc import json_response


def test_compact_and_utf8():
    assert dumps({"a": [1, "\u00e9"]}) == '{"a":[1,"\u00e9"]}'
    assert dumps_bytes({"a": "\u00e9"}) == '{"a":"\u00e9"}'.encode()


def test_a_lone_surrogate_goes_out_as_a_json_escape():
    body = dumps_bytes({"content": "x\udfff"})
    assert json.loads(body.decode("utf-8")) == {"content": "x\udfff"}


def test_json_response():
    response = json_response({"a": 1})
    assert response.content_type == "application/json"
    assert response.get_data() == b'{"a":1}'


STANDARD = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# Values a reply is made of: orjson must write the same bytes as the standard encoder.
SAME = [
    {"id": "chatcmpl-1", "created": 1733000000, "choices": [], "usage": None},
    {"b": 1, "a": 2, "nested": {"z": [True, False, None]}},  # key order kept
    {"text": 'quote " backslash \\ slash / tab \t newline \n nul \x00 del \x7f'},
    {"text": "\u2028\u2029 \u00e9 \u4e2d \U0001f600"},
    ["", 0, -1, 2**63 - 1, -(2**63)],
    ("a", "tuple"),
    {"logprob": -0.25, "half": 0.5, "zero": 0.0, "big": 1.5e300},
    " w12",
    "",
]


@pytest.mark.parametrize("value", SAME)
def test_the_same_bytes_as_the_standard_encoder(value):
    assert dumps_bytes(value) == STANDARD(value).encode()
    assert dumps(value) == STANDARD(value)


@pytest.mark.parametrize(
    "value",
    [
        {"big": 2**64},  # beyond 64 bits: exact, as before
        {1: "int key"},  # a key that is not a string: written as one, as before
        {"content": "x\ud800"},  # a lone surrogate
        [{"nested": ["y\udfff"]}],
    ],
)
def test_what_orjson_refuses_comes_out_as_before(value):
    assert dumps(value) == STANDARD(value)
    assert dumps_bytes(value) == STANDARD(value).encode("utf-8", "backslashreplace")


def test_the_two_differences_only_touch_values_no_schema_allows():
    # NaN: the standard encoder wrote NaN, which no JSON parser reads; now null.
    assert dumps_bytes({"logprob": float("nan")}) == b'{"logprob":null}'
    assert dumps({"x": float("inf")}) == '{"x":null}'
    # Floats in their shortest form: the same number.
    assert json.loads(dumps_bytes({"x": 1e-05})) == {"x": 1e-05}


def test_what_neither_can_encode_is_still_a_type_error():
    with pytest.raises(TypeError):
        dumps_bytes({"x": object()})
    with pytest.raises(TypeError):
        dumps({"x": {1, 2}})
