#!/usr/bin/env python3
"""The direct mock, the stack's ceiling and chatcompat, side by side in one run.

The ceiling is ``bench/bare_relay.py``: a bare Flask relay under gunicorn with the
same gevent workers, the work every relay on this stack must do and nothing more.
What chatcompat costs above it is what its features cost (sessions and their store,
validation, the request log, metrics, disconnect handling); what the ceiling costs
above the direct mock is the stack's own (gunicorn, Flask, an HTTP client). The
three targets answer the same loads, interleaved round by round so that all see
the same machine; each figure is the median over the rounds.

    .venv/bin/python bench/ceiling.py [--rounds 4] [--duration 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import typing as t

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

LOADS = [("JSON", 1), ("JSON", 64), ("stream", 1), ("stream", 64)]


class BareRelay:
    """``bench/bare_relay.py`` under gunicorn, 2 gevent workers (as ``chatcompat serve``)."""

    def __init__(self, upstream: str, workers: int) -> None:
        self.port = harness.free_port()
        self.dir = tempfile.mkdtemp(prefix="bare-relay-")  # no gunicorn.conf.py here
        env = {
            **os.environ,
            "UPSTREAM": upstream.split("//", 1)[1],
            "TOKEN": harness.TOKEN,
            "PYTHONPATH": str(harness.BENCH),
        }
        self.proc = subprocess.Popen(
            [harness.PYTHON, "-m", "gunicorn", "--worker-class", "gevent"]
            + ["--workers", str(workers), "--worker-connections", "4096"]
            + ["--keep-alive", "15", "--backlog", "2048", "--bind", f"127.0.0.1:{self.port}"]
            + ["bare_relay:app"],
            env=env,
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            harness.wait_http(self.port, "/healthz", proc=self.proc)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return harness.tree(self.proc.pid)

    def stop(self) -> None:
        harness.stop(self.proc, group=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per round and target")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", help="also write every raw result to this file")
    a = p.parse_args()
    mock = harness.Mock()
    targets: dict[str, t.Any] = {}
    try:
        targets["direct"] = (mock.url, mock.pids)
        bare = BareRelay(mock.url, a.workers)
        targets["ceiling"] = (bare.url, bare.pids)
        gateway = harness.Gateway(mock.url, workers=a.workers)
        targets["chatcompat"] = (gateway.url, gateway.pids)
        raw: dict[str, dict[str, list[dict]]] = {}
        for kind, concurrency in LOADS:
            label = f"{kind} c={concurrency}"
            raw[label] = {name: [] for name in targets}
            for url, _ in targets.values():  # warm-up
                harness.load(url, stream=kind == "stream", concurrency=concurrency, duration=1)
            for round_ in range(a.rounds):
                names = list(targets) if round_ % 2 == 0 else list(reversed(targets))
                for name in names:
                    url, pids_of = targets[name]
                    r = harness.measured_load(
                        url,
                        pids_of(),
                        stream=kind == "stream",
                        concurrency=concurrency,
                        duration=a.duration,
                    )
                    raw[label][name].append(r)
            print(row(label, raw[label]), flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(raw, f, indent=1)
    finally:
        for name in ("chatcompat", "ceiling"):
            if name in targets:
                (gateway if name == "chatcompat" else bare).stop()
        mock.stop()
    return 0


def row(label: str, results: dict[str, list[dict]]) -> str:
    """One line per load: requests/s, p50 (latency or first chunk) and CPU ms/request
    of each target, and chatcompat's CPU over the ceiling's."""

    def med(name: str, pick: t.Callable[[dict], float]) -> float:
        return statistics.median(pick(r) for r in results[name])

    first = "ttfb_ms" if label.startswith("stream") else "lat_ms"
    cells = []
    for name in results:
        rps = med(name, lambda r: r["rps"])
        p50 = med(name, lambda r: r[first]["p50"])
        cpu = med(name, lambda r: 1000 * r["server_cpu_s"] / max(r["ok"], 1))
        errors = sum(r["errors"] for r in results[name])
        cells.append(f"{name} {rps:>7,.0f} req/s p50 {p50:6.2f} ms CPU {cpu:5.3f} ms err {errors}")
    cpu_of = {n: med(n, lambda r: 1000 * r["server_cpu_s"] / max(r["ok"], 1)) for n in results}
    ratio = cpu_of["chatcompat"] / cpu_of["ceiling"]
    return f"{label:<12} | " + " | ".join(cells) + f" | chatcompat/ceiling CPU {ratio:.2f}"


if __name__ == "__main__":
    sys.exit(main())
