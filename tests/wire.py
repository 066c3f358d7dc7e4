"""Helpers shared by the in-process and live tests: OpenAI schema checks, SSE parsing."""

from __future__ import annotations

import functools
import json
import pathlib
import typing as t

from jsonschema import Draft202012Validator

SCHEMAS = pathlib.Path(__file__).parent / "openai_schemas"


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMAS / f"{name}.json").read_text()))


def check(name: str, document: t.Any) -> None:
    """Assert ``document`` passes OpenAI's schema ``name`` (all errors listed)."""
    problems = [f"{e.json_path}: {e.message}" for e in _validator(name).iter_errors(document)]
    assert not problems, f"{name}: {problems}"


def check_completion(body: t.Any) -> None:
    check("CreateChatCompletionResponse", body)


def check_chunk(chunk: t.Any) -> None:
    check("CreateChatCompletionStreamResponse", chunk)


def check_error(body: t.Any, status: int | None = None, code: str | None = None) -> dict:
    """Assert an OpenAI error envelope; return its ``error`` object.

    :param body: the decoded body, or a response (Flask's test client, requests or
        httpx: anything with ``status_code`` and ``get_json()`` or ``json()``).
    :param status: the HTTP status the response must have; only a response has one,
        so asking for it with a bare body is a mistake in the test (TypeError).
    :param code: the ``error.code`` it must have.
    """
    if hasattr(body, "status_code"):
        response = body
        body = response.get_json() if hasattr(response, "get_json") else response.json()
        if status is not None:
            assert response.status_code == status, (response.status_code, body)
    elif status is not None:
        raise TypeError("check_error(status=...) needs the response, not its body")
    check("ErrorResponse", body)
    error = body["error"]
    if code is not None:
        assert error["code"] == code, error
    return error


def sse_lines(raw: bytes) -> list[str]:
    """The stream split into frames; asserts the framing is exact (``\\n\\n`` after each)."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), repr(text[-40:])
    frames = text[:-2].split("\n\n")
    for frame in frames:
        assert "\n" not in frame, f"a frame spans several lines: {frame!r}"
        assert frame.startswith("data: ") or frame == ": keepalive", frame
    return frames


def parse_sse(raw: bytes) -> tuple[list[dict], list[str]]:
    """(JSON chunks in order, all frames); checks every chunk against OpenAI's schema
    (error frames against the error schema) and that [DONE] comes last, once."""
    frames = sse_lines(raw)
    assert frames[-1] == "data: [DONE]", frames[-3:]
    assert frames.count("data: [DONE]") == 1
    chunks = []
    for frame in frames[:-1]:
        if frame.startswith(": "):
            continue
        payload = json.loads(frame[len("data: ") :])
        if "error" in payload:
            check("ErrorResponse", payload)
        else:
            check_chunk(payload)
        chunks.append(payload)
    return chunks, frames


def stream_text(chunks: list[dict]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )


# -- the Responses API ------------------------------------------------------------------

# Stream event type -> its schema in openai_schemas/response-events/.
RESPONSE_EVENT_SCHEMAS = {
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


def check_response(document: t.Any) -> None:
    check("Response", document)


def check_response_event(event: t.Any) -> None:
    """Against the event's own schema (precise errors) and the 58-way union."""
    check(f"response-events/{RESPONSE_EVENT_SCHEMAS[event['type']]}", event)
    check("ResponseStreamEvent", event)


def parse_response_sse(raw: bytes) -> tuple[list[dict], list[str]]:
    """(events in order, all frames) of a Responses stream. Asserts the framing
    (``event: <type>`` then ``data: <json>``, or a ``: keepalive`` comment), that the
    event line names the data's type, that sequence numbers count from 0, that no
    ``[DONE]`` is sent, and that every event passes OpenAI's schemas."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), repr(text[-40:])
    frames = text[:-2].split("\n\n")
    events = []
    for frame in frames:
        if frame == ": keepalive":
            continue
        head, _, data = frame.partition("\n")
        assert head.startswith("event: ") and data.startswith("data: "), frame
        assert "\n" not in data, frame
        event = json.loads(data[len("data: ") :])
        assert event["type"] == head[len("event: ") :], frame
        check_response_event(event)
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events, frames


def accumulate(events: list[dict]) -> list[dict]:
    """The output a client's accumulator builds from the events (as openai-python's
    ``responses.stream()`` does: by ``output_index`` and ``content_index``)."""
    output: dict[int, dict] = {}
    for event in events:
        kind = event["type"]
        if kind == "response.output_item.added":
            assert event["output_index"] == len(output), event
            output[event["output_index"]] = json.loads(json.dumps(event["item"]))
        elif kind == "response.content_part.added":
            item = output[event["output_index"]]
            assert item["id"] == event["item_id"] and event["content_index"] == len(item["content"])
            item["content"].append(dict(event["part"]))
        elif kind == "response.output_text.delta":
            item = output[event["output_index"]]
            assert item["id"] == event["item_id"]
            part = item["content"][event["content_index"]]
            part["text"] += event["delta"]
            part["logprobs"] += event["logprobs"]
        elif kind == "response.refusal.delta":
            item = output[event["output_index"]]
            item["content"][event["content_index"]]["refusal"] += event["delta"]
        elif kind == "response.function_call_arguments.delta":
            item = output[event["output_index"]]
            assert item["id"] == event["item_id"] and item["type"] == "function_call"
            item["arguments"] += event["delta"]
        elif kind == "response.reasoning_summary_part.added":
            item = output[event["output_index"]]
            assert event["summary_index"] == len(item["summary"])
            item["summary"].append(dict(event["part"]))
        elif kind == "response.reasoning_summary_text.delta":
            item = output[event["output_index"]]
            item["summary"][event["summary_index"]]["text"] += event["delta"]
        elif kind == "response.output_item.done":
            item = output[event["output_index"]]
            assert item["id"] == event["item"]["id"]
            if "status" in event["item"]:
                item["status"] = event["item"]["status"]
    return [output[index] for index in sorted(output)]
