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
