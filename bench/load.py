#!/usr/bin/env python3
"""Load client for any OpenAI-compatible ``/v1/chat/completions`` endpoint, or (with
``--api responses``) ``/v1/responses``.

Raw asyncio HTTP/1.1 with keep-alive (uvloop when installed), so the client costs
little CPU next to the server under test. Two modes:

* closed loop (default): ``--concurrency`` connections each send the next request as
  soon as the last one ended, for ``--duration`` seconds (or ``--requests`` in all).
  Prints one JSON object: ``{"rps", "lat_ms": {p50, p90, p99, max}, "ttfb_ms": {...},
  "chunks_per_s", "ok", "errors", "status_counts", "client_cpu_s", ...}``. ttfb is the
  time to the first SSE ``data:`` line (stream) or to the end of the headers (JSON).
* ``--hold N``: open N concurrent streams (the capacity run), at most ``--open-burst``
  connecting at once. Once every stream has its first chunk (or failed) it
  prints one line ``{"event": "all-open", ...}`` and keeps reading; at the end one JSON
  object with how many streams finished cleanly (``[DONE]``, no error frame) and why
  the others did not.

A response counts as an error unless it is 2xx and, for a stream, ends with
``data: [DONE]`` without an error frame.

``--api responses`` sends ``{"model", "input": PROMPT, "stream"}`` to ``/v1/responses``.
A JSON reply must be a ``response`` whose ``status`` is ``completed``. In a stream the
chunks are the ``response.output_text.delta`` events (ttfb: the first of them); it must
reach ``response.completed`` with no ``response.failed``, ``response.incomplete`` or
``error`` event before.

    python bench/load.py --url http://127.0.0.1:18789 --token T --model openclaw \\
        --stream --concurrency 64 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from urllib.parse import urlsplit


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000, 3)


class BadResponse(Exception):
    """A 2xx response that is not a complete answer (error frame, no [DONE])."""


# /v1/responses: the events that end a stream without a complete answer.
RESPONSES_FAILED = (b"response.failed", b"response.incomplete", b"error")


class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.r, self.w = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    def close(self) -> None:
        if self.w:
            self.w.close()
        self.r = self.w = None


async def one(
    conn: Conn, req: bytes, stream: bool, on_chunk=None, api: str = "chat"
) -> tuple[int, float, float, int]:
    """One request on ``conn``. Returns ``(status, ttfb_s, total_s, chunks)``: chunks are
    the ``data:`` lines (chat) or the ``response.output_text.delta`` events (responses)."""
    if conn.w is None:
        await conn.open()
    t0 = time.perf_counter()
    conn.w.write(req)
    r = conn.r
    line = await r.readline()
    if not line:
        raise ConnectionError("closed")
    status = int(line.split()[1])
    length = None
    chunked = False
    keep = True
    while True:
        h = await r.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"transfer-encoding":
            chunked = v.strip().lower() == b"chunked"
        elif k == b"connection":
            keep = v.strip().lower() != b"close"
    ttfb = None if stream else time.perf_counter() - t0
    chunks = 0
    buf = b""
    done = False
    failed = False

    def scan(data: bytes) -> None:
        nonlocal ttfb, chunks, buf, done, failed
        buf += data
        if b"\n" not in data:
            return
        *lines, buf = buf.split(b"\n")
        for ln in lines:
            if ln.startswith(b"data:"):
                if ttfb is None:
                    ttfb = time.perf_counter() - t0
                chunks += 1
                if ln.startswith(b"data: [DONE]"):
                    done = True
                elif ln.startswith(b'data: {"error"'):
                    failed = True
                if on_chunk is not None:
                    on_chunk(chunks)

    def scan_responses(data: bytes) -> None:
        # Named SSE events: the ``event:`` line says what the ``data:`` line after it is,
        # so the JSON is never parsed here.
        nonlocal ttfb, chunks, buf, done, failed
        buf += data
        if b"\n" not in data:
            return
        *lines, buf = buf.split(b"\n")
        for ln in lines:
            if not ln.startswith(b"event:"):
                continue
            name = ln[6:].strip()
            if name == b"response.output_text.delta":
                if ttfb is None:
                    ttfb = time.perf_counter() - t0
                chunks += 1
                if on_chunk is not None:
                    on_chunk(chunks)
            elif name == b"response.completed":
                done = not failed
            elif name in RESPONSES_FAILED:
                failed = True

    feed = scan if api == "chat" else scan_responses
    if length is not None:
        body = await r.readexactly(length) if length else b""
        if stream:
            feed(body)
        elif api == "responses":
            failed = 200 <= status < 300 and not completed_response(body)
        elif 200 <= status < 300 and not body.startswith(b'{"id"'):
            failed = True
    elif chunked:
        while True:
            size = int((await r.readline()).split(b";")[0], 16)
            if size == 0:
                await r.readline()
                break
            data = await r.readexactly(size + 2)
            if stream:
                feed(data[:-2])
    else:
        while True:
            data = await r.read(65536)
            if not data:
                break
            if stream:
                feed(data)
        keep = False
    if not keep:
        conn.close()
    total = time.perf_counter() - t0
    if 200 <= status < 300 and stream and (failed or not done):
        if api == "responses":
            raise BadResponse("failed event" if failed else "no response.completed")
        raise BadResponse("error frame" if failed else "no [DONE]")
    if failed:
        raise BadResponse("not a completed response" if api == "responses" else "not a completion")
    return status, (ttfb if ttfb is not None else total), total, chunks


def completed_response(body: bytes) -> bool:
    """A JSON reply of /v1/responses that is a whole answer: parsed, as the status of
    the response and of its output items are both called ``status``."""
    try:
        obj = json.loads(body)
    except ValueError:
        return False
    if not isinstance(obj, dict):
        return False
    return obj.get("object") == "response" and obj.get("status") == "completed"


def build_request(a: argparse.Namespace, host: str, port: int, path: str) -> bytes:
    if a.api == "responses":
        body: dict = {"model": a.model, "input": a.prompt, "stream": a.stream}
    else:
        body = {"model": a.model, "messages": [{"role": "user", "content": a.prompt}]}
        if a.stream:
            body["stream"] = True
    if a.user:
        body["user"] = a.user
    if a.extra_body:
        body.update(json.loads(a.extra_body))
    payload = json.dumps(body).encode()
    hdr = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
    ]
    if a.token:
        hdr.append(f"Authorization: Bearer {a.token}")
    hdr.extend(a.header or [])
    return ("\r\n".join(hdr) + "\r\n\r\n").encode() + payload


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def closed_loop(a: argparse.Namespace, host: str, port: int, req: bytes) -> dict:
    lat: list[float] = []
    ttfbs: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    chunks_total = 0
    remaining = a.requests
    deadline = time.perf_counter() + a.duration if a.duration else None

    async def worker() -> None:
        nonlocal remaining, errors, chunks_total
        conn = Conn(host, port)
        while True:
            if deadline is not None:
                if time.perf_counter() > deadline:
                    break
            else:
                if remaining <= 0:
                    break
                remaining -= 1
            try:
                st, tb, tt, ch = await asyncio.wait_for(
                    one(conn, req, a.stream, api=a.api), a.timeout
                )
                statuses[str(st)] = statuses.get(str(st), 0) + 1
                if 200 <= st < 300:
                    lat.append(tt)
                    ttfbs.append(tb)
                    chunks_total += ch
                else:
                    errors += 1
            except Exception as e:  # noqa: BLE001 - a load client counts every failure
                errors += 1
                key = type(e).__name__
                statuses[key] = statuses.get(key, 0) + 1
                conn.close()
        conn.close()

    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(a.concurrency)])
    el = time.perf_counter() - t0
    return {
        "url": a.url,
        "model": a.model,
        "stream": a.stream,
        "concurrency": a.concurrency,
        "requests": len(lat) + errors,
        "ok": len(lat),
        "errors": errors,
        "status_counts": statuses,
        "elapsed_s": round(el, 3),
        "rps": round(len(lat) / el, 1),
        "lat_ms": {p: pct(lat, int(p[1:])) for p in ("p50", "p90", "p99")} | {"max": pct(lat, 100)},
        "ttfb_ms": {p: pct(ttfbs, int(p[1:])) for p in ("p50", "p90", "p99")},
        "chunks": chunks_total,
        "chunks_per_s": round(chunks_total / el, 1),
        "client_cpu_s": round(cpu_seconds() - cpu0, 3),
    }


async def hold(a: argparse.Namespace, host: str, port: int, req: bytes) -> dict:
    """Open ``a.hold`` streams at once and keep them until they end."""
    n = a.hold
    opened = asyncio.Event()
    first_chunk: list[float] = []
    state = {"waiting": n}
    outcomes: dict[str, int] = {}
    gate = asyncio.Semaphore(a.open_burst)
    t0 = time.perf_counter()

    def settled() -> None:
        state["waiting"] -= 1
        if state["waiting"] == 0:
            opened.set()

    async def stream(i: int) -> None:
        conn = Conn(host, port)
        counted = False

        def on_chunk(count: int) -> None:
            nonlocal counted
            if count == 1 and not counted:  # the role chunk: the gateway holds the stream
                counted = True
                first_chunk.append(time.perf_counter() - t0)
                gate.release()
                settled()

        await gate.acquire()
        try:
            st, *_ = await asyncio.wait_for(one(conn, req, True, on_chunk, a.api), a.timeout)
            key = "ok" if 200 <= st < 300 else str(st)
        except Exception as e:  # noqa: BLE001 - a load client counts every failure
            key = type(e).__name__
        finally:
            conn.close()
        outcomes[key] = outcomes.get(key, 0) + 1
        if not counted:
            counted = True
            gate.release()
            settled()

    tasks = [asyncio.ensure_future(stream(i)) for i in range(n)]
    await opened.wait()
    ramp = time.perf_counter() - t0
    failed_early = sum(v for k, v in outcomes.items() if k != "ok")
    print(
        json.dumps(
            {
                "event": "all-open",
                "open": len(first_chunk),
                "failed": failed_early,
                "ramp_s": round(ramp, 3),
            }
        ),
        flush=True,
    )
    await asyncio.gather(*tasks)
    errors = sum(v for k, v in outcomes.items() if k != "ok")
    return {
        "event": "done",
        "streams": n,
        "ok": outcomes.get("ok", 0),
        "errors": errors,
        "outcomes": outcomes,
        "ramp_s": round(ramp, 3),
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }


async def run(a: argparse.Namespace) -> dict:
    u = urlsplit(a.url)
    host, port = u.hostname, u.port or 80
    endpoint = "/v1/responses" if a.api == "responses" else "/v1/chat/completions"
    path = (u.path.rstrip("/") or "") + endpoint
    if a.hold:
        a.stream = True  # held streams are streams
    req = build_request(a, host, port, path)
    if a.hold:
        return await hold(a, host, port, req)
    return await closed_loop(a, host, port, req)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="base URL without /v1")
    p.add_argument("--token")
    p.add_argument("--model", default="openclaw")
    p.add_argument("--prompt", default="hi")
    p.add_argument("--user")
    p.add_argument("--header", action="append", help="extra 'Name: value' header")
    p.add_argument(
        "--extra-body", help="JSON object merged into the request body, e.g. '{\"store\": false}'"
    )
    p.add_argument("--stream", action="store_true")
    p.add_argument(
        "--api",
        choices=("chat", "responses"),
        default="chat",
        help="/v1/chat/completions (chat, the default) or /v1/responses",
    )
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--duration", type=float, help="seconds; overrides --requests")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--hold", type=int, default=0, help="open this many streams (capacity)")
    p.add_argument("--open-burst", type=int, default=100, help="streams connecting at once")
    a = p.parse_args()
    if a.hold:
        import resource as r

        soft, hard = r.getrlimit(r.RLIMIT_NOFILE)
        want = a.hold + 256
        if soft < want:
            r.setrlimit(r.RLIMIT_NOFILE, (min(want, hard), hard))
    try:
        import uvloop  # optional: a cheaper event loop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(a))), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
