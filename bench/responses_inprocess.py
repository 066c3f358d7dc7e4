#!/usr/bin/env python3
"""``/v1/responses`` against chat completions in one process: the views' own CPU per
request, without the network, gunicorn, the mock or the load client.

The Flask test client posts to an app with the ``echo`` agent (a 21-word prompt, so
21 text deltas, as the mock's reply in ``bench/run.py``) and a SQLite store in a
temporary directory. Each variant runs ``--requests`` times per round, alternating for
``--rounds`` rounds; the median of the rounds is printed (process CPU time, all
threads). On a loaded machine this is steadier than ``bench/run.py``'s rows, as the
variants share every round's conditions.

    .venv/bin/python bench/responses_inprocess.py [--requests 100] [--rounds 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import typing as t

from chatcompat import create_app
from chatcompat.settings import AgentConfig
from chatcompat.settings import RateLimit
from chatcompat.settings import Settings

TOKEN = "bench-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROMPT = "hi " + " ".join(f"w{i}" for i in range(1, 21))


def variants(client: t.Any) -> dict[str, t.Callable[[], t.Any]]:
    def post(path: str, body: dict) -> t.Callable[[], t.Any]:
        def send() -> t.Any:
            response = client.post(path, json=body, headers=AUTH)
            response.get_data()  # a stream runs while its body is read
            return response

        return send

    chat = {"model": "openclaw", "messages": [{"role": "user", "content": PROMPT}]}
    responses = {"model": "openclaw", "input": PROMPT}
    return {
        "JSON chat": post("/v1/chat/completions", chat),
        "JSON responses": post("/v1/responses", {**responses, "stream": False}),
        "JSON responses store:false": post(
            "/v1/responses", {**responses, "stream": False, "store": False}
        ),
        "stream chat": post("/v1/chat/completions", {**chat, "stream": True}),
        "stream responses": post("/v1/responses", {**responses, "stream": True}),
        "stream responses store:false": post(
            "/v1/responses", {**responses, "stream": True, "store": False}
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=100, help="per variant and round [100]")
    p.add_argument("--rounds", type=int, default=15)
    a = p.parse_args()
    state = tempfile.mkdtemp(prefix="chatcompat-bench-")
    app = create_app(
        Settings(
            state_dir=state,
            auth_secret=TOKEN,
            chat_completions_enabled=True,
            responses_enabled=True,
            session_store=f"sqlite:///{state}/sessions.db",
            rate_limit=RateLimit(max_attempts=3, exempt_loopback=False),
            agents=(AgentConfig(id="main", backend="echo", default=True),),
            default_agent_id="main",
        )
    )
    try:
        runs = variants(app.test_client())
        for send in runs.values():
            for _ in range(50):  # warm-up; and every variant must answer
                response = send()
                if response.status_code != 200:
                    raise SystemExit(f"{response.status_code}: {response.get_data()[:300]!r}")
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(a.rounds):
            for name, send in runs.items():
                t0 = time.process_time()
                for _ in range(a.requests):
                    send()
                cpu[name].append((time.process_time() - t0) / a.requests * 1e6)
    finally:
        app.extensions["chatcompat"].close()
        shutil.rmtree(state, ignore_errors=True)
    for kind in ("JSON", "stream"):
        chat = statistics.median(cpu[f"{kind} chat"])
        for name in (f"{kind} chat", f"{kind} responses", f"{kind} responses store:false"):
            median = statistics.median(cpu[name])
            rounds = " ".join(f"{x:.0f}" for x in cpu[name])
            print(f"{name:<30} {median:6.0f} µs CPU/request  x{median / chat:.2f}  ({rounds})")


if __name__ == "__main__":
    main()
