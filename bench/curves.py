#!/usr/bin/env python3
"""Cost curves (issue 14): how a turn and the store's operations grow.

1. History: a gateway (2 gevent workers, ``openai`` agent -> the mock, SQLite,
   ``historyLimit`` 100) answers turns on a session that already holds 0, 10, 100 or
   1,000 messages, one request at a time: CPU per turn (the gateway's, from /proc)
   and latency p50. Only ``min(history, 100)`` messages go to the agent, so the
   curve must be flat beyond 100.
2. Store operations at 10^3, 10^5 and 10^6 stored sessions (SQLite; 10^5 on a
   private ``redis-server``): ``load_history`` (limit 100) and ``append_turn`` of a
   random session, median µs in this process; and on SQLite the TTL purge of 10 % of
   them, expired: the longest single store call of the purge (what blocks a gevent
   worker's other greenlets) against the issue's 50 ms.

Prints one table and writes ``bench/curves.png`` (matplotlib, the bench extra).

    python bench/curves.py [--sizes 1000,100000,1000000] [--redis-size 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

HISTORY_LENGTHS = (0, 10, 100, 1000)
HISTORY_LIMIT = 100  # sessions.historyLimit's default, which the bench config keeps
MESSAGE = "a stored message of about the size of a short chat turn, " * 2


def message(i: int) -> dict:
    return {"role": "user" if i % 2 == 0 else "assistant", "content": f"{i} {MESSAGE}"}


# -- 1. history through the gateway ---------------------------------------------------------


def seed_sqlite(path: str, sessions: list[tuple[str, int]], expires: float) -> None:
    """Write sessions straight into a chatcompat SQLite file (schema made by the
    store): ``(key, messages)`` pairs, two messages a turn, one transaction."""
    now = time.time()
    with sqlite3.connect(path, timeout=30) as conn:
        for key, count in sessions:
            turns = (count + 1) // 2
            conn.execute(
                "INSERT OR REPLACE INTO sessions VALUES (?, 'main', 1, ?, ?, ?, ?, ?)",
                (key, now, now, expires, turns, count),
            )
            conn.executemany(
                "INSERT INTO messages (key, turn, seq, created, body, pos) VALUES (?,?,?,?,?,?)",
                [(key, i // 2 + 1, i % 2, now, json.dumps(message(i)), i) for i in range(count)],
            )

    # Fold the seeding's WAL into the file now: otherwise the next commit (the store's)
    # copies it all, a cost of the seeding and not of the operation measured.
    with sqlite3.connect(path, timeout=30) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def history_curve(duration: float) -> list[dict]:
    mock = harness.Mock()
    gateway = harness.Gateway(mock.url, workers=2)
    rows = []
    try:
        db = str(gateway.dir / "sessions.db")
        harness.load(gateway.url, stream=False, concurrency=1, duration=0.5)  # makes the schema
        for count in HISTORY_LENGTHS:
            key = f"agent:main:curve-{count}"
            if count:
                seed_sqlite(db, [(key, count)], time.time() + 3600)
            extra = ["--header", f"x-openclaw-session-key: {key}"]
            harness.load(gateway.url, stream=False, concurrency=1, duration=0.5, extra=extra)
            pids = gateway.pids()
            cpu = harness.cpu_seconds(pids)
            r = harness.load(
                gateway.url, stream=False, concurrency=1, duration=duration, extra=extra
            )
            cpu = harness.cpu_seconds(pids) - cpu
            rows.append(
                {
                    "messages": count,
                    "sent": min(count, HISTORY_LIMIT),
                    "cpu_ms": cpu * 1000 / max(r["ok"], 1),
                    "p50_ms": r["lat_ms"]["p50"],
                    "errors": r["errors"],
                }
            )
            print(f"  history {count}: {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        gateway.stop()
        mock.stop()
    return rows


# -- 2. store operations by the number of sessions ---------------------------------------------


def time_ops(store, keys: list[str], samples: int = 300) -> tuple[float, float]:
    """Median µs of load_history (limit 100) and append_turn on random sessions."""
    rng = random.Random(1)
    loads, appends = [], []
    for _ in range(samples):
        key = rng.choice(keys)
        started = time.perf_counter()
        store.load_history(key, HISTORY_LIMIT)
        loads.append(time.perf_counter() - started)
        started = time.perf_counter()
        store.append_turn(key, "main", [message(0), message(1)], sticky=True, ttl_seconds=3600)
        appends.append(time.perf_counter() - started)
    return statistics.median(loads) * 1e6, statistics.median(appends) * 1e6


def sqlite_point(size: int) -> dict:
    from chatcompat.sessions import SQLiteStore

    directory = tempfile.mkdtemp(prefix="chatcompat-curves-")
    try:
        path = os.path.join(directory, "sessions.db")
        store = SQLiteStore(path)
        store.ping()
        store.append_turn("agent:main:warm", "main", [message(0)], sticky=True, ttl_seconds=60)
        # 10 % expired an hour ago: what the purge has to delete.
        expired = size // 10
        keys = [f"agent:main:s{i}" for i in range(size)]
        for first in range(0, size, 50_000):
            chunk = keys[first : first + 50_000]
            seed_sqlite(path, [(k, 2) for k in chunk if int(k[12:]) >= expired], time.time() + 3600)
            seed_sqlite(path, [(k, 2) for k in chunk if int(k[12:]) < expired], time.time() - 3600)
        live = keys[expired:]
        load_us, append_us = time_ops(store, live)
        # The purge: every store call it makes, timed (each blocks its worker).
        calls: list[float] = []
        database = store._db
        original = database.with_retries

        def timed(op):
            started = time.perf_counter()
            try:
                return original(op)
            finally:
                calls.append(time.perf_counter() - started)

        database.with_retries = timed
        started = time.perf_counter()
        purged = store.purge_expired()
        total = time.perf_counter() - started
        database.with_retries = original
        store.close()
        return {
            "store": "sqlite",
            "sessions": size,
            "load_us": load_us,
            "append_us": append_us,
            "purged": purged,
            "purge_s": total,
            "purge_max_ms": max(calls) * 1000,
            "purge_calls": len(calls),
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def redis_point(size: int) -> dict | None:
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/sbin")
    if binary is None:
        print("  redis-server is not installed: no Redis point", file=sys.stderr)
        return None
    from chatcompat.sessions.redis_store import RedisStore

    directory = tempfile.mkdtemp(prefix="chatcompat-curves-redis-")
    port = harness.free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", directory],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        deadline = time.monotonic() + 10
        while True:
            try:
                store.ping()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        keys = [f"agent:main:s{i}" for i in range(size)]
        for key in keys:
            store.append_turn(key, "main", [message(0), message(1)], sticky=True, ttl_seconds=3600)
        load_us, append_us = time_ops(store, keys)
        store.close()
        return {"store": "redis", "sessions": size, "load_us": load_us, "append_us": append_us}
    finally:
        harness.stop(server)
        shutil.rmtree(directory, ignore_errors=True)


# -- output ------------------------------------------------------------------------------------


def picture(history: list[dict], stores: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    x = [max(r["messages"], 1) for r in history]
    left.plot(x, [r["cpu_ms"] for r in history], "o-", label="CPU ms per turn")
    left.plot(x, [r["p50_ms"] for r in history], "s-", label="latency p50 ms (c=1)")
    left.set_xscale("log")
    left.set_xlabel(f"messages stored in the session (historyLimit {HISTORY_LIMIT}; 0 drawn at 1)")
    left.set_ylim(bottom=0)
    left.set_title("A turn against its session's length")
    left.legend()
    for kind in ("sqlite", "redis"):
        points = [s for s in stores if s["store"] == kind]
        if not points:
            continue
        n = [s["sessions"] for s in points]
        right.plot(n, [s["load_us"] for s in points], "o-", label=f"{kind} load_history")
        right.plot(n, [s["append_us"] for s in points], "s--", label=f"{kind} append_turn")
    right.set_xscale("log")
    right.set_ylim(bottom=0)
    right.set_xlabel("sessions stored")
    right.set_ylabel("µs per call (median)")
    right.set_title("Store operations against the store's size")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,100000,1000000", help="SQLite session counts")
    p.add_argument("--redis-size", type=int, default=100_000, help="0: no Redis point")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per history row")
    p.add_argument("--png", default=str(harness.BENCH / "curves.png"))
    p.add_argument("--json", help="also write the raw numbers to this file")
    a = p.parse_args()
    history = history_curve(a.duration)
    stores = []
    for size in (int(s) for s in a.sizes.split(",") if s):
        stores.append(sqlite_point(size))
        print(f"  sqlite {size}: {stores[-1]}", file=sys.stderr, flush=True)
    if a.redis_size:
        point = redis_point(a.redis_size)
        if point is not None:
            stores.append(point)
            print(f"  redis {a.redis_size}: {point}", file=sys.stderr, flush=True)
    print(f"A turn (JSON, c=1, 2 gevent workers, SQLite, historyLimit {HISTORY_LIMIT}):")
    print(f"{'stored messages':>16} {'sent':>6} {'CPU ms/turn':>12} {'p50 ms':>8} {'errors':>7}")
    for r in history:
        print(
            f"{r['messages']:>16,} {r['sent']:>6} {r['cpu_ms']:>12.2f} {r['p50_ms']:>8.2f}"
            f" {r['errors']:>7}"
        )
    print()
    print("Store operations (median µs per call, in process; purge: 10 % expired):")
    print(
        f"{'store':>7} {'sessions':>10} {'load µs':>8} {'append µs':>10} {'purged':>8}"
        f" {'purge s':>8} {'longest call ms':>16} {'<= 50 ms':>9}"
    )
    for s in stores:
        purge = ""
        if "purged" in s:
            purge = (
                f" {s['purged']:>8,} {s['purge_s']:>8.2f} {s['purge_max_ms']:>16.1f}"
                f" {'yes' if s['purge_max_ms'] <= 50 else 'NO':>9}"
            )
        print(
            f"{s['store']:>7} {s['sessions']:>10,} {s['load_us']:>8.0f} {s['append_us']:>10.0f}"
            + purge
        )
    picture(history, stores, a.png)
    print(f"\nwrote {a.png}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"history": history, "stores": stores}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
