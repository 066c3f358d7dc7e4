"""Compact JSON for the wire."""

from __future__ import annotations

import json

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
