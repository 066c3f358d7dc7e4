"""OpenAI's Responses API on the wire (SPEC 15): the ``response`` object, its named
event stream, the replay of an Idempotency-Key repeat, and the shapes of the other
routes (the deletion object, the input item list).

The bodies are built on a protocol-neutral :class:`~chatcompat.run.Run`:
:func:`complete` drains it into one Response; :func:`stream` relays its events as
``event: <type>`` / ``data: <json>`` frames (``response.created``,
``response.in_progress``, the output items with their parts and deltas,
``response.completed`` or ``response.incomplete``; ``response.failed`` when the run
fails after the first byte). Both go through the same :class:`Output`, so the stream
and the object agree on every item id and index. Every shape passes OpenAI's published
schemas, including what they require and OpenAI's own examples leave out
(``logprobs: []`` on text parts, the detail fields of ``usage``, ``strict`` and
``parameters`` on echoed tools). The stream has no ``data: [DONE]``: the spec has
none; the official SDKs end on the completing event and skip any data that is not JSON.
"""

from __future__ import annotations

import os
import re
import time
import typing as t

from .. import errors
from ..agents.base import Finish
from ..agents.base import ReasoningDelta
from ..agents.base import RefusalDelta
from ..agents.base import TextDelta
from ..agents.base import ToolCallDelta
from ..agents.base import Usage
from ..run import Keepalive
from ..sessions.base import StoredResponse
from .jsonenc import dumps
from .jsonenc import dumps_bytes
from .jsonenc import encode
from .jsonenc import json_response
from .reply import Reply
from .sse import KEEPALIVE_FRAME
from .sse import event_frame_bytes
from .sse import sse_response

if t.TYPE_CHECKING:
    from flask import Response

    from ..agents.base import Event
    from ..requestlog import RequestRecord
    from ..responses_request import ResponsesRequest
    from ..run import Run

MAX_BATCH_FRAMES = 64  # frames sent in one write at most

# A finish reason that cut the reply short -> the Response's incomplete_details.reason.
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    """``resp_``, ``msg_``, ``fc_``... and 32 hex digits."""
    return f"{prefix}_{os.urandom(16).hex()}"


def response_id() -> str:
    return new_id("resp")


def output_item_id(prefix: str, response_id: str, index: int) -> str:
    """An output item's id: its kind (``msg``, ``fc``, ``rs``), its response's hex
    digits and its place in the output. An ``item_reference`` to it then names the
    response that holds it, with no index of items to keep (:func:`response_of_item`)."""
    return f"{prefix}_{response_id.removeprefix('resp_')}_{index}"


def response_of_item(item_id: str) -> tuple[str, int] | None:
    """The response id and output index an :func:`output_item_id` names, else None."""
    match = _OUTPUT_ITEM_ID.fullmatch(item_id)
    if match is None:
        return None
    return f"resp_{match[1]}", int(match[2])


_OUTPUT_ITEM_ID = re.compile(r"(?:msg|fc|rs)_([0-9a-f]{32})_([0-9]{1,4})")


# -- objects ---------------------------------------------------------------------------


def usage_dict(usage: Usage | None) -> dict[str, t.Any]:
    """The Response's ``usage`` of a run's chat usage (every detail field, 0 when the
    backend did not report it)."""
    usage = usage or Usage()
    prompt = usage.prompt_tokens_details or {}
    completion = usage.completion_tokens_details or {}
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": prompt.get("cached_tokens", 0),
            "cache_write_tokens": prompt.get("cache_write_tokens", 0),
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": completion.get("reasoning_tokens", 0)},
        "total_tokens": usage.total_tokens,
    }


def response_object(
    *,
    id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, t.Any]],
    echo: t.Mapping[str, t.Any],
    usage: dict[str, t.Any] | None = None,
    error: dict[str, t.Any] | None = None,
    incomplete_reason: str | None = None,
) -> dict[str, t.Any]:
    """A ``response`` object: ``echo`` holds the request fields it repeats
    (:attr:`~chatcompat.responses_request.ResponsesRequest.echo`); ``usage`` is left out
    when None (the schema rejects ``usage: null``)."""
    document: dict[str, t.Any] = {
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": (
            None if incomplete_reason is None else {"reason": incomplete_reason}
        ),
        "model": model,
        "output": output,
    }
    if status in ("completed", "incomplete"):
        document["completed_at"] = int(time.time())
    document.update(echo)
    if usage is not None:
        document["usage"] = usage
    return document


def deleted(id: str) -> dict[str, t.Any]:
    """The body of ``DELETE /v1/responses/{id}`` (SPEC 15.1)."""
    return {"id": id, "object": "response", "deleted": True}


def list_params(args: t.Mapping[str, str]) -> tuple[int, str, str | None]:
    """``limit`` (1..100, 20), ``order`` (``asc``/``desc``, ``desc``) and ``after`` of
    an ``input_items`` query.

    :raise errors.InvalidRequest: naming the parameter.
    """
    raw = args.get("limit", "20")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise errors.InvalidRequest(
            f"Invalid value for 'limit': expected an integer from 1 to 100, got {raw!r}.",
            param="limit",
        )
    order = args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise errors.InvalidRequest(
            f"Invalid value for 'order': expected 'asc' or 'desc', got {order!r}.",
            param="order",
        )
    return limit, order, args.get("after") or None


def input_item_list(
    items: list[dict[str, t.Any]], limit: int = 20, order: str = "desc", after: str | None = None
) -> dict[str, t.Any]:
    """The body of ``GET /v1/responses/{id}/input_items``: OpenAI's list object.

    :param items: the stored input items in request order.
    :param after: an item id: the page starts after it (in ``order``).
    :raise errors.InvalidRequest: ``after`` names no item of the list.
    """
    ordered = items if order == "asc" else items[::-1]
    start = 0
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise errors.InvalidRequest(
                f"Invalid value for 'after': no input item {after!r} in this response.",
                param="after",
            )
        start = ids.index(after) + 1
    page = ordered[start : start + limit]
    return {
        "object": "list",
        "data": page,
        # The schema requires strings: an empty page has "" (OpenAI's SDKs page on
        # has_more, not on these).
        "first_id": page[0]["id"] if page else "",
        "last_id": page[-1]["id"] if page else "",
        "has_more": start + limit < len(ordered),
    }


def failure(error: errors.APIError) -> dict[str, t.Any]:
    """A failed Response's ``error``: a code OpenAI's schema allows
    (``rate_limit_exceeded`` for an upstream 429, else ``server_error``), the real
    cause in ``message`` (secrets redacted, as in every error body)."""
    rate_limited = error.status == 429 or error.code == "rate_limit_exceeded"
    message = error.to_dict()["error"]["message"]
    return {"code": "rate_limit_exceeded" if rate_limited else "server_error", "message": message}


def logprobs_list(entries: list[dict[str, t.Any]] | None) -> list[dict[str, t.Any]]:
    """Chat's token log probabilities in the shape of an ``output_text`` part."""
    out = []
    for entry in entries or ():
        out.append(
            {
                "token": entry.get("token", ""),
                "logprob": entry.get("logprob", 0),
                "bytes": entry.get("bytes") or [],
                "top_logprobs": [
                    {
                        "token": top.get("token", ""),
                        "logprob": top.get("logprob", 0),
                        "bytes": top.get("bytes") or [],
                    }
                    for top in entry.get("top_logprobs") or ()
                ],
            }
        )
    return out


# -- events ----------------------------------------------------------------------------


class EventEncoder:
    """Frames the events of one stream, numbering them from 0."""

    def __init__(self) -> None:
        self.sequence = 0

    def event(self, type: str, fields: dict[str, t.Any]) -> bytes:
        fields["type"] = type
        fields["sequence_number"] = self.sequence
        self.sequence += 1
        return event_frame_bytes(type, dumps_bytes(fields))

    @staticmethod
    def text_delta_head(item_id: str, output_index: int, content_index: int) -> bytes:
        """What every ``response.output_text.delta`` frame of one part starts with."""
        return encode(
            "event: response.output_text.delta\ndata: "
            '{"type":"response.output_text.delta","item_id":'
            + dumps(item_id)
            + ',"output_index":'
            + str(output_index)
            + ',"content_index":'
            + str(content_index)
            + ',"delta":'
        )

    def text_delta(self, head: bytes, delta: str, logprobs: str = "[]") -> bytes:
        """The most frequent event: its part's :meth:`text_delta_head` and a few joined
        strings (no dict to encode).

        :param logprobs: the ``logprobs`` array, already JSON.
        """
        tail = dumps(delta) + ',"logprobs":' + logprobs + ',"sequence_number":'
        self.sequence += 1
        return head + encode(tail + str(self.sequence - 1)) + b"}\n\n"


class Output:
    """The Response's ``output`` built from agent events, with the stream events that
    build it in a client's accumulator (OpenAI's order: an item is added, its parts are
    added, deltas, parts done, item done; the next item opens once the last is done).

    :param frames: where the events' frames go; None builds the items only (JSON).
    :param response_id: the Response's id, which the items' ids carry.
    """

    def __init__(
        self, encoder: EventEncoder | None, frames: list[bytes] | None, response_id: str
    ) -> None:
        self.items: list[dict[str, t.Any]] = []
        self.response_id = response_id
        self._encoder = encoder
        self.frames = frames if frames is not None else []
        self._open: int | None = None  # output index of the item being built
        self._part: str | None = None  # "output_text" | "refusal": the message's open part
        self._pieces: list[str] = []
        self._logprobs: list[dict[str, t.Any]] = []
        self._calls: dict[int, int] = {}  # tool call index -> output index
        self._delta_head = b""  # the open output_text part's text_delta_head

    def _send(self, type: str, fields: dict[str, t.Any]) -> None:
        if self._encoder is not None:
            self.frames.append(self._encoder.event(type, fields))

    def _item_id(self, prefix: str) -> str:
        """The id of the item about to be added."""
        return output_item_id(prefix, self.response_id, len(self.items))

    def _add_item(self, item: dict[str, t.Any]) -> int:
        self.close_item()
        self.items.append(item)
        self._open = len(self.items) - 1
        self._send("response.output_item.added", {"output_index": self._open, "item": item})
        return self._open

    def add(self, event: Event) -> None:
        """Take one agent event (those that build no output are ignored)."""
        if isinstance(event, TextDelta):
            self._text(event)
        elif isinstance(event, RefusalDelta):
            self._refusal(event)
        elif isinstance(event, ReasoningDelta):
            self._reasoning(event.text)
        elif isinstance(event, ToolCallDelta):
            self._tool_call(event)

    # -- message -----------------------------------------------------------------------

    def _message(self, part: str) -> tuple[int, dict[str, t.Any]]:
        """The open message item, its ``part`` open (an item or part opened as needed)."""
        index = self._open
        if index is None or self.items[index]["type"] != "message":
            item: dict[str, t.Any] = {
                "id": self._item_id("msg"),
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            index = self._add_item(item)
        item = self.items[index]
        if self._part != part:
            self._close_part()
            empty: dict[str, t.Any] = (
                {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                if part == "output_text"
                else {"type": "refusal", "refusal": ""}
            )
            item["content"].append(empty)
            self._part = part
            self._send(
                "response.content_part.added",
                {
                    "item_id": item["id"],
                    "output_index": index,
                    "content_index": len(item["content"]) - 1,
                    "part": dict(empty),
                },
            )
        return index, item

    def _text(self, event: TextDelta) -> None:
        if not event.text and event.logprobs is None:
            return
        if self._part != "output_text":
            index, item = self._message("output_text")
            self._delta_head = EventEncoder.text_delta_head(
                item["id"], index, len(item["content"]) - 1
            )
        self._pieces.append(event.text)
        logprobs = "[]"
        if event.logprobs is not None:
            entries = logprobs_list(event.logprobs.content)
            self._logprobs.extend(entries)
            logprobs = dumps(entries)
        if self._encoder is not None:
            self.frames.append(self._encoder.text_delta(self._delta_head, event.text, logprobs))

    def _refusal(self, event: RefusalDelta) -> None:
        if not event.text:
            return
        index, item = self._message("refusal")
        self._pieces.append(event.text)
        self._send(
            "response.refusal.delta",
            {
                "item_id": item["id"],
                "output_index": index,
                "content_index": len(item["content"]) - 1,
                "delta": event.text,
            },
        )

    def _close_part(self) -> None:
        if self._part is None or self._open is None:
            return
        item = self.items[self._open]
        content_index = len(item["content"]) - 1
        text = "".join(self._pieces)
        where = {"item_id": item["id"], "output_index": self._open, "content_index": content_index}
        if self._part == "output_text":
            part = {
                "type": "output_text",
                "text": text,
                "annotations": [],
                "logprobs": self._logprobs,
            }
            self._send(
                "response.output_text.done", {**where, "text": text, "logprobs": part["logprobs"]}
            )
        else:
            part = {"type": "refusal", "refusal": text}
            self._send("response.refusal.done", {**where, "refusal": text})
        item["content"][content_index] = part
        self._send("response.content_part.done", {**where, "part": part})
        self._part = None
        self._pieces = []
        self._logprobs = []

    # -- reasoning ---------------------------------------------------------------------

    def _reasoning(self, text: str) -> None:
        if not text:
            return
        index = self._open
        if index is None or self.items[index]["type"] != "reasoning":
            item = {"id": self._item_id("rs"), "type": "reasoning", "summary": []}
            index = self._add_item(item)
            self._send(
                "response.reasoning_summary_part.added",
                {
                    "item_id": self.items[index]["id"],
                    "output_index": index,
                    "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                },
            )
        self._pieces.append(text)
        self._send(
            "response.reasoning_summary_text.delta",
            {
                "item_id": self.items[index]["id"],
                "output_index": index,
                "summary_index": 0,
                "delta": text,
            },
        )

    # -- function calls ----------------------------------------------------------------

    def _tool_call(self, event: ToolCallDelta) -> None:
        index = self._calls.get(event.index)
        if index is None:
            item = {
                "id": self._item_id("fc"),
                "type": "function_call",
                "call_id": event.id or new_id("call"),
                "name": event.name or "",
                "arguments": "",
                "status": "in_progress",
            }
            index = self._add_item(item)
            self._calls[event.index] = index
        else:
            item = self.items[index]
            # A name sent in pieces (rare): the done event carries the whole name.
            if event.name:
                item["name"] += event.name
        if event.arguments:
            item["arguments"] += event.arguments
            # A piece of a call that is no longer the open item (calls interleaved by
            # the upstream) still names its own output_index: an accumulator follows.
            self._send(
                "response.function_call_arguments.delta",
                {"item_id": item["id"], "output_index": index, "delta": event.arguments},
            )

    def snapshot(self) -> list[dict[str, t.Any]]:
        """The items as they stand (the open part or summary with its text so far):
        the output of a Response that failed midway."""
        items = [dict(item) for item in self.items]
        index = self._open
        if index is not None:
            item = items[index]
            text = "".join(self._pieces)
            if item["type"] == "message" and self._part is not None:
                content = item["content"] = list(item["content"])
                if self._part == "output_text":
                    content[-1] = {**content[-1], "text": text, "logprobs": list(self._logprobs)}
                else:
                    content[-1] = {**content[-1], "refusal": text}
            elif item["type"] == "reasoning":
                item["summary"] = [{"type": "summary_text", "text": text}]
        return items

    def call_ids(self) -> dict[int, str]:
        """The call id of each tool call index (generated where the agent sent none)."""
        return {call: self.items[index]["call_id"] for call, index in self._calls.items()}

    # -- closing -----------------------------------------------------------------------

    def close_item(self, status: str = "completed") -> None:
        """Finish the open item (its done events); ``status`` for a message or call."""
        index = self._open
        if index is None:
            return
        item = self.items[index]
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            self._close_part()
            item["status"] = status
        elif item["type"] == "reasoning":
            text = "".join(self._pieces)
            self._pieces = []
            part = {"type": "summary_text", "text": text}
            item["summary"] = [part]
            self._send(
                "response.reasoning_summary_text.done", {**where, "summary_index": 0, "text": text}
            )
            self._send(
                "response.reasoning_summary_part.done", {**where, "summary_index": 0, "part": part}
            )
        else:
            item["status"] = status
            self._send(
                "response.function_call_arguments.done",
                {**where, "name": item["name"], "arguments": item["arguments"]},
            )
        self._open = None
        self._send("response.output_item.done", {"output_index": index, "item": item})

    def finish(self, reply: Reply) -> tuple[str, str | None]:
        """Close the open item at the end of the run; the Response's status and
        incomplete reason. A reply with no item at all gets an empty message, as a chat
        completion has an empty content."""
        reason = INCOMPLETE_REASONS.get(reply.finish_reason)
        status = "completed" if reason is None else "incomplete"
        if not self.items:
            self._message("output_text")
        self.close_item(status)
        # The stored turn must name the calls by the ids the client got.
        ids = self.call_ids()
        for call_index, call in reply.calls.items():
            if not call["id"] and call_index in ids:
                call["id"] = ids[call_index]
        return status, reason


# -- bodies on a run -------------------------------------------------------------------


def complete(run: Run, request: ResponsesRequest, id: str | None = None) -> dict[str, t.Any]:
    """Drain the run into a Response (its turn, and the Response when ``store`` is
    true, stored before returning).

    :param id: the Response's id (a fresh ``resp_...`` when None).
    :raise errors.APIError: the run failed (nothing was stored).
    """
    try:
        id = id or response_id()
        reply = Reply()
        output = Output(None, None, id)
        for event in run.events():
            reply.add(event)
            output.add(event)
        status, reason = output.finish(reply)
        document = _document(id, run, request, output, status, reason, reply)
        run.finish(
            reply.message(),
            reply.usage,
            keyed_reply=document,
            response=_stored(id, run, request, document),
        )
        return document
    finally:
        run.close()


def stream(run: Run, request: ResponsesRequest, id: str | None = None) -> t.Iterator[bytes]:
    """The SSE body: ``response.created``, ``response.in_progress``, the output's
    events, then ``response.completed`` or ``response.incomplete``.

    Frames of events that are already waiting are sent in one write; nothing ever
    waits for a later event. An error after the first byte becomes
    ``response.failed`` (nothing stored); a client that left gets nothing more.

    :param id: the Response's id (a fresh ``resp_...`` when None).
    """
    id = id or response_id()
    encoder = EventEncoder()
    frames: list[bytes] = []
    output = Output(encoder, frames, id)
    keepalive = run.settings.sse_keepalive_seconds
    record = run.record
    reply = Reply()
    start = response_object(
        id=id,
        created_at=run.created,
        model=run.model,
        status="in_progress",
        output=[],
        echo=request.echo,
    )
    frames.append(encoder.event("response.created", {"response": start}))
    frames.append(encoder.event("response.in_progress", {"response": start}))
    run.watch()
    try:
        if not run.ready():
            yield _flush(frames, record)
        for event in run.events(keepalive):
            if isinstance(event, Keepalive):
                frames.append(KEEPALIVE_FRAME)
            else:
                reply.add(event)
                output.add(event)
                if isinstance(event, Finish):
                    break  # its frames go out with the events before it
            # A producer that keeps the queue full must not hold the client's bytes
            # back: a batch has a size bound.
            if frames and (len(frames) >= MAX_BATCH_FRAMES or not run.ready()):
                yield _flush(frames, record)
        status, reason = output.finish(reply)
        document = _document(id, run, request, output, status, reason, reply)
        run.finish(
            reply.message(),
            reply.usage,
            keyed_reply=document if run.keyed else None,
            response=_stored(id, run, request, document),
        )
        frames.append(encoder.event(f"response.{status}", {"response": document}))
        yield _flush(frames, record)
    except Exception as exc:
        # Headers are gone: whatever failed, the client gets response.failed.
        error = run.stream_failed(exc)
        if error is not None:
            failed = response_object(
                id=id,
                created_at=run.created,
                model=run.model,
                status="failed",
                output=output.snapshot(),
                echo=request.echo,
                error=failure(error),
            )
            frames.append(encoder.event("response.failed", {"response": failed}))
            yield _flush(frames, record)
    finally:
        run.end_stream()


def _document(
    id: str,
    run: Run,
    request: ResponsesRequest,
    output: Output,
    status: str,
    reason: str | None,
    reply: Reply,
) -> dict[str, t.Any]:
    document = response_object(
        id=id,
        created_at=run.created,
        model=run.model,
        status=status,
        output=output.items,
        echo=request.echo,
        usage=usage_dict(reply.usage),
        incomplete_reason=reason,
    )
    if reply.service_tier is not None:
        document["service_tier"] = reply.service_tier  # the tier that served it, as OpenAI says
    return document


def _stored(
    id: str, run: Run, request: ResponsesRequest, document: dict[str, t.Any]
) -> StoredResponse | None:
    if not request.store:
        return None
    return StoredResponse(
        id=id, owner=run.owner, document=document, input_items=request.input_items
    )


# -- replay ----------------------------------------------------------------------------


def replay_stream(document: dict[str, t.Any]) -> t.Iterator[bytes]:
    """A stored Response as the stream that delivers it: created, in_progress, each
    item with its parts in one delta each, and the final event, numbered from 0."""
    encoder = EventEncoder()
    start = {**document, "status": "in_progress", "output": [], "error": None}
    start["incomplete_details"] = None
    start.pop("usage", None)
    start.pop("completed_at", None)
    frames = [
        encoder.event("response.created", {"response": start}),
        encoder.event("response.in_progress", {"response": start}),
    ]
    for index, item in enumerate(document["output"]):
        frames.extend(_replay_item(encoder, index, item))
    final = document["status"] if document["status"] in ("incomplete", "failed") else "completed"
    frames.append(encoder.event(f"response.{final}", {"response": document}))
    yield b"".join(frames)


def _replay_item(encoder: EventEncoder, index: int, item: dict[str, t.Any]) -> list[bytes]:
    where = {"item_id": item.get("id", ""), "output_index": index}
    frames = []
    if item["type"] == "message":
        frames.append(
            encoder.event(
                "response.output_item.added",
                {"output_index": index, "item": {**item, "status": "in_progress", "content": []}},
            )
        )
        for content_index, part in enumerate(item["content"]):
            at = {**where, "content_index": content_index}
            if part["type"] == "output_text":
                empty = {**part, "text": "", "logprobs": []}
                frames.append(encoder.event("response.content_part.added", {**at, "part": empty}))
                head = encoder.text_delta_head(where["item_id"], index, content_index)
                frames.append(encoder.text_delta(head, part["text"], dumps(part["logprobs"])))
                done = {"text": part["text"], "logprobs": part["logprobs"]}
                frames.append(encoder.event("response.output_text.done", {**at, **done}))
            else:
                empty = {"type": "refusal", "refusal": ""}
                frames.append(encoder.event("response.content_part.added", {**at, "part": empty}))
                delta = {"delta": part["refusal"]}
                frames.append(encoder.event("response.refusal.delta", {**at, **delta}))
                done = {"refusal": part["refusal"]}
                frames.append(encoder.event("response.refusal.done", {**at, **done}))
            frames.append(encoder.event("response.content_part.done", {**at, "part": part}))
    elif item["type"] == "function_call":
        frames.append(
            encoder.event(
                "response.output_item.added",
                {
                    "output_index": index,
                    "item": {**item, "arguments": "", "status": "in_progress"},
                },
            )
        )
        arguments = {"delta": item["arguments"]}
        frames.append(
            encoder.event("response.function_call_arguments.delta", {**where, **arguments})
        )
        done = {"name": item["name"], "arguments": item["arguments"]}
        frames.append(encoder.event("response.function_call_arguments.done", {**where, **done}))
    else:  # reasoning
        added = {"output_index": index, "item": {**item, "summary": []}}
        frames.append(encoder.event("response.output_item.added", added))
        for summary_index, part in enumerate(item.get("summary") or ()):
            at = {**where, "summary_index": summary_index}
            empty = {"type": "summary_text", "text": ""}
            frames.append(
                encoder.event("response.reasoning_summary_part.added", {**at, "part": empty})
            )
            delta = {"delta": part["text"]}
            frames.append(encoder.event("response.reasoning_summary_text.delta", {**at, **delta}))
            text = {"text": part["text"]}
            frames.append(encoder.event("response.reasoning_summary_text.done", {**at, **text}))
            frames.append(
                encoder.event("response.reasoning_summary_part.done", {**at, "part": part})
            )
    frames.append(encoder.event("response.output_item.done", {"output_index": index, "item": item}))
    return frames


def replay_response(document: dict[str, t.Any], stream: bool) -> Response:
    """A stored Response (of an earlier request with the same ``Idempotency-Key``) in
    the form this request asks for, JSON or a stream, marked
    ``Idempotent-Replayed: true``; nothing runs."""
    if stream:
        response = sse_response(replay_stream(document))
    else:
        response = json_response(document)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _flush(frames: list[bytes], record: RequestRecord) -> bytes:
    data = frames[0] if len(frames) == 1 else b"".join(frames)
    frames.clear()
    record.first_byte()
    return data
