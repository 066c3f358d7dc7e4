"""What the live Responses tests check on top of ``tests/wire.py``'s Responses helpers:
the other routes' bodies, a whole stream (one terminal event, last), and texts.
"""

from __future__ import annotations

import typing as t

from tests.wire import check
from tests.wire import check_response as _check_response
from tests.wire import parse_response_sse

TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def check_response(document: t.Any) -> None:
    """A ``Response`` object (``POST /v1/responses``, ``GET /v1/responses/{id}``)."""
    _check_response(document)
    assert document["object"] == "response" and document["id"].startswith("resp_"), document


def check_item_list(document: t.Any) -> None:
    """``GET /v1/responses/{id}/input_items``."""
    check("ResponseItemList", document)


def check_deleted(document: t.Any, response_id: str) -> None:
    """``DELETE /v1/responses/{id}`` (SPEC 15.1; OpenAI's document has no schema)."""
    assert document == {"id": response_id, "object": "response", "deleted": True}, document


def parse_stream(raw: bytes) -> list[dict[str, t.Any]]:
    """The events of a whole Responses SSE body (framing, sequence numbers and schemas
    checked by :func:`tests.wire.parse_response_sse`), which ends with its one terminal
    event."""
    events, _ = parse_response_sse(raw)
    assert events and events[-1]["type"] in TERMINAL, [e["type"] for e in events]
    assert sum(e["type"] in TERMINAL for e in events) == 1
    return events


def stream_text(events: list[dict[str, t.Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def output_text(response: dict[str, t.Any]) -> str:
    """The text of a Response's message items (what the SDK's ``output_text`` gives)."""
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )
