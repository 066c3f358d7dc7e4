#!/usr/bin/env python3
"""Capacity: how many concurrent slow streams one gevent worker holds, and at what
memory per stream.

For each size N (``--streams 1000,5000``): a fresh mock upstream and a fresh
``chatcompat serve`` with ONE gevent worker (``worker_connections`` sized for N) and an
``openai`` agent whose upstream sends one word per second (``--seconds`` words). After
a warm-up, ``bench/load.py --hold N`` opens N streams; once all have their first chunk
the worker's RSS is read again, and RSS per stream = (RSS with N streams open - RSS
before) / N. The streams then run to their end; an error is any stream that is not 200,
fails, or does not end with ``[DONE]``. The file-descriptor limit is raised here
(inherited by the mock, the gateway and the client): each stream holds a client and an
upstream socket in the worker.

    python bench/capacity.py [--streams 1000,5000] [--seconds 40] [--json-lines]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


def hold(streams: int, seconds: int, settle: float) -> dict:
    mock = harness.Mock()
    gateway = None
    try:
        gateway = harness.Gateway(
            mock.url,
            workers=1,
            worker_connections=max(4096, streams + 256),
            slow_model=f"mock-{seconds}-1000",
        )
        # Warm-up: imports, the upstream pool, first allocations (a fast agent, same path).
        harness.load(gateway.url, stream=True, concurrency=16, duration=1.0)
        harness.load(gateway.url, stream=False, concurrency=16, duration=0.5)
        time.sleep(0.5)
        (worker,) = gateway.worker_pids()
        rss_before = harness.rss_bytes([worker])
        cpu_before = harness.cpu_seconds([worker])
        client = subprocess.Popen(
            [
                harness.PYTHON,
                str(harness.BENCH / "load.py"),
                "--url",
                gateway.url,
                "--token",
                harness.TOKEN,
                "--model",
                "openclaw/slow",
                "--hold",
                str(streams),
                "--timeout",
                str(seconds * 4 + 120),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None
        opened = json.loads(client.stdout.readline())
        cpu_open = harness.cpu_seconds([worker]) - cpu_before
        time.sleep(settle)  # every stream has had a word or two by now
        rss_open = harness.rss_bytes([worker])
        lines = client.stdout.read().splitlines()
        client.wait()
        done = json.loads(lines[-1])
        return {
            "streams": streams,
            "open": opened["open"],
            "ok": done["ok"],
            "errors": done["errors"],
            "outcomes": done["outcomes"],
            "ramp_s": opened["ramp_s"],
            "rss_before_mib": round(rss_before / 2**20, 1),
            "rss_open_mib": round(rss_open / 2**20, 1),
            "rss_per_stream_kib": round((rss_open - rss_before) / streams / 1024, 1),
            "cpu_ms_per_stream": round(cpu_open * 1000 / streams, 3),
            "fd_limit": harness.raise_fd_limit(0),
        }
    finally:
        if gateway is not None:
            gateway.stop()
        mock.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", default="1000,5000")
    p.add_argument("--seconds", type=int, default=40, help="words per slow stream, 1 a second")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after all opened")
    p.add_argument("--json-lines", action="store_true", help="one JSON object per size")
    a = p.parse_args()
    sizes = [int(s) for s in a.streams.split(",") if s.strip()]
    limit = harness.raise_fd_limit(3 * max(sizes) + 1024)
    if not a.json_lines:
        print(f"file-descriptor limit {limit}", file=sys.stderr)
    for n in sizes:
        result = hold(n, a.seconds, a.settle)
        if a.json_lines:
            print(json.dumps(result), flush=True)
        else:
            print(
                f"{n:>6} streams on 1 worker: {result['open']} open, {result['errors']} errors"
                f" {result['outcomes']}, ramp {result['ramp_s']} s,"
                f" RSS {result['rss_before_mib']}"
                f" -> {result['rss_open_mib']} MiB = {result['rss_per_stream_kib']} KiB per"
                f" stream, {result['cpu_ms_per_stream']} ms CPU per stream opened",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
