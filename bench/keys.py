#!/usr/bin/env python3
"""The cost of named API keys per request (SPEC 16): key lookup, scope, the request
and token windows and the run slot, against the single operator token, side by side
on one server.

One ``chatcompat serve`` (ONE gevent worker, the echo agent) per store (SQLite, and
Redis when ``redis-server`` is installed), whose config has the operator token and
three named keys: ``plain`` (no limits), ``windows`` (requestsPerMinute and
tokensPerMinute, set high enough never to refuse) and ``all`` (the same plus
concurrentRuns). Rounds interleave the credentials; in each, ``--requests`` JSON
requests go one after another on one keep-alive connection, and the worker's CPU time
(utime + stime from /proc) is read before and after. The median round per credential
is reported, in CPU µs per request, with its difference to the operator's.

It also times :meth:`Authenticator.check` in-process: the operator token and a named
key among 1, 10 and 100 keys (every key is compared, in constant time).

    python bench/keys.py [--requests 400] [--rounds 5] [--json-lines]
"""

from __future__ import annotations

import argparse
import hashlib
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
import typing as t

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

CREDENTIALS = {
    "operator": harness.TOKEN,
    "plain": "bench-plain-key-0123456789",
    "windows": "bench-windows-key-0123456789",
    "all": "bench-all-limits-key-0123456789",
}
HIGH = 1_000_000_000  # a limit no run of this bench reaches: counted, never refused


def config(directory: pathlib.Path, store: str) -> dict[str, t.Any]:
    def key(name: str, **limits: int) -> dict[str, t.Any]:
        digest = hashlib.sha256(CREDENTIALS[name].encode()).hexdigest()
        return {"id": name, "tokenSha256": digest, **({"limits": limits} if limits else {})}

    return {
        "gateway": {
            "auth": {
                "mode": "token",
                "token": harness.TOKEN,
                "rateLimit": False,
                "keys": [
                    key("plain"),
                    key("windows", requestsPerMinute=HIGH, tokensPerMinute=HIGH),
                    key("all", requestsPerMinute=HIGH, tokensPerMinute=HIGH, concurrentRuns=1000),
                ],
            },
            "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
        },
        "agents": {"list": [{"id": "main", "default": True, "backend": "echo"}]},
        "sessions": {"store": store},
    }


class Server:
    def __init__(self, store: str | None) -> None:
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="chatcompat-bench-keys-"))
        self.port = harness.free_port()
        path = self.dir / "chatcompat.json5"
        path.write_text(json.dumps(config(self.dir, store or f"sqlite:///{self.dir}/s.db")))
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("CHATCOMPAT_", "GUNICORN_"))
        }
        env["CHATCOMPAT_STATE_DIR"] = str(self.dir)
        self._log = open(self.dir / "gateway.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            harness.chatcompat_command()
            + [
                "serve",
                "--config",
                str(path),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "1",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            start_new_session=True,
        )
        harness.wait_http(self.port, "/readyz", timeout=60, proc=self.proc)
        while not harness.children(self.proc.pid):
            time.sleep(0.05)
        (self.worker,) = harness.children(self.proc.pid)

    def round(self, token: str, requests: int) -> float:
        """CPU µs of the worker per request, over ``requests`` sequential requests."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        body = json.dumps({"messages": [{"role": "user", "content": "one two three"}]})
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        conn.getresponse().read()  # the connection is open and warm
        before = harness.cpu_seconds([self.worker])
        for _ in range(requests):
            conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status} for a bench request")
        used = harness.cpu_seconds([self.worker]) - before
        conn.close()
        return used / requests * 1e6

    def stop(self) -> None:
        harness.stop(self.proc, group=True)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def measure(store_name: str, store: str | None, requests: int, rounds: int) -> dict[str, t.Any]:
    server = Server(store)
    try:
        for token in CREDENTIALS.values():  # warm-up: imports, first allocations
            server.round(token, 50)
        samples: dict[str, list[float]] = {name: [] for name in CREDENTIALS}
        for _ in range(rounds):
            for name, token in CREDENTIALS.items():
                samples[name].append(server.round(token, requests))
    finally:
        server.stop()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "store": store_name,
        "requests_per_round": requests,
        "rounds": rounds,
        "cpu_us_per_request": {name: round(value, 1) for name, value in medians.items()},
        "over_operator_us": {
            name: round(value - medians["operator"], 1) for name, value in medians.items()
        },
    }


def lookup_cost(repeat: int = 20000) -> dict[str, float]:
    """µs per :meth:`Authenticator.check` (no lockout), in this process."""
    from chatcompat.auth import Authenticator
    from chatcompat.settings import ApiKey
    from chatcompat.settings import Settings

    result: dict[str, float] = {}
    for count in (0, 1, 10, 100):
        keys = tuple(
            ApiKey(f"k{n}", hashlib.sha256(f"token-{n}".encode()).digest()) for n in range(count)
        )
        auth = Authenticator(
            Settings(state_dir="/tmp", auth_secret=harness.TOKEN, rate_limit=None, api_keys=keys)
        )
        cases = [("operator", harness.TOKEN)] + ([("named", f"token-{count - 1}")] if count else [])
        for label, token in cases:
            header = f"Bearer {token}"
            start = time.process_time()
            for _ in range(repeat):
                auth.check(header, "127.0.0.1", t.cast(t.Any, None))
            result[f"{label}_among_{count}_keys_us"] = round(
                (time.process_time() - start) / repeat * 1e6, 2
            )
    return result


def store_costs(store: t.Any, repeat: int = 2000) -> dict[str, float]:
    """CPU µs of this process per store call of the limits (no server CPU for Redis)."""
    import uuid

    def timed(call: t.Callable[[], t.Any]) -> float:
        start = time.process_time()
        for _ in range(repeat):
            call()
        return round((time.process_time() - start) / repeat * 1e6, 1)

    return {
        "admit_us": timed(
            lambda: store.admit_request(
                "bench", uuid.uuid4().hex, requests_limit=HIGH, tokens_limit=HIGH
            )
        ),
        "record_tokens_us": timed(lambda: store.record_tokens("bench", 12)),
        "slot_take_and_free_us": timed(
            lambda: (
                store.acquire_slot("bench", "me", 1000, 30.0),
                store.release_slot("bench", "me"),
            )
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json-lines", action="store_true")
    args = parser.parse_args()
    from chatcompat.sessions import open_store

    results = [measure("sqlite", None, args.requests, args.rounds)]
    folder = pathlib.Path(tempfile.mkdtemp(prefix="chatcompat-bench-keys-"))
    with open_store(f"sqlite:///{folder}/s.db") as store:
        results.append({"store": "sqlite", "in_process": store_costs(store)})
    shutil.rmtree(folder, ignore_errors=True)
    if shutil.which("redis-server"):
        sys.path.insert(0, str(harness.REPO))
        from tests.redis_server import RedisServer

        redis = RedisServer(pathlib.Path(tempfile.mkdtemp(prefix="chatcompat-bench-redis-")))
        redis.start()
        try:
            results.append(measure("redis", redis.url, args.requests, args.rounds))
            with open_store(redis.url) as store:
                results.append({"store": "redis", "in_process": store_costs(store)})
        finally:
            redis.stop()
    results.append({"authenticator_check": lookup_cost()})
    for result in results:
        print(json.dumps(result) if args.json_lines else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
