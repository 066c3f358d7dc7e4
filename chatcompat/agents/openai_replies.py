"""Reading an OpenAI-compatible upstream's replies: stream chunks and whole
completions become agent events, error bodies become their parts. Pure functions of
the JSON the upstream sent; what is unusable raises :class:`AgentError`, or is left
out where OpenAI's schema would refuse it in the client's hands.
"""

from __future__ import annotations

import json
import typing as t

from .. import fastjson
from .base import AgentError
from .base import Event
from .base import Finish
from .base import Logprobs
from .base import ReasoningDelta
from .base import RefusalDelta
from .base import ReplyInfo
from .base import TextDelta
from .base import ToolCallDelta
from .base import Usage

FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter"}
# OpenAI's values; another one (some compatible server's own) would break the client's schema.
SERVICE_TIERS = {"auto", "default", "flex", "scale", "priority", "fast"}
# Where compatible servers put the model's reasoning in a delta or message: DeepSeek,
# vLLM, llama.cpp and others use reasoning_content, OpenRouter reasoning. Some send
# both with the same text: the first that is not empty is the one read.
REASONING_FIELDS = ("reasoning_content", "reasoning")


def parse_json(raw: bytes | str, where: str) -> dict[str, t.Any]:
    try:
        document = fastjson.loads(raw)
    except ValueError as exc:
        raise AgentError(f"The upstream {where} sent something that is not JSON.") from exc
    if not isinstance(document, dict):
        raise AgentError(f"The upstream {where} sent JSON that is not an object.")
    error = document.get("error")
    if error is not None:  # an error event in a 200 stream (vLLM, OpenAI do this)
        message = error.get("message") if isinstance(error, dict) else error
        raise AgentError(f"The upstream {where} reported an error: {message}")
    return document


def chunk_events(chunk: dict[str, t.Any]) -> t.Iterator[Event | str]:
    """The events of one ``chat.completion.chunk``; a ``str`` is its finish_reason."""
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue  # we ask for one choice; a default n in params must not mix them
        delta = choice.get("delta") or {}
        yield from _text_events(delta, _logprobs(choice.get("logprobs")))
        for position, call in enumerate(delta.get("tool_calls") or ()):
            function = call.get("function") or {}
            arguments = function.get("arguments")
            yield ToolCallDelta(
                index=int(call.get("index", position)),
                id=call.get("id") or None,
                name=function.get("name") or None,
                arguments=arguments if isinstance(arguments, str) else "",
            )
        if choice.get("finish_reason"):
            yield str(choice["finish_reason"])


def _text_events(delta: dict[str, t.Any], logprobs: Logprobs | None) -> t.Iterator[Event]:
    """The reasoning, refusal and text of a delta (or message), the log probabilities
    on the refusal or text."""
    for field in REASONING_FIELDS:
        reasoning = delta.get(field)
        if isinstance(reasoning, str) and reasoning:
            yield ReasoningDelta(reasoning)
            break
    refusal = delta.get("refusal")
    if isinstance(refusal, str) and refusal:
        yield RefusalDelta(refusal, logprobs)
        logprobs = None
    content = delta.get("content")
    if (isinstance(content, str) and content) or logprobs is not None:
        yield TextDelta(content if isinstance(content, str) else "", logprobs)


def completion_events(document: dict[str, t.Any], where: str) -> t.Iterator[Event]:
    """An upstream that ignored ``stream: true`` sent one ``chat.completion``."""
    choices = [c for c in document.get("choices") or () if isinstance(c, dict)]
    if not choices:
        raise AgentError(f"The upstream {where} sent a completion without choices.")
    info = reply_info_of(document)
    if info is not None:
        yield info
    message = choices[0].get("message") or {}
    yield from _text_events(message, _logprobs(choices[0].get("logprobs")))
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if arguments is None:
            arguments = ""  # as the stream path relays a call without arguments
        elif not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        yield ToolCallDelta(index, call.get("id"), function.get("name"), arguments)
    yield Finish(finish_reason_of(choices[0].get("finish_reason")), usage_of(document.get("usage")))


def usage_of(value: t.Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt = value.get("prompt_tokens") or 0
    completion = value.get("completion_tokens") or 0
    total = value.get("total_tokens") or prompt + completion
    return Usage(
        int(prompt),
        int(completion),
        int(total),
        _details(value.get("prompt_tokens_details")),
        _details(value.get("completion_tokens_details")),
    )


def _details(value: t.Any) -> dict[str, int] | None:
    """The integer entries of a usage details object (vLLM sends null, others nulls
    inside: OpenAI's schema takes integers only)."""
    if not isinstance(value, dict):
        return None
    details = {
        str(key): number
        for key, number in value.items()
        if isinstance(number, int) and not isinstance(number, bool)
    }
    return details or None


def reply_info_of(document: dict[str, t.Any]) -> ReplyInfo | None:
    """The chunk's or completion's service tier and system fingerprint, if it has any."""
    if "service_tier" not in document and "system_fingerprint" not in document:
        return None  # most compatible servers: no object per chunk for nothing
    tier = document.get("service_tier")
    fingerprint = document.get("system_fingerprint")
    info = ReplyInfo(
        tier if tier in SERVICE_TIERS else None,
        fingerprint if isinstance(fingerprint, str) else None,
    )
    return None if info == ReplyInfo() else info


def _logprobs(value: t.Any) -> Logprobs | None:
    """A choice's ``logprobs`` with OpenAI's required keys filled in.

    :raise ValueError: an entry without a string token and a numeric logprob.
    """
    if not isinstance(value, dict):
        return None
    content = _token_logprobs(value.get("content"), alternatives=True)
    refusal = _token_logprobs(value.get("refusal"), alternatives=True)
    if not content and not refusal:
        return None
    return Logprobs(content, refusal)


def _token_logprobs(entries: t.Any, alternatives: bool) -> list[dict[str, t.Any]] | None:
    if not isinstance(entries, list):
        return None
    tokens = []
    for entry in entries:
        token, logprob = entry.get("token"), entry.get("logprob")
        if (
            not isinstance(token, str)
            or not isinstance(logprob, (int, float))
            or isinstance(logprob, bool)
        ):
            raise ValueError("a logprobs entry needs a token and a logprob")
        raw = entry.get("bytes")
        valid_bytes = isinstance(raw, list) and all(isinstance(b, int) for b in raw)
        item: dict[str, t.Any] = {
            "token": token,
            "logprob": logprob,
            "bytes": raw if valid_bytes else None,
        }
        if alternatives:
            item["top_logprobs"] = _token_logprobs(entry.get("top_logprobs"), False) or []
        tokens.append(item)
    return tokens


def finish_reason_of(reason: str | None) -> str:
    # content_filter is kept: it is OpenAI's own value and tells the client why the text
    # stopped. Legacy function_call becomes tool_calls; anything else (llama.cpp's
    # "eos", missing) means the model stopped on its own.
    if reason == "function_call":
        return "tool_calls"
    return reason if reason in FINISH_REASONS else "stop"


def error_details(raw: bytes) -> tuple[str | None, str | None, str | None, str | None]:
    """message, type, code and param of an upstream error body, as far as it has them."""
    try:
        document = json.loads(raw)
    except ValueError:
        return None, None, None, None
    if not isinstance(document, dict):
        return None, None, None, None
    error = document.get("error")
    if isinstance(error, str):  # Ollama, llama.cpp: {"error": "model not found"}
        return error, None, None, None
    if not isinstance(error, dict):
        # Older vLLM: the fields at the top level; FastAPI apps: {"detail": "..."}.
        error = {**document, "message": document.get("message") or document.get("detail")}
    strings = [error.get(key) for key in ("message", "type", "code", "param")]
    # vLLM puts the HTTP status (an int) in code; OpenAI's code is a string or null.
    message, kind, code, param = (value if isinstance(value, str) else None for value in strings)
    return message, kind, code, param


def default_error_type(status: int) -> str:
    return {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error"
    )
