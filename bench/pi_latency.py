#!/usr/bin/env python3
"""The ``pi`` backend: first-token latency on a warm process vs a cold start, memory
per process, and what the cut of streamed lines saves on long replies.

Against ``bench/mock_upstream.py`` (20-word replies, no delay), with the real pi
(``.tools/pi`` of the checkout, else ``pi`` on PATH):

1. in process, the agent alone: ``--cold`` runs that each start a fresh agent (spawn,
   readiness, session switch, prompt, first text), then ``--warm`` runs on one warm
   process; the RSS of a process idle after its start and after the warm runs;
2. one 2000-word reply on the warm process: wall time, this process's CPU (pi's
   reader included), pi's output (it grows with the square of the reply) and what
   parsing those lines costs, whole vs cut before their snapshots;
3. through ``chatcompat serve`` (one gevent worker, SSE over HTTP): the first request
   (cold) and ``--warm`` more, time to the first content chunk.

    python bench/pi_latency.py [--cold 5] [--warm 50] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import harness  # noqa: E402

from chatcompat.agents.base import AgentRequest  # noqa: E402
from chatcompat.agents.base import Cancellation  # noqa: E402
from chatcompat.agents.base import TextDelta  # noqa: E402
from chatcompat.agents.pi import process as pi_process  # noqa: E402
from chatcompat.agents.pi.agent import LOCAL_PI  # noqa: E402
from chatcompat.agents.pi.agent import PiAgent  # noqa: E402
from chatcompat.agents.pi.process import parse_line  # noqa: E402
from chatcompat.settings import AgentConfig  # noqa: E402


def pi_command() -> list[str]:
    if os.access(LOCAL_PI, os.X_OK):
        return [str(LOCAL_PI)]
    if shutil.which("pi"):
        return ["pi"]
    raise SystemExit("pi is not installed: see README, 'The pi backend'")


def make_agent(upstream: str, model: str = "mock-20-0") -> PiAgent:
    options = {"command": pi_command(), "baseUrl": f"{upstream}/v1", "model": model}
    return PiAgent(AgentConfig(id="bench", backend="pi", options=options, system_prompt="Hi."))


def one_run(agent: PiAgent, text: str) -> tuple[float, float]:
    """Seconds to the first text and to the end of one run."""
    request = AgentRequest("bench", "k", [{"role": "user", "content": text}])
    began = time.perf_counter()
    first = None
    for event in agent.run(request, Cancellation()):
        if first is None and isinstance(event, TextDelta):
            first = time.perf_counter() - began
    return first or 0.0, time.perf_counter() - began


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) / 1024
    return values


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 1),
        "min_ms": round(ordered[0] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def in_process(upstream: str, cold: int, warm: int) -> dict:
    cold_first, ready, idle_rss = [], [], []
    for _ in range(cold):
        agent = make_agent(upstream)
        try:
            first, _ = one_run(agent, "hello cold")
            process = agent._pool._idle[0]
            ready.append(process.ready_seconds)
            idle_rss.append(memory(process.pid)["VmRSS"])
            cold_first.append(first)
        finally:
            agent.close()
        time.sleep(0.5)  # let the CPU settle: a start costs about a second of it
    agent = make_agent(upstream)
    try:
        one_run(agent, "warm-up")
        runs = [one_run(agent, f"hello warm {index}") for index in range(warm)]
        after = memory(agent._pool._idle[0].pid)
    finally:
        agent.close()
    return {
        "cold_first_text": summary(cold_first),
        "cold_ready": summary(ready),
        "warm_first_text": summary([first for first, _ in runs]),
        "warm_whole_run": summary([whole for _, whole in runs]),
        "idle_rss_mib": round(statistics.median(idle_rss), 1),
        "rss_after_warm_runs_mib": round(after["VmRSS"], 1),
        "peak_rss_mib": round(after["VmHWM"], 1),
    }


def long_reply(upstream: str, words: int = 2000) -> dict:
    captured: list[bytes] = []

    def capturing(line: bytes) -> dict | None:
        captured.append(line)
        return parse_line(line)

    agent = make_agent(upstream, model=f"mock-{words}-0")
    try:
        one_run(agent, "warm-up")
        pi_process.parse_line = capturing  # the reader looks it up for every line
        cpu = time.process_time()
        first, whole = one_run(agent, "a long one")
        cpu = time.process_time() - cpu
        pi_process.parse_line = parse_line
        peak = memory(agent._pool._idle[0].pid)["VmHWM"]
    finally:
        pi_process.parse_line = parse_line
        agent.close()
    # The same lines again, parsed whole and cut before their snapshots.
    began = time.perf_counter()
    for line in captured:
        json.loads(line)
    whole_parse = time.perf_counter() - began
    began = time.perf_counter()
    for line in captured:
        parse_line(line)
    cut_parse = time.perf_counter() - began
    return {
        "words": words,
        "first_text_ms": round(first * 1000, 1),
        "whole_run_ms": round(whole * 1000, 1),
        "gateway_cpu_ms": round(cpu * 1000, 1),
        "pi_peak_rss_mib": round(peak, 1),
        "stdout_lines": len(captured),
        "stdout_mb": round(sum(map(len, captured)) / 1e6, 1),
        "longest_line_kb": round(max(map(len, captured)) / 1e3, 1),
        "parse_whole_lines_ms": round(whole_parse * 1000, 1),
        "parse_cut_lines_ms": round(cut_parse * 1000, 1),
    }


def first_chunk(port: int, text: str) -> float:
    """Seconds from sending a streaming request to its first content chunk."""
    body = json.dumps({"model": "openclaw", "stream": True,
                       "messages": [{"role": "user", "content": text}]})  # fmt: skip
    headers = {"Authorization": f"Bearer {harness.TOKEN}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        began = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, headers)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        first = None
        for line in response:
            if first is None and line.startswith(b"data: {") and b'"content":"' in line:
                if b'"content":""' not in line:
                    first = time.perf_counter() - began
        return first or 0.0
    finally:
        conn.close()


def over_http(upstream: str, warm: int) -> dict:
    directory = pathlib.Path(tempfile.mkdtemp(prefix="chatcompat-pi-bench-"))
    agent = {"id": "pi", "backend": "pi", "command": pi_command(), "poolSize": 1,
             "baseUrl": f"{upstream}/v1", "model": "mock-20-0"}  # fmt: skip
    config = {
        "gateway": {
            "auth": {"mode": "token", "token": harness.TOKEN, "rateLimit": False},
            "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
        },
        "agents": {"list": [agent]},
        "sessions": {"store": f"sqlite:///{directory}/sessions.db"},
    }
    (directory / "chatcompat.json5").write_text(json.dumps(config))
    port = harness.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATCOMPAT_", "GUNICORN_"))}
    env["CHATCOMPAT_STATE_DIR"] = str(directory)
    with open(directory / "gateway.log", "wb") as log:
        serve = ["serve", "--config", str(directory / "chatcompat.json5"),
                 "--bind", f"127.0.0.1:{port}", "--workers", "1"]  # fmt: skip
        proc = subprocess.Popen(
            [*harness.chatcompat_command(), *serve],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        harness.wait_http(port, "/readyz", timeout=60, proc=proc)
        cold = first_chunk(port, "hello cold")
        samples = [first_chunk(port, f"hello warm {index}") for index in range(warm)]
    finally:
        harness.stop(proc, group=True)
        shutil.rmtree(directory, ignore_errors=True)
    return {"cold_first_chunk_ms": round(cold * 1000, 1), "warm_first_chunk": summary(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=5, help="cold starts to time [5]")
    parser.add_argument("--warm", type=int, default=50, help="warm runs to time [50]")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of text")
    args = parser.parse_args()
    mock = harness.Mock()
    try:
        result = {
            "cpus": os.cpu_count(),
            "agent": in_process(mock.url, args.cold, args.warm),
            "long_reply": long_reply(mock.url),
            "http_gevent_worker": over_http(mock.url, args.warm),
        }
    finally:
        mock.stop()
    if args.json:
        print(json.dumps(result))
        return
    for section, values in result.items():
        print(f"{section}: {json.dumps(values, indent=2) if isinstance(values, dict) else values}")


if __name__ == "__main__":
    main()
