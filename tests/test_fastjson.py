"""orjson with the standard library deciding what orjson refuses."""

from __future__ import annotations

import json

import pytest

from chatcompat import fastjson


@pytest.mark.parametrize(
    "text",
    [
        '{"a":[1,2.5,"\\u00e9"]}',
        '{"x":NaN}',
        '{"big":1e400}',
        '"\\ud800"',
    ],
)
def test_loads_parses_what_json_parses(text):
    assert repr(fastjson.loads(text)) == repr(json.loads(text))


def test_loads_refuses_what_json_refuses():
    with pytest.raises(ValueError):
        fastjson.loads(b"{not json")


@pytest.mark.parametrize(
    "value",
    [
        {"model": "m", "messages": [{"role": "user", "content": "caf\u00e9 \U0001f600"}]},
        {"seed": 2**64, "stop": ["x"]},  # beyond 64 bits: json.dumps writes it
        {"content": "lone \ud800"},  # json.dumps escapes it
        {1: "int key"},
    ],
)
def test_dumps_bytes_is_the_same_json_for_the_upstream(value):
    sent = fastjson.dumps_bytes(value)
    assert isinstance(sent, bytes) and b'", "' not in sent  # compact
    assert json.loads(sent) == json.loads(json.dumps(value))


def test_dumps_bytes_of_what_is_not_json():
    with pytest.raises(TypeError):
        fastjson.dumps_bytes({"x": object()})
