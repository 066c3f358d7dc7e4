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


def usage_dict(prompt_tokens: int, completion_tokens: int, total_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total_tokens,
    }


def completion(
    *,
    id: str,
    created: int,
    model: str,
    content: str | None,
    tool_calls: list[dict[str, t.Any]] | None,
    finish_reason: str,
    usage: dict[str, int],
) -> dict[str, t.Any]:
    """A whole ``chat.completion`` object with one choice."""
    message: dict[str, t.Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": usage,
    }


class ChunkEncoder:
    """Encodes the ``chat.completion.chunk`` objects of one stream.

    The part every chunk shares (id, created, model) is encoded once; a chunk is
    then two string joins, which keeps the per-delta cost small.
    """

    def __init__(self, id: str, created: int, model: str) -> None:
        self._head = (
            '{"id":'
            + dumps(id)
            + ',"object":"chat.completion.chunk","created":'
            + str(int(created))
            + ',"model":'
            + dumps(model)
            + ',"choices":'
        )
        self._choice_head = self._head + '[{"index":0,"delta":'

    def delta(self, delta: dict[str, t.Any], finish_reason: str | None = None) -> str:
        finish = "null" if finish_reason is None else dumps(finish_reason)
        return self._choice_head + dumps(delta) + ',"finish_reason":' + finish + "}]}"

    def role(self) -> str:
        return self._choice_head + '{"role":"assistant","content":""},"finish_reason":null}]}'

    def content(self, text: str) -> str:
        return self._choice_head + '{"content":' + dumps(text) + '},"finish_reason":null}]}'

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

    def usage(self, usage: dict[str, int]) -> str:
        return self._head + '[],"usage":' + dumps(usage) + "}"


def model_entry(model_id: str) -> dict[str, t.Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "chatcompat"}


def model_list(model_ids: t.Iterable[str]) -> dict[str, t.Any]:
    return {"object": "list", "data": [model_entry(m) for m in model_ids]}
