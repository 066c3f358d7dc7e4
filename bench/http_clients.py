#!/usr/bin/env python3
"""Which HTTP client should the ``openai`` backend stream with, under gevent?

The measurement behind the choice in ``chatcompat/agents/openai_upstream.py``. Every
candidate runs the same workload in its own process, with gevent's ``patch_all()``
applied first (as gunicorn's gevent worker does after fork): ``CONCURRENCY`` greenlets
share one pooled client and make ``REQUESTS`` streaming POSTs to a local upstream that
answers each with ``CHUNKS`` SSE frames (``chat.completion.chunk`` JSON, chunked
transfer encoding). The client reads each body incrementally, splits it into lines and
counts the ``data:`` lines, which is what the backend does before parsing JSON (the JSON
cost is the same whatever the client, so it is left out).

Two workloads:

* ``burst``: the upstream writes all frames at once (frames coalesce into large reads):
  the fixed cost of a request and of the pool;
* ``trickle``: the upstream waits ``--delay-ms`` between frames, so every frame is its
  own network read, as with a real model: the cost per chunk.

The row ``openai-agent`` is not a candidate: it is the finished backend
(``OpenAIAgent.run``: http.client, SSE decoding and JSON per chunk) on the same workload.

The upstream runs in a separate process (asyncio, stdlib only), so its CPU is not
counted. Reported per client: requests/s (wall clock), client CPU (user+sys of the
client process) per request and per chunk.

Usage (the candidates that are not installed are reported as failed; ``pip install
urllib3 httpx geventhttpclient``, and ``httpx2`` comes with the ``openai`` SDK)::

    python bench/http_clients.py                      # all candidates, both workloads
    python bench/http_clients.py --clients urllib3,httpx --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import typing as t

CANDIDATES = ("http.client", "urllib3", "httpx", "httpx2", "geventhttpclient", "openai-agent")
PATH = "/v1/chat/completions"
BODY = json.dumps(
    {
        "model": "bench",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hello " * 50}],
    }
).encode()
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer bench-key"}


# -- the upstream (its own process) -----------------------------------------------------


def _frames(chunks: int) -> list[bytes]:
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench",
    }
    frames = []
    for index in range(chunks):
        delta = {"content": f" word{index}"}
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        frames.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    frames.append(b"data: [DONE]\n\n")
    return [f"{len(f):x}\r\n".encode() + f + b"\r\n" for f in frames] + [b"0\r\n\r\n"]


def serve(port: int, chunks: int, delay_ms: float) -> None:
    """Run the upstream on 127.0.0.1:``port`` until killed."""
    frames = _frames(chunks)
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head_bytes = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head_bytes.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                writer.write(head)
                if delay_ms:
                    for frame in frames:
                        writer.write(frame)
                        await writer.drain()
                        await asyncio.sleep(delay_ms / 1000)
                else:
                    writer.write(b"".join(frames))
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- the clients (each in its own gevent-patched process) -------------------------------


class _Lines:
    """Incremental line splitter shared by every candidate (the backend's own cost)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.data_lines = 0

    def feed(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                self.data_lines += 1


def _make_client(name: str, port: int, concurrency: int) -> t.Callable[[], int]:
    """Return ``one_request() -> data lines read`` for client ``name`` (pooled)."""
    url = f"http://127.0.0.1:{port}{PATH}"
    if name == "http.client":
        import http.client
        import queue

        idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue()

        def one() -> int:
            try:
                conn = idle.get_nowait()
            except queue.Empty:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", PATH, body=BODY, headers=HEADERS)
            response = conn.getresponse()
            lines = _Lines()
            while data := response.read1(65536):
                lines.feed(data)
            idle.put(conn)
            return lines.data_lines

        return one
    if name == "urllib3":
        import urllib3

        pool = urllib3.HTTPConnectionPool(
            "127.0.0.1", port, maxsize=concurrency, block=True, retries=False
        )

        def one() -> int:
            response = pool.urlopen("POST", PATH, body=BODY, headers=HEADERS, preload_content=False)
            lines = _Lines()
            while data := response.read1(65536):
                lines.feed(data)
            response.release_conn()
            return lines.data_lines

        return one
    if name in ("httpx", "httpx2"):
        httpx = __import__(name)
        client = httpx.Client(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            timeout=30,
        )

        def one() -> int:
            lines = _Lines()
            with client.stream("POST", url, content=BODY, headers=HEADERS) as response:
                for data in response.iter_raw():
                    lines.feed(data)
            return lines.data_lines

        return one
    if name == "geventhttpclient":
        from geventhttpclient import HTTPClient

        gclient = HTTPClient("127.0.0.1", port, concurrency=concurrency, network_timeout=30)

        def one() -> int:
            response = gclient.post(PATH, body=BODY, headers=HEADERS)
            lines = _Lines()
            while data := response.read(65536):
                lines.feed(data)
            response.release()
            return lines.data_lines

        return one
    if name == "openai-agent":
        # Not a candidate: the backend as built (http.client + SSE + JSON per chunk).
        from chatcompat.agents.base import AgentRequest
        from chatcompat.agents.base import Cancellation
        from chatcompat.agents.base import TextDelta
        from chatcompat.agents.openai_upstream import OpenAIAgent
        from chatcompat.settings import AgentConfig

        options = {"baseUrl": f"http://127.0.0.1:{port}/v1", "model": "bench"}
        agent = OpenAIAgent(AgentConfig(id="bench", backend="openai", options=options))
        messages = [{"role": "user", "content": "hello " * 50}]

        def one() -> int:
            request = AgentRequest(agent_id="bench", session_key="k", messages=messages)
            events = agent.run(request, Cancellation())
            # [DONE] is not an event: count it like the other candidates' data lines.
            return 1 + sum(1 for event in events if isinstance(event, TextDelta))

        return one
    raise SystemExit(f"unknown client {name!r}")


def run_client(name: str, port: int, concurrency: int, requests: int) -> dict[str, t.Any]:
    """Run the workload with one client; gevent must already be patched."""
    from gevent.pool import Pool

    one = _make_client(name, port, concurrency)
    one()  # warm up: imports, first connection
    counts: list[int] = []
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    pool = Pool(concurrency)
    for _ in range(requests):
        pool.spawn(lambda: counts.append(one()))
    pool.join(raise_error=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return {"client": name, "wall": wall, "cpu": cpu, "requests": len(counts), "lines": sum(counts)}


# -- the driver -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the upstream did not start")


def _measure(args: argparse.Namespace, workload: str, delay_ms: float, requests: int) -> None:
    port = _free_port()
    upstream = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            str(port),
            "--chunks",
            str(args.chunks),
            "--delay-ms",
            str(delay_ms),
        ]
    )
    try:
        _wait_port(port)
        rows = []
        for name in args.clients.split(","):
            runs = []
            for _ in range(args.repeat):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--client",
                        name,
                        "--port",
                        str(port),
                        "--concurrency",
                        str(args.concurrency),
                        "--requests",
                        str(requests),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                    break
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            if runs:
                rows.append(_summary(name, runs, args.chunks))
    finally:
        upstream.kill()
        upstream.wait()
    title = (
        f"{workload}: {requests} requests x {args.chunks} chunks, concurrency "
        f"{args.concurrency}, delay {delay_ms:g} ms/chunk, median of {args.repeat}"
    )
    print(f"\n{title}")
    print(f"{'client':<18}{'req/s':>10}{'CPU ms/req':>12}{'CPU us/chunk':>14}{'lines ok':>10}")
    for row in rows:
        print(
            f"{row['client']:<18}{row['rps']:>10.0f}{row['cpu_ms_req']:>12.3f}"
            f"{row['cpu_us_chunk']:>14.1f}{row['ok']:>10}"
        )


def _summary(name: str, runs: list[dict[str, t.Any]], chunks: int) -> dict[str, t.Any]:
    expected = chunks + 1  # the frames and [DONE]
    return {
        "client": name,
        "rps": statistics.median(r["requests"] / r["wall"] for r in runs),
        "cpu_ms_req": statistics.median(1000 * r["cpu"] / r["requests"] for r in runs),
        "cpu_us_chunk": statistics.median(1e6 * r["cpu"] / r["lines"] for r in runs),
        "ok": "yes" if all(r["lines"] == r["requests"] * expected for r in runs) else "NO",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default=",".join(CANDIDATES))
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000, help="burst workload")
    parser.add_argument("--trickle-requests", type=int, default=500)
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--delay-ms", type=float, default=2.0, help="trickle workload")
    parser.add_argument("--repeat", type=int, default=3)
    # Internal: the upstream and the per-client child processes.
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.chunks, args.delay_ms)
        return
    if args.client:
        from gevent import monkey

        monkey.patch_all()
        result = run_client(args.client, args.port, args.concurrency, args.requests)
        print(json.dumps(result))
        return
    print(f"python {sys.version.split()[0]}, pid {os.getpid()}, {os.cpu_count()} CPUs")
    _measure(args, "burst", 0.0, args.requests)
    _measure(args, "trickle", args.delay_ms, args.trickle_requests)


if __name__ == "__main__":
    main()
