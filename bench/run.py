#!/usr/bin/env python3
"""chatcompat's benchmark: the same load directly against a mock upstream and through
``chatcompat serve``, on the same machine, in one go; prints one table.

1. Starts ``bench/mock_upstream.py`` (20 words per reply, no delay).
2. Runs ``bench/load.py`` against it directly: JSON at concurrency 1, 8, 64, then
   streams at 1, 8, 64 (each ``--duration`` seconds after a short warm-up).
3. Starts ``chatcompat serve`` with 2 gevent workers, token auth (rate limit off), a
   SQLite store in a temporary directory and an ``openai`` agent pointing at the mock,
   and runs the same load through it.
4. Unless ``--no-capacity``: ``bench/capacity.py`` (slow streams held by one worker).
5. Prints one table: requests/s, latency p50/p99 (JSON), time to first chunk p50/p99
   and chunks/s (streams), CPU per request (and per chunk) of the gateway's processes
   (gunicorn master + workers, from /proc), RSS; each beside the direct run, with the
   ratio, the latency added, and the targets of the performance issue.
6. Unless ``--no-responses``: the same load on ``/v1/responses`` of the same gateway
   (JSON and streams at concurrency 1 and 64, each run right after its chat row), and a
   second table with the ratio responses / chat (issue 14: within 15 %).

CPU "direct" is the mock upstream's own CPU per request, for scale. The mock and the
load client run on the same 2 cores as the gateway, so the requests/s through the
gateway are what is left for it; CPU per request does not depend on that.

    bench/run.sh                     # or: python bench/run.py [--duration 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

SCENARIOS = [("JSON", 1), ("JSON", 8), ("JSON", 64), ("stream", 1), ("stream", 8), ("stream", 64)]

# (scenario, metric) → (kind, bound): "min" needs value >= bound, "max" value <= bound,
# "added" needs (chatcompat - direct) <= bound. Issue 14's targets.
TARGETS = {
    (("JSON", 64), "requests/s"): ("min", 2000),
    (("JSON", 64), "CPU ms/request"): ("max", 0.6),
    (("stream", 64), "CPU ms/request"): ("max", 0.8),
    (("JSON", 1), "latency p50 ms"): ("added", 0.6),
    (("stream", 1), "first chunk p50 ms"): ("added", 0.6),
}
# Issue 14's four targets, each made of the rows above (the fourth: the responses table).
FOUR_TARGETS = (
    ("JSON c=64: <= 0.6 ms gateway CPU per request, >= 2,000 requests/s",
     [(("JSON", 64), "CPU ms/request"), (("JSON", 64), "requests/s")]),
    ("streams c=64: <= 0.8 ms gateway CPU per 22-chunk stream",
     [(("stream", 64), "CPU ms/request")]),
    ("c=1: <= 0.6 ms added to p50 latency and to time to first chunk",
     [(("JSON", 1), "latency p50 ms"), (("stream", 1), "first chunk p50 ms")]),
)  # fmt: skip

# /v1/responses on the same gateway: these rows, each measured right after the chat row
# of the same load so that both see the same machine.
RESPONSES_SCENARIOS = [("JSON", 1), ("JSON", 64), ("stream", 1), ("stream", 64)]
# Issue 14: /v1/responses within 15 % of chat completions on the same load.
RESPONSES_RATIO_MAX = 1.15
RESPONSES_RATIO_METRICS = ("latency p50 ms", "stream p50 ms", "CPU ms/request")


def measure(
    target_url: str,
    pids_of,
    scenario,
    duration: float,
    warmup: float,
    model: str,
    api: str = "chat",
) -> dict:
    kind, concurrency = scenario
    stream = kind == "stream"
    if warmup:
        harness.load(
            target_url,
            stream=stream,
            concurrency=concurrency,
            duration=warmup,
            model=model,
            api=api,
        )
    return harness.measured_load(
        target_url,
        pids_of(),
        stream=stream,
        concurrency=concurrency,
        duration=duration,
        model=model,
        api=api,
    )


def progress(label: str, scenario, r: dict) -> None:
    line = (
        f"  {label}{scenario[0]:<6} c={scenario[1]:<3} {r['rps']:>8.1f} req/s"
        f"  p50 {r['lat_ms']['p50']} ms  errors {r['errors']}"
    )
    if r["errors"]:  # say what went wrong, not only how often
        line += f"  {r['status_counts']}"
    print(line, file=sys.stderr, flush=True)


def run_all(
    target_url: str,
    pids_of,
    duration: float,
    warmup: float,
    model: str,
    responses: list | tuple = (),
) -> tuple[dict, dict]:
    """The chat rows; after each one whose load is in ``responses``, the same load on
    /v1/responses. Returns ``(chat, responses)``, both keyed by scenario."""
    out, resp = {}, {}
    for scenario in SCENARIOS:
        out[scenario] = measure(target_url, pids_of, scenario, duration, warmup, model)
        progress("", scenario, out[scenario])
        if scenario in responses:
            resp[scenario] = measure(
                target_url, pids_of, scenario, duration, warmup, model, api="responses"
            )
            progress("responses ", scenario, resp[scenario])
    return out, resp


def rows_of(scenario, r: dict) -> dict[str, float | None]:
    ok = max(r["ok"], 1)
    row: dict[str, float | None] = {"requests/s": r["rps"]}
    if scenario[0] == "JSON":
        row["latency p50 ms"] = r["lat_ms"]["p50"]
        row["latency p99 ms"] = r["lat_ms"]["p99"]
    else:
        row["first chunk p50 ms"] = r["ttfb_ms"]["p50"]
        row["first chunk p99 ms"] = r["ttfb_ms"]["p99"]
        row["chunks/s"] = r["chunks_per_s"]
    row["CPU ms/request"] = r["server_cpu_s"] * 1000 / ok
    if scenario[0] == "stream":
        row["CPU µs/chunk"] = r["server_cpu_s"] * 1e6 / max(r["chunks"], 1)
    row["errors"] = r["errors"]
    return row


def responses_rows_of(scenario, r: dict) -> dict[str, float | None]:
    """The metrics that mean the same on both endpoints. A stream's "first chunk" is the
    role chunk on chat and the first ``response.output_text.delta`` on responses; chunk
    counts differ (24 ``data:`` frames against 21 deltas among 29 events), so there is
    no per-chunk row."""
    ok = max(r["ok"], 1)
    row: dict[str, float | None] = {"requests/s": r["rps"]}
    if scenario[0] == "JSON":
        row["latency p50 ms"] = r["lat_ms"]["p50"]
        row["latency p99 ms"] = r["lat_ms"]["p99"]
    else:
        row["first chunk p50 ms"] = r["ttfb_ms"]["p50"]
        row["stream p50 ms"] = r["lat_ms"]["p50"]
        row["stream p99 ms"] = r["lat_ms"]["p99"]
    row["CPU ms/request"] = r["server_cpu_s"] * 1000 / ok
    row["errors"] = r["errors"]
    return row


def responses_table(chat: dict, responses: dict) -> str:
    lines = []
    head = (
        f"{'load':<12} {'metric':<20} {'chat':>10} {'responses':>11} {'ratio':>7}"
        f"   {'target':<10} {'met':<3}"
    )
    lines += [head, "-" * len(head)]
    for scenario in RESPONSES_SCENARIOS:
        if scenario not in responses:
            continue
        c_rows = responses_rows_of(scenario, chat[scenario])
        r_rows = responses_rows_of(scenario, responses[scenario])
        name = f"{scenario[0]} c={scenario[1]}"
        for metric, r in r_rows.items():
            c = c_rows.get(metric)
            ratio = r / c if c and r is not None and metric != "errors" else None
            target, met = "", ""
            if metric in RESPONSES_RATIO_METRICS and ratio is not None:
                target = f"<= {RESPONSES_RATIO_MAX:g}x"
                met = "yes" if ratio <= RESPONSES_RATIO_MAX else "NO"
            lines.append(
                f"{name:<12} {metric:<20} {fmt(c):>10} {fmt(r):>11}"
                f" {'' if ratio is None else f'{ratio:.2f}':>7}   {target:<10} {met:<3}"
            )
            name = ""
    return "\n".join(lines)


def four_targets(direct: dict, gateway: dict, chat: dict, responses: dict) -> str:
    """Issue 14's four targets, each met or not in this run."""
    lines = ["Issue 14's targets in this run:"]
    for label, cells in FOUR_TARGETS:
        verdicts = []
        for scenario, metric in cells:
            kind, bound = TARGETS[(scenario, metric)]
            d = rows_of(scenario, direct[scenario]).get(metric)
            g = rows_of(scenario, gateway[scenario]).get(metric)
            verdicts.append(verdict(kind, bound, d, g)[1] == "yes")
        lines.append(f"  {'met    ' if all(verdicts) else 'NOT met'}  {label}")
    ratios = []
    for scenario in RESPONSES_SCENARIOS:
        if scenario in responses:
            c_rows = responses_rows_of(scenario, chat[scenario])
            r_rows = responses_rows_of(scenario, responses[scenario])
            for metric in RESPONSES_RATIO_METRICS:
                c, r = c_rows.get(metric), r_rows.get(metric)
                if c and r is not None:
                    ratios.append(r / c)
    label = "/v1/responses within 15 % of chat completions on the same load"
    if ratios:
        met = all(ratio <= RESPONSES_RATIO_MAX for ratio in ratios)
        lines.append(f"  {'met    ' if met else 'NOT met'}  {label} (worst {max(ratios):.2f}x)")
    else:
        lines.append(f"  not measured  {label} (--no-responses)")
    return "\n".join(lines)


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def verdict(kind: str, bound: float, direct: float | None, value: float | None) -> tuple[str, str]:
    if value is None:
        return "", ""
    if kind == "min":
        return f">= {bound:,}", "yes" if value >= bound else "NO"
    if kind == "max":
        return f"<= {bound:g}", "yes" if value <= bound else "NO"
    added = value - (direct or 0)
    return f"+{bound:g} ms", "yes" if added <= bound else "NO"


def table(direct: dict, gateway: dict, rss: dict, capacity: list[dict] | None) -> str:
    lines = []
    head = (
        f"{'load':<12} {'metric':<20} {'direct':>10} {'chatcompat':>11} {'ratio':>7}"
        f" {'added':>8}   {'target':<10} {'met':<3}"
    )
    lines += [head, "-" * len(head)]
    for scenario in SCENARIOS:
        d_rows = rows_of(scenario, direct[scenario])
        g_rows = rows_of(scenario, gateway[scenario])
        name = f"{scenario[0]} c={scenario[1]}"
        for metric, g in g_rows.items():
            d = d_rows.get(metric)
            ratio = f"{g / d:.2f}" if d and g is not None and metric != "errors" else ""
            latency = "ms" in metric and "CPU" not in metric
            added = f"{g - d:+.2f}" if latency and d is not None else ""
            target, met = "", ""
            if (scenario, metric) in TARGETS:
                kind, bound = TARGETS[(scenario, metric)]
                target, met = verdict(kind, bound, d, g)
            lines.append(
                f"{name:<12} {metric:<20} {fmt(d):>10} {fmt(g):>11} {ratio:>7}"
                f" {added:>8}   {target:<10} {met:<3}"
            )
            name = ""
    mib = 1024 * 1024
    lines.append(
        f"{'memory':<12} {'RSS MiB (all procs)':<20} {rss['direct'] / mib:>10.1f}"
        f" {rss['gateway'] / mib:>11.1f} {rss['gateway'] / rss['direct']:>7.2f}"
    )
    lines.append(f"{'':<12} {'RSS MiB per worker':<20} {'':>10} {rss['worker'] / mib:>11.1f}")
    for c in capacity or []:
        name = f"hold {c['streams']:,}"
        lines.append(
            f"{name:<12} {'streams open/errors':<20} {'':>10}"
            f" {c['open']:>5,}/{c['errors']:<5,} {'':>7} {'':>8}   {'0 errors':<10}"
            f" {'yes' if c['errors'] == 0 and c['open'] == c['streams'] else 'NO'}"
        )
        lines.append(
            f"{'  1 worker':<12} {'RSS KiB per stream':<20} {'':>10}"
            f" {c['rss_per_stream_kib']:>11.1f} {'':>7} {'':>8}   {'<= 64':<10}"
            f" {'yes' if c['rss_per_stream_kib'] <= 64 else 'NO'}"
        )
        lines.append(
            f"{'':<12} {'CPU ms/stream opened':<20} {'':>10} {c['cpu_ms_per_stream']:>11.2f}"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measured row [5]")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per row [1]")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-capacity", action="store_true", help="skip the slow-stream capacity run")
    p.add_argument("--streams", default="1000,5000", help="capacity run sizes [1000,5000]")
    p.add_argument(
        "--responses",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure /v1/responses next to chat completions [on]",
    )
    p.add_argument("--json", help="also write every raw result to this file")
    a = p.parse_args()

    started = time.time()
    print(f"load average {harness.loadavg():.2f} (quiet below 0.5)", file=sys.stderr)
    mock = harness.Mock()
    try:
        print("direct (mock upstream):", file=sys.stderr)
        direct, _ = run_all(mock.url, mock.pids, a.duration, a.warmup, model="mock")
        rss_direct = harness.rss_bytes(mock.pids())
        gateway = harness.Gateway(mock.url, workers=a.workers)
        try:
            print(f"through chatcompat serve ({a.workers} gevent workers):", file=sys.stderr)
            through, responses = run_all(
                gateway.url,
                gateway.pids,
                a.duration,
                a.warmup,
                model="openclaw",
                responses=RESPONSES_SCENARIOS if a.responses else (),
            )
            workers = gateway.worker_pids()
            rss = {
                "direct": rss_direct,
                "gateway": harness.rss_bytes(gateway.pids()),
                "worker": harness.rss_bytes(workers) / max(len(workers), 1),
            }
        finally:
            gateway.stop()
    finally:
        mock.stop()

    capacity = None
    if not a.no_capacity:
        out = subprocess.run(
            [
                harness.PYTHON,
                os.path.join(harness.BENCH, "capacity.py"),
                "--streams",
                a.streams,
                "--json-lines",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        capacity = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]

    print()
    print(
        f"chatcompat {a.workers} gevent workers, openai backend -> mock upstream"
        " (20 words a reply);"
        f" load client on the same machine; {a.duration:g} s per row"
    )
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" load average at the end {harness.loadavg():.2f}, took {time.time() - started:.0f} s"
    )
    print()
    print(table(direct, through, rss, capacity))
    if responses:
        print()
        print(
            "/v1/responses next to chat completions: the same gateway, each load run right"
            " after the chat one; target: issue 14"
        )
        print()
        print(responses_table(through, responses))
    print()
    print(four_targets(direct, through, through, responses))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {
                    "direct": {f"{k[0]} c={k[1]}": v for k, v in direct.items()},
                    "chatcompat": {f"{k[0]} c={k[1]}": v for k, v in through.items()},
                    "responses": {f"{k[0]} c={k[1]}": v for k, v in responses.items()},
                    "rss": rss,
                    "capacity": capacity,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
