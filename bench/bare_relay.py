"""The ceiling of chatcompat's stack: a bare Flask relay under gunicorn + gevent.

What every OpenAI-compatible relay on this stack must do, and nothing more: check the
bearer token, parse the body, call the upstream over a pooled keep-alive connection
(a whole completion for a JSON client, the upstream's stream for a streaming one),
and answer in the OpenAI shape with the gateway's own id and model (orjson). No
sessions, no store, no validation beyond the JSON, no log line, no metrics, no
disconnect handling. ``bench/ceiling.py`` serves it with gunicorn's own gevent worker
and ``chatcompat serve``'s worker connections, keep-alive and backlog, and measures
it beside the direct mock and chatcompat.

    UPSTREAM=127.0.0.1:PORT TOKEN=... gunicorn -k gevent -w 2 bare_relay:app
"""

from __future__ import annotations

import hmac
import http.client
import os
import time
import typing as t
import uuid

import orjson
from flask import Flask
from flask import Response
from flask import request

UPSTREAM = os.environ["UPSTREAM"]  # host:port of the OpenAI-compatible upstream
TOKEN = os.environ["TOKEN"].encode()
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer upstream-key"}

app = Flask(__name__)
_idle: list[http.client.HTTPConnection] = []  # one gevent worker: no lock needed


def _connection() -> http.client.HTTPConnection:
    return _idle.pop() if _idle else http.client.HTTPConnection(UPSTREAM, timeout=30)


def _error(status: int, message: str) -> Response:
    body = {"error": {"message": message, "type": "invalid_request_error"}}
    return Response(orjson.dumps(body), status, content_type="application/json")


@app.get("/healthz")
def healthz() -> Response:
    return Response(b"ok", content_type="text/plain")


@app.post("/v1/chat/completions")
def chat_completions() -> Response:
    sent = request.headers.get("Authorization", "").encode()
    if not hmac.compare_digest(sent, b"Bearer " + TOKEN):
        return _error(401, "Invalid bearer token.")
    try:
        body = orjson.loads(request.get_data())
        messages = body["messages"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return _error(400, "The body is not a chat completion request.")
    stream = body.get("stream") is True
    payload = {"model": "mock", "messages": messages, "stream": stream}
    conn = _connection()
    conn.request("POST", "/v1/chat/completions", orjson.dumps(payload), HEADERS)
    upstream = conn.getresponse()
    if upstream.status != 200:
        upstream.read()
        _idle.append(conn)
        return _error(502, f"The upstream answered {upstream.status}.")
    model = body.get("model", "openclaw")
    reply_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not stream:
        reply = orjson.loads(upstream.read())
        _idle.append(conn)
        document = {
            "id": reply_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": reply["choices"],
            "usage": reply.get("usage"),
        }
        return Response(orjson.dumps(document), content_type="application/json")

    def frames() -> t.Iterator[bytes]:
        # Every event that came in one read goes out in one write, as chatcompat does.
        pending = b""
        done = False
        while not done:
            data = upstream.read1(65536)
            if not data:
                break
            *events, pending = (pending + data).split(b"\n\n")
            out = []
            for event in events:
                if not event.startswith(b"data: "):
                    continue
                payload = event[6:].strip()
                if payload == b"[DONE]":
                    done = True
                    break
                chunk = orjson.loads(payload)
                chunk["id"], chunk["created"], chunk["model"] = reply_id, created, model
                out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if out:
                yield b"".join(out)
        upstream.read()
        _idle.append(conn)
        yield b"data: [DONE]\n\n"

    return Response(frames(), content_type="text/event-stream")
