#!/usr/bin/env python3
"""Two source trees of chatcompat side by side (A/B), measured in alternating rounds.

Both gateways (2 gevent workers each, the same config as ``bench/run.py``) run from
this venv against the same mock upstream; each side imports chatcompat from its own
tree (``PYTHONPATH``). The load goes to one side at a time, alternating round by
round, so both see the same machine; the result is the gateway's CPU per request
(user + system from /proc), which depends little on the other work on the machine,
with the median over the rounds.

    python bench/ab.py --a ../base --b . --load json:64 --load stream:64 --rounds 6
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


def gateway_from(tree: str, upstream: str, workers: int) -> harness.Gateway:
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.path.abspath(tree)
    try:
        return harness.Gateway(upstream, workers=workers)
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, help="the source tree of side A (before)")
    p.add_argument("--b", required=True, help="the source tree of side B (after)")
    p.add_argument(
        "--load",
        action="append",
        help="KIND:CONCURRENCY[:API], KIND json or stream, API chat or responses [json:64]",
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per round")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    loads = a.load or ["json:64"]
    mock = harness.Mock()
    sides = {}
    try:
        sides["A"] = gateway_from(a.a, mock.url, a.workers)
        sides["B"] = gateway_from(a.b, mock.url, a.workers)
        for spec in loads:
            kind, concurrency, *rest = spec.split(":")
            api = rest[0] if rest else "chat"
            stream = kind == "stream"
            cpu: dict[str, list[float]] = {"A": [], "B": []}
            rps: dict[str, list[float]] = {"A": [], "B": []}
            p50: dict[str, list[float]] = {"A": [], "B": []}
            for gw in sides.values():  # warm-up
                harness.load(
                    gw.url, stream=stream, concurrency=int(concurrency), duration=1, api=api
                )
            for round_ in range(a.rounds):
                order = ("A", "B") if round_ % 2 == 0 else ("B", "A")
                for name in order:
                    gw = sides[name]
                    r = harness.measured_load(
                        gw.url,
                        gw.pids(),
                        stream=stream,
                        concurrency=int(concurrency),
                        duration=a.duration,
                        api=api,
                    )
                    spent = r["server_cpu_s"]
                    if r["errors"]:
                        print(f"  {name} {spec}: {r['errors']} errors {r['status_counts']}")
                    cpu[name].append(spent * 1000 / max(r["ok"], 1))
                    rps[name].append(r["rps"])
                    p50[name].append(r["ttfb_ms" if stream else "lat_ms"]["p50"])
            ma, mb = statistics.median(cpu["A"]), statistics.median(cpu["B"])
            print(
                f"{spec:<22} CPU ms/request A {ma:.3f}  B {mb:.3f}  ({(mb / ma - 1) * 100:+.0f}%)"
                f"   rps A {statistics.median(rps['A']):,.0f}  B {statistics.median(rps['B']):,.0f}"
                f"   p50 ms A {statistics.median(p50['A']):.2f}"
                f"  B {statistics.median(p50['B']):.2f}"
                f"   load {harness.loadavg():.1f}",
                flush=True,
            )
            print(f"  rounds A {[round(x, 3) for x in cpu['A']]}", flush=True)
            print(f"  rounds B {[round(x, 3) for x in cpu['B']]}", flush=True)
    finally:
        for gw in sides.values():
            gw.stop()
        mock.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
