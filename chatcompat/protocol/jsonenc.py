"""Compact JSON for the wire: every response body and every SSE frame.

orjson encodes (about ten times faster than the standard library on a reply's
documents); whatever it refuses goes to the standard encoder, so those values come
out as before: a lone surrogate (an upstream may send ``"\\ud800"``) as its JSON
escape, integers beyond 64 bits exactly, non-string keys as strings. Two differences
remain, both only for values no schema of OpenAI's allows: a NaN or infinite float
(only an upstream's logprobs could hold one; request bodies refuse them) is ``null``
where the standard encoder wrote ``NaN``, which no JSON parser reads; and floats are
written in their shortest form (``1e-05`` becomes ``0.00001``), the same number.
"""

from __future__ import annotations

import json
import typing as t

import orjson
from flask import Response

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# What the standard encoder does with a str (its C function): faster than orjson's
# bytes decoded back to str, for the text pieces stream chunks are built from.
_string = json.encoder.encode_basestring


def dumps(obj: t.Any) -> str:
    """Compact JSON, UTF-8 kept as is (the wire format of every frame and body)."""
    if type(obj) is str:
        return _string(obj)
    try:
        return orjson.dumps(obj).decode()
    except orjson.JSONEncodeError:  # surrogates, big integers, other keys: as before
        return _dumps(obj)


def encode(text: str) -> bytes:
    """UTF-8 for the wire. A lone surrogate (an upstream may send ``"\\ud800"``) cannot
    be UTF-8: it goes out as the JSON escape ``\\ud800`` instead of failing the reply."""
    return text.encode("utf-8", "backslashreplace")


def dumps_bytes(obj: t.Any) -> bytes:
    """:func:`dumps`, encoded for the wire."""
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        return encode(_dumps(obj))


def json_response(obj: t.Any) -> Response:
    """``obj`` as a JSON response (the routes' one encoder)."""
    return Response(dumps_bytes(obj), content_type="application/json")
