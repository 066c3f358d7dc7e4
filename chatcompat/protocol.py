"""OpenAI Chat Completions shapes: completion ids, responses, stream chunks, models.

Pure functions and small value builders; nothing here knows HTTP or agents. Every
shape passes OpenAI's published schemas, including the fields they require even
when null (``logprobs``, ``message.refusal``, ``finish_reason`` on every chunk).
"""

from __future__ import annotations

import json
import os
import typing as t

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
) -> dict[str, t.Any]:
    """A whole ``chat.completion`` object with one choice; ``service_tier`` and
    ``system_fingerprint`` only when the backend reported them."""
    message: dict[str, t.Any] = {"role": "assistant", "content": content, "refusal": refusal}
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


def model_entry(model_id: str) -> dict[str, t.Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "chatcompat"}


def model_list(model_ids: t.Iterable[str]) -> dict[str, t.Any]:
    return {"object": "list", "data": [model_entry(m) for m in model_ids]}
