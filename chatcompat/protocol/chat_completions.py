"""OpenAI's Chat Completions on the wire: the ``chat.completion`` object, the
``chat.completion.chunk`` stream, the error frame and the idempotency replay.

The bodies are built on a protocol-neutral :class:`~chatcompat.run.Run`:
:func:`complete` drains it into one ``chat.completion``; :func:`stream` relays its
events as SSE frames (role chunk, deltas, finish chunk, usage chunk, ``[DONE]``).
Every shape passes OpenAI's published schemas, including the fields they require
even when null (``logprobs``, ``message.refusal``, ``finish_reason`` on every chunk).
The agent's reasoning goes as ``reasoning_content`` (``delta.reasoning_content`` in
chunks, ``message.reasoning_content`` in JSON), the field DeepSeek, vLLM and the
clients that read them use; OpenAI's schemas allow such extra properties there.
"""

from __future__ import annotations

import os
import typing as t

from ..agents.base import Finish
from ..agents.base import ReasoningDelta
from ..agents.base import RefusalDelta
from ..agents.base import ReplyInfo
from ..agents.base import TextDelta
from ..agents.base import ToolCallDelta
from ..agents.base import Usage
from ..run import Keepalive
from .jsonenc import dumps
from .jsonenc import json_response
from .reply import Reply
from .sse import DONE_FRAME
from .sse import KEEPALIVE_FRAME
from .sse import data_frame
from .sse import sse_response

if t.TYPE_CHECKING:
    from flask import Response

    from .. import errors
    from ..requestlog import RequestRecord
    from ..run import Run

MAX_BATCH_FRAMES = 64  # frames sent in one write at most


def completion_id() -> str:
    return "chatcmpl-" + os.urandom(12).hex()


def usage_dict(
    prompt_tokens: int,
    completion_tokens: int,
    total_tokens: int,
    prompt_tokens_details: t.Mapping[str, int] | None = None,
    completion_tokens_details: t.Mapping[str, int] | None = None,
) -> dict[str, t.Any]:
    """OpenAI's ``usage``; the details objects only when the backend reported them."""
    usage: dict[str, t.Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total_tokens,
    }
    if prompt_tokens_details:
        usage["prompt_tokens_details"] = dict(prompt_tokens_details)
    if completion_tokens_details:
        usage["completion_tokens_details"] = dict(completion_tokens_details)
    return usage


def logprobs_dict(
    content: list[dict[str, t.Any]] | None, refusal: list[dict[str, t.Any]] | None
) -> dict[str, t.Any]:
    """A choice's ``logprobs`` (both keys are required, each may be null)."""
    return {"content": content, "refusal": refusal}


def completion(
    *,
    id: str,
    created: int,
    model: str,
    content: str | None,
    tool_calls: list[dict[str, t.Any]] | None,
    finish_reason: str,
    usage: dict[str, t.Any],
    logprobs: dict[str, t.Any] | None = None,
    service_tier: str | None = None,
    system_fingerprint: str | None = None,
    refusal: str | None = None,
    reasoning: str | None = None,
) -> dict[str, t.Any]:
    """A whole ``chat.completion`` object with one choice; ``service_tier``,
    ``system_fingerprint`` and the message's ``reasoning_content`` only when the
    backend reported them."""
    message: dict[str, t.Any] = {"role": "assistant", "content": content, "refusal": refusal}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["tool_calls"] = tool_calls
    document: dict[str, t.Any] = {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}
        ],
        "usage": usage,
    }
    if service_tier is not None:
        document["service_tier"] = service_tier
    if system_fingerprint is not None:
        document["system_fingerprint"] = system_fingerprint
    return document


class ChunkEncoder:
    """Encodes the ``chat.completion.chunk`` objects of one stream.

    The part every chunk shares (id, created, model) is encoded once; a chunk is
    then two string joins, which keeps the per-delta cost small.
    """

    def __init__(self, id: str, created: int, model: str) -> None:
        self._common = (
            '{"id":'
            + dumps(id)
            + ',"object":"chat.completion.chunk","created":'
            + str(int(created))
            + ',"model":'
            + dumps(model)
        )
        self.reply_info(None, None)

    def reply_info(self, service_tier: str | None, system_fingerprint: str | None) -> None:
        """Put the backend's ``service_tier`` / ``system_fingerprint`` on the chunks from
        now on (None leaves the field out)."""
        head = self._common
        if service_tier is not None:
            head += ',"service_tier":' + dumps(service_tier)
        if system_fingerprint is not None:
            head += ',"system_fingerprint":' + dumps(system_fingerprint)
        self._head = head + ',"choices":'
        self._choice_head = self._head + '[{"index":0,"delta":'

    def delta(self, delta: dict[str, t.Any], finish_reason: str | None = None) -> str:
        finish = "null" if finish_reason is None else dumps(finish_reason)
        return self._choice_head + dumps(delta) + ',"finish_reason":' + finish + "}]}"

    def role(self) -> str:
        return self._choice_head + '{"role":"assistant","content":""},"finish_reason":null}]}'

    def content(self, text: str, logprobs: dict[str, t.Any] | None = None) -> str:
        if logprobs is None:
            return self._choice_head + '{"content":' + dumps(text) + '},"finish_reason":null}]}'
        return (
            self._choice_head
            + '{"content":'
            + dumps(text)
            + '},"logprobs":'
            + dumps(logprobs)
            + ',"finish_reason":null}]}'
        )

    def refusal(self, text: str, logprobs: dict[str, t.Any] | None = None) -> str:
        choice_tail = "" if logprobs is None else ',"logprobs":' + dumps(logprobs)
        return (
            self._choice_head
            + '{"refusal":'
            + dumps(text)
            + "}"
            + choice_tail
            + ',"finish_reason":null}]}'
        )

    def reasoning(self, text: str) -> str:
        return (
            self._choice_head + '{"reasoning_content":' + dumps(text) + '},"finish_reason":null}]}'
        )

    def tool_call(self, index: int, id: str | None, name: str | None, arguments: str) -> str:
        call: dict[str, t.Any] = {"index": index}
        if id is not None:
            call["id"] = id
            call["type"] = "function"
        function: dict[str, str] = {}
        if name is not None:
            function["name"] = name
        function["arguments"] = arguments
        call["function"] = function
        return self.delta({"tool_calls": [call]})

    def finish(self, finish_reason: str) -> str:
        return self._choice_head + '{},"finish_reason":' + dumps(finish_reason) + "}]}"

    def usage(self, usage: dict[str, t.Any]) -> str:
        return self._head + '[],"usage":' + dumps(usage) + "}"


# -- bodies on a run ------------------------------------------------------------------


def complete(run: Run) -> dict[str, t.Any]:
    """Drain the run into a ``chat.completion`` object (its turn stored before returning).

    :raise errors.APIError: the run failed (nothing was stored).
    """
    try:
        reply = Reply()
        for event in run.events():
            reply.add(event)
        document = _completion(completion_id(), run.created, run.model, reply)
        run.finish(reply.message(), reply.usage, keyed_reply=document)
        return document
    finally:
        run.close()


def stream(run: Run, include_usage: bool) -> t.Iterator[bytes]:
    """The SSE body: role chunk, deltas, finish chunk, usage chunk, ``[DONE]``.

    Frames of events that are already waiting are sent in one write (one
    syscall and one HTTP chunk instead of one per frame); nothing ever waits
    for a later event. An error after the first byte becomes one error frame
    before ``[DONE]``.
    """
    id = completion_id()
    encoder = ChunkEncoder(id, run.created, run.model)
    keepalive = run.settings.sse_keepalive_seconds
    record = run.record
    reply = Reply()
    frames = [data_frame(encoder.role())]
    run.watch()
    try:
        if not run.ready():
            yield _flush(frames, record)
        for event in run.events(keepalive):
            if isinstance(event, Keepalive):
                frames.append(KEEPALIVE_FRAME)
            else:
                reply.add(event)
                if isinstance(event, TextDelta):
                    if event.text or event.logprobs is not None:
                        frames.append(data_frame(encoder.content(event.text, _logprobs(event))))
                elif isinstance(event, ToolCallDelta):
                    frames.append(
                        data_frame(
                            encoder.tool_call(event.index, event.id, event.name, event.arguments)
                        )
                    )
                elif isinstance(event, RefusalDelta):
                    frames.append(data_frame(encoder.refusal(event.text, _logprobs(event))))
                elif isinstance(event, ReasoningDelta):
                    if event.text:
                        frames.append(data_frame(encoder.reasoning(event.text)))
                elif isinstance(event, ReplyInfo):
                    encoder.reply_info(event.service_tier, event.system_fingerprint)
                elif isinstance(event, Finish):
                    break  # its frames go out with the deltas before it
            # A producer that keeps the queue full (real threads under gthread)
            # must not hold the client's bytes back: a batch has a size bound.
            if frames and (len(frames) >= MAX_BATCH_FRAMES or not run.ready()):
                yield _flush(frames, record)
        keyed_reply = _completion(id, run.created, run.model, reply) if run.keyed else None
        run.finish(reply.message(), reply.usage, keyed_reply=keyed_reply)
        frames.append(data_frame(encoder.finish(reply.finish_reason)))
        if include_usage:
            frames.append(data_frame(encoder.usage(_usage(reply.usage))))
        frames.append(DONE_FRAME)
        yield _flush(frames, record)
    except Exception as exc:
        # Headers are gone: whatever failed, the client gets an error frame.
        error = run.stream_failed(exc)
        if error is not None:
            if frames:
                yield _flush(frames, record)
            yield error_frame(error)
            yield DONE_FRAME
    finally:
        run.end_stream()


def error_frame(error: errors.APIError) -> bytes:
    """The frame of an error after the stream began (the error envelope as data)."""
    return data_frame(dumps(error.to_dict()))


def replay_stream(document: dict[str, t.Any], include_usage: bool) -> t.Iterator[bytes]:
    """A stored ``chat.completion`` as the stream that delivers it: the role chunk,
    one reasoning chunk, one content chunk and one refusal chunk (each with its
    logprobs), one chunk per tool call, the finish chunk, the usage chunk when asked,
    ``[DONE]``; every chunk with the reply's id, created, model, service tier and
    system fingerprint."""
    choice = document["choices"][0]
    message = choice["message"]
    logprobs = choice.get("logprobs") or {}
    encoder = ChunkEncoder(document["id"], document["created"], document["model"])
    encoder.reply_info(document.get("service_tier"), document.get("system_fingerprint"))
    frames = [data_frame(encoder.role())]
    if message.get("reasoning_content"):
        frames.append(data_frame(encoder.reasoning(message["reasoning_content"])))
    if message.get("content") or logprobs.get("content") is not None:
        pieces = logprobs_dict(logprobs["content"], None) if logprobs.get("content") else None
        frames.append(data_frame(encoder.content(message.get("content") or "", pieces)))
    if message.get("refusal"):
        pieces = logprobs_dict(None, logprobs["refusal"]) if logprobs.get("refusal") else None
        frames.append(data_frame(encoder.refusal(message["refusal"], pieces)))
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call["function"]
        chunk = encoder.tool_call(index, call["id"], function["name"], function["arguments"])
        frames.append(data_frame(chunk))
    frames.append(data_frame(encoder.finish(choice["finish_reason"])))
    if include_usage:
        frames.append(data_frame(encoder.usage(document["usage"])))
    frames.append(DONE_FRAME)
    yield b"".join(frames)


def replay_response(document: dict[str, t.Any], stream: bool, include_usage: bool) -> Response:
    """A stored ``chat.completion`` (of an earlier request with the same
    ``Idempotency-Key``) in the form this request asks for, JSON or a stream, marked
    ``Idempotent-Replayed: true``; nothing runs."""
    if stream:
        response = sse_response(replay_stream(document, include_usage))
    else:
        response = json_response(document)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _completion(id: str, created: int, model: str, reply: Reply) -> dict[str, t.Any]:
    """The ``chat.completion`` object of the finished reply."""
    return completion(
        id=id,
        created=created,
        model=model,
        content=reply.content,
        tool_calls=reply.tool_calls or None,
        finish_reason=reply.finish_reason,
        usage=_usage(reply.usage),
        logprobs=_reply_logprobs(reply),
        service_tier=reply.service_tier,
        system_fingerprint=reply.system_fingerprint,
        refusal=reply.refusal,
        reasoning=reply.reasoning,
    )


def _usage(usage: Usage | None) -> dict[str, t.Any]:
    usage = usage or Usage()
    return usage_dict(
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
        usage.prompt_tokens_details,
        usage.completion_tokens_details,
    )


def _reply_logprobs(reply: Reply) -> dict[str, t.Any] | None:
    if reply.logprobs_content is None and reply.logprobs_refusal is None:
        return None
    return logprobs_dict(reply.logprobs_content, reply.logprobs_refusal)


def _logprobs(event: TextDelta | RefusalDelta) -> dict[str, t.Any] | None:
    """The piece's ``logprobs`` for its chunk, as the backend sent them."""
    found = event.logprobs
    return None if found is None else logprobs_dict(found.content, found.refusal)


def _flush(frames: list[bytes], record: RequestRecord) -> bytes:
    data = frames[0] if len(frames) == 1 else b"".join(frames)
    frames.clear()
    record.first_byte()
    return data
