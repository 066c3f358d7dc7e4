"""Compact JSON for the wire: every response body and every SSE frame."""

from __future__ import annotations

import json
import typing as t

from flask import Response

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(obj: t.Any) -> str:
    """Compact JSON, UTF-8 kept as is (the wire format of every frame and body)."""
    return _dumps(obj)


def encode(text: str) -> bytes:
    """UTF-8 for the wire. A lone surrogate (an upstream may send ``"\\ud800"``) cannot
    be UTF-8: it goes out as the JSON escape ``\\ud800`` instead of failing the reply."""
    return text.encode("utf-8", "backslashreplace")


def dumps_bytes(obj: t.Any) -> bytes:
    """:func:`dumps`, encoded for the wire."""
    return encode(_dumps(obj))


def json_response(obj: t.Any) -> Response:
    """``obj`` as a JSON response (the routes' one encoder)."""
    return Response(dumps_bytes(obj), content_type="application/json")
