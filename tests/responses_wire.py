"""OpenAI schema checks for the Responses API (``/v1/responses``), and its SSE parsed.

Every stream event is checked twice: against the file of its own type in
``openai_schemas/response-events/`` (precise messages) and against the union
``ResponseStreamEvent.json`` (what OpenAI's document says the stream carries). Types
without a file of their own are checked against the union only.
"""

from __future__ import annotations

import json
import typing as t

from tests.wire import check

# The event type -> its file in openai_schemas/response-events (without .json).
EVENT_FILES = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
    "error": "ResponseErrorEvent",
    "response.refusal.delta": "ResponseRefusalDeltaEvent",
    "response.refusal.done": "ResponseRefusalDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.reasoning_summary_part.added": "ResponseReasoningSummaryPartAddedEvent",
    "response.reasoning_summary_part.done": "ResponseReasoningSummaryPartDoneEvent",
    "response.reasoning_summary_text.delta": "ResponseReasoningSummaryTextDeltaEvent",
    "response.reasoning_summary_text.done": "ResponseReasoningSummaryTextDoneEvent",
}
TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def check_response(document: t.Any) -> None:
    """A ``Response`` object (``POST /v1/responses``, ``GET /v1/responses/{id}``)."""
    check("Response", document)
    assert document["object"] == "response" and document["id"].startswith("resp_"), document


def check_item_list(document: t.Any) -> None:
    """``GET /v1/responses/{id}/input_items``."""
    check("ResponseItemList", document)


def check_deleted(document: t.Any, response_id: str) -> None:
    """``DELETE /v1/responses/{id}`` (SPEC 15.1; OpenAI's document has no schema)."""
    assert document == {"id": response_id, "object": "response", "deleted": True}, document


def check_event(event: t.Any) -> None:
    name = EVENT_FILES.get(event.get("type"))
    if name is not None:
        check(f"response-events/{name}", event)
    check("ResponseStreamEvent", event)


def parse_stream(raw: bytes) -> list[dict[str, t.Any]]:
    """The events of a Responses SSE body, each checked against OpenAI's schemas.

    The framing is exact: ``event: <type>`` then ``data: <json>`` (whose ``type`` is
    the same), a blank line after each; ``: keepalive`` comments may come between.
    ``sequence_number`` counts up from 0 without a gap; one terminal event comes last;
    no ``data: [DONE]`` (the Responses stream has none).
    """
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), repr(text[-60:])
    events = []
    for frame in text[:-2].split("\n\n"):
        if frame == ": keepalive":
            continue
        lines = frame.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: "), frame
        assert lines[1].startswith("data: "), frame
        event = json.loads(lines[1].removeprefix("data: "))
        assert event["type"] == lines[0].removeprefix("event: "), frame
        check_event(event)
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
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
