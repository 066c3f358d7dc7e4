#!/usr/bin/env python3
"""A fast, dependency-free OpenAI-compatible upstream for chatcompat's benchmarks.

Serves ``POST /v1/chat/completions`` (JSON or SSE) and ``GET /v1/models`` on loopback,
with raw asyncio HTTP/1.1 and keep-alive, so that it costs little CPU next to the
gateway under test (uvloop is used when installed). The reply is deterministic:

    "mock: <last user text, first 40 chars> [messages=N system=S]" followed by
    TOKENS filler words (" w1 w2 ..."), streamed one word per chunk.

Knobs: ``--port`` (18800), ``--tokens`` (20), ``--delay-ms`` before each word (0).
A request's model name overrides them per request:

* ``mock-<tokens>-<delayms>``: reply length and delay before each word
  (``mock-30-1000`` streams one word per second for 30 s: the capacity run);
* ``mock-status-<code>``: answer with that HTTP status and an OpenAI error body;
* ``mock-cut-<n>``: stream n words, then drop the connection (no ``[DONE]``).

Adapted from the company's shared bench tool; this copy belongs to the project.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

ARGS: argparse.Namespace


def parse_model(model: object, tokens: int, delay: float) -> tuple[int, float]:
    if isinstance(model, str) and model.startswith("mock-"):
        parts = model.split("-")
        try:
            tokens = int(parts[1])
            delay = float(parts[2]) if len(parts) > 2 else delay
        except (IndexError, ValueError):
            pass
    return tokens, delay


def text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class MockCut(Exception):
    """The mock dropped the connection on purpose (model ``mock-cut-<n>``)."""


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


async def send_json(writer: asyncio.StreamWriter, status: int, obj: object, keep: bool) -> None:
    data = _json(obj)
    writer.write(
        b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: %s\r\n\r\n" % (status, len(data), b"keep-alive" if keep else b"close") + data
    )
    await writer.drain()


def _frame(payload: bytes) -> bytes:
    data = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


async def chat(writer: asyncio.StreamWriter, body: dict, keep: bool) -> None:
    model_name = str(body.get("model") or "")
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    last_user = ""
    for m in reversed(messages):
        if m.get("role") == "user":
            last_user = text_of(m.get("content"))
            break
    if model_name.startswith("mock-status-"):
        code = int(model_name.rsplit("-", 1)[1])
        kind = "invalid_request_error" if code < 500 else "server_error"
        error = {
            "message": f"mock upstream error {code}",
            "type": kind,
            "param": None,
            "code": f"mock_{code}",
        }
        await send_json(writer, code, {"error": error}, keep)
        return
    cut = None
    if model_name.startswith("mock-cut-"):
        cut = int(model_name.rsplit("-", 1)[1])
        body = dict(body, stream=True)
    tokens, delay = parse_model(body.get("model"), ARGS.tokens, ARGS.delay_ms)
    systems = sum(1 for m in messages if m.get("role") in ("system", "developer"))
    head = f"mock: {last_user[:40]} [messages={len(messages)} system={systems}]"
    words = [head] + [f" w{i}" for i in range(1, tokens + 1)]
    cid = f"chatcmpl-mock{int(time.time() * 1e6)}"
    created = int(time.time())
    model = body.get("model") or "mock"
    prompt = sum(len(text_of(m.get("content")).split()) for m in messages)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": len(words),
        "total_tokens": prompt + len(words),
    }
    if not body.get("stream"):
        if delay:
            await asyncio.sleep(delay * len(words) / 1000)
        message = {"role": "assistant", "content": "".join(words)}
        await send_json(
            writer,
            200,
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            },
            keep,
        )
        return
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Cache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: "
        + (b"keep-alive" if keep else b"close")
        + b"\r\n\r\n"
    )
    # Every chunk shares its head: encode it once (the mock must stay cheap).
    head_bytes = (
        b'{"id":'
        + _json(cid)
        + b',"object":"chat.completion.chunk","created":'
        + str(created).encode()
        + b',"model":'
        + _json(model)
        + b',"choices":'
    )
    choice = head_bytes + b'[{"index":0,"delta":'
    writer.write(_frame(choice + b'{"role":"assistant","content":""},"finish_reason":null}]}'))
    for i, word in enumerate(words):
        if cut is not None and i >= cut:
            await writer.drain()
            writer.transport.abort()
            raise MockCut()
        if delay:
            await writer.drain()
            await asyncio.sleep(delay / 1000)
        writer.write(_frame(choice + b'{"content":' + _json(word) + b'},"finish_reason":null}]}'))
    writer.write(_frame(choice + b'{},"finish_reason":"stop"}]}'))
    if (body.get("stream_options") or {}).get("include_usage"):
        writer.write(_frame(head_bytes + b'[],"usage":' + _json(usage) + b"}"))
    writer.write(_frame(b"[DONE]") + b"0\r\n\r\n")
    await writer.drain()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            method, path, _ = line.decode("latin1").split(" ", 2)
            headers = {}
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin1").partition(":")
                headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0") or 0)
            raw = await reader.readexactly(n) if n else b""
            keep = headers.get("connection", "").lower() != "close"
            if method == "GET" and path.startswith("/v1/models"):
                await send_json(
                    writer,
                    200,
                    {
                        "object": "list",
                        "data": [
                            {"id": "mock", "object": "model", "created": 0, "owned_by": "mock"}
                        ],
                    },
                    keep,
                )
            elif method == "POST" and path.startswith("/v1/chat/completions"):
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    error = {"message": "bad json", "type": "invalid_request_error"}
                    await send_json(writer, 400, {"error": error}, keep)
                    continue
                try:
                    await chat(writer, body, keep)
                except (MockCut, ConnectionError, OSError):
                    return
            else:
                error = {"message": "not found", "type": "not_found"}
                await send_json(writer, 404, {"error": error}, keep)
            if not keep:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - closing a dead transport
            pass


async def main() -> None:
    server = await asyncio.start_server(handle, ARGS.host, ARGS.port, backlog=8192)
    print(f"mock upstream on http://{ARGS.host}:{ARGS.port}/v1", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=int(os.environ.get("MOCK_PORT", 18800)))
    p.add_argument("--tokens", type=int, default=int(os.environ.get("MOCK_TOKENS", 20)))
    p.add_argument("--delay-ms", type=float, default=float(os.environ.get("MOCK_DELAY_MS", 0)))
    ARGS = p.parse_args()
    try:
        import uvloop  # optional: a cheaper event loop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
