"""Several gateway hosts behind real nginx (``deploy/nginx.conf``), sharing one real Redis.

Two ``chatcompat serve`` hosts (2 gevent workers each) with the same config but their
own port, ``sessions.store`` on one redis-server, nginx round-robin over both. Each
host writes the scripted agent's log to its own file, which tells which host ran
which turn.

About client addresses: everything runs on loopback, and ``gateway.trustedProxies``
is ``["127.0.0.1"]``, which here is both nginx and the test client. So an
``X-Forwarded-For: 203.0.113.9`` sent by the test reaches the hosts as
``203.0.113.9, 127.0.0.1`` and the client is ``203.0.113.9`` (the rightmost hop that
is not a trusted proxy): a non-loopback client, so the lockout applies. In production
nginx's peer is the real client, untrusted, and a forged header gains nothing; the
test from 127.0.0.2 shows that.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import threading
import time
import typing as t
import uuid

import pytest

from tests.live.conftest import chat
from tests.live.conftest import start_server
from tests.live.conftest import wait_until
from tests.live.multihost import Cluster
from tests.live.multihost import ask
from tests.live.multihost import get
from tests.live.multihost import host_overrides
from tests.live.multihost import read_frame
from tests.live.multihost import read_stream
from tests.live.multihost import session_key
from tests.live.multihost import start_cluster

pytestmark = pytest.mark.live

WRONG = {"Authorization": "Bearer not-the-token"}


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def content_of(frame: str) -> str:
    chunk = json.loads(frame.removeprefix("data: "))
    return "".join(choice["delta"].get("content") or "" for choice in chunk["choices"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"), lockTimeoutSeconds=20)
    yield cluster
    cluster.stop()


# -- one conversation over both hosts ------------------------------------------------------


def test_conversation_alternating_hosts_keeps_its_history(cluster: Cluster) -> None:
    name = unique("alice")
    for n in range(1, 7):
        exchange = ask(cluster.nginx.port, name, f"turn {n}")
        assert exchange.status == 200, exchange.body()
        assert exchange.json()["choices"][0]["message"]["content"] == f"turn {n}"
        assert exchange.header("x-openclaw-session-key") == session_key(name)
    starts = cluster.starts(session_key(name))
    assert {host for host, _ in starts} == {0, 1}, "nginx sent every turn to one host"
    for host, line in starts:
        n = int(line["messages"][-1]["content"].split()[-1])
        # Whichever host ran turn n, the agent got all earlier turns from Redis.
        expected = [
            {"role": role, "content": f"turn {k}"}
            for k in range(1, n)
            for role in ("user", "assistant")
        ]
        assert line["history_count"] == 2 * (n - 1), (host, n)
        assert line["messages"][:-1] == expected
    turns = cluster.transcript(session_key(name))
    assert [[m["content"] for m in turn] for turn in turns] == [
        [f"turn {n}"] * 2 for n in range(1, 7)
    ]


def test_concurrent_turns_on_one_session_are_serialized(cluster: Cluster) -> None:
    name, count = unique("bob"), 8
    results: list[tuple[int, t.Any]] = []
    barrier = threading.Barrier(count)

    def turn(n: int) -> None:
        barrier.wait(5)
        exchange = ask(cluster.nginx.port, name, f"[[slow:30]] c{n} x y")
        results.append((exchange.status, exchange.json()))

    threads = [threading.Thread(target=turn, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [status for status, _ in results] == [200] * count, results
    starts = cluster.starts(session_key(name))
    assert len(starts) == count and {host for host, _ in starts} == {0, 1}
    # Serialized: each run saw every turn stored before it, so no two saw the same.
    assert sorted(line["history_count"] for _, line in starts) == list(range(0, 2 * count, 2))
    turns = cluster.transcript(session_key(name))
    assert sorted(turn[0]["content"] for turn in turns) == sorted(
        f"[[slow:30]] c{n} x y" for n in range(count)
    )
    for question, answer in turns:  # each turn whole: its question and its own answer
        assert answer == {"role": "assistant", "content": question["content"].split(" ", 1)[1]}


def test_a_gthread_host_shares_the_store_safely(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    """A host with threaded workers (one Redis client shared by 32 threads per worker)
    and a gevent host take concurrent turns on one session."""
    threaded = start_server(
        tmp_path / "gthread",
        workers=2,
        worker_class="gthread",
        overrides=host_overrides(cluster.redis.url, lockTimeoutSeconds=20),
    )
    try:
        name, count = unique("hank"), 8
        ports = [threaded.port, cluster.hosts[0].port] * (count // 2)
        statuses: list[int] = []

        def turn(n: int) -> None:
            statuses.append(ask(ports[n], name, f"[[slow:20]] t{n}").status)

        threads = [threading.Thread(target=turn, args=(n,)) for n in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert statuses == [200] * count
        runs = [line for line in threaded.runs(session_key(name)) if line["event"] == "start"]
        runs += [line for _, line in cluster.starts(session_key(name))]
        assert sorted(line["history_count"] for line in runs) == list(range(0, 2 * count, 2))
        assert len(cluster.transcript(session_key(name))) == count
    finally:
        threaded.stop()


# -- streaming through nginx -----------------------------------------------------------------


def test_first_sse_chunk_arrives_before_the_agents_last_word(cluster: Cluster) -> None:
    name = unique("sse")
    # Accept-Encoding as the SDKs send it: nginx must neither compress nor hold the stream.
    headers = {"Accept-Encoding": "gzip, deflate"}
    exchange = ask(
        cluster.nginx.port, name, "[[slow:400]] w1 w2 w3 w4", stream=True, headers=headers
    )
    assert exchange.status == 200
    assert exchange.header("Content-Type") == "text/event-stream; charset=utf-8"
    assert exchange.header("Content-Encoding") is None
    offset = time.time() - time.monotonic()  # monotonic arrival times → wall clock
    frames = list(exchange.frames())
    arrivals = [
        (content_of(frame), at + offset) for frame, at in frames if frame.startswith("data: {")
    ]
    first_word_at = next(at for text, at in arrivals if text == "w1")
    assert frames[-1][0] == "data: [DONE]"
    ends = [line for host in cluster.hosts for line in host.runs(session_key(name))]
    agent_done_at = next(line["at"] for line in ends if line["event"] == "end")
    # A word every 0.4 s: unbuffered, w1 reaches the client ~1.2 s before the agent's
    # last word (w4), and the stream's end comes that much later too.
    assert first_word_at - (exchange.started + offset) < 0.9
    assert agent_done_at - first_word_at > 0.8
    assert frames[-1][1] + offset - first_word_at > 0.8


# -- failed-auth lockout shared by the hosts ---------------------------------------------


def test_lockout_through_one_host_holds_on_the_other(cluster: Cluster) -> None:
    host_a, host_b = (host.port for host in cluster.hosts)
    client = {"X-Forwarded-For": "203.0.113.9"}
    body = {"model": "openclaw/scripted", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(3):  # maxAttempts: 3, all on host A
        exchange = chat(host_a, body, {**client, **WRONG})
        assert exchange.status == 401, exchange.body()
    for port in (host_b, cluster.nginx.port, host_a):
        exchange = chat(port, body, client)  # the right token: still locked out
        assert exchange.status == 429, exchange.body()
        assert 0 < int(exchange.header("Retry-After")) <= 60
        assert exchange.json()["error"]["code"] == "too_many_auth_failures"
    other = chat(cluster.nginx.port, body, {"X-Forwarded-For": "203.0.113.10"})
    assert other.status == 200, other.body()


def test_lockout_counts_failures_arriving_through_nginx(cluster: Cluster) -> None:
    client = {"X-Forwarded-For": "198.51.100.7"}
    body = {"model": "openclaw/scripted", "messages": [{"role": "user", "content": "hi"}]}
    before = len(cluster.nginx.access_log())
    for _ in range(3):  # round-robin: the failures land on both hosts
        assert chat(cluster.nginx.port, body, {**client, **WRONG}).status == 401
    logged = wait_until(
        lambda: (
            cluster.nginx.access_log()[before:][:3]
            if len(cluster.nginx.access_log()) >= before + 3
            else None
        ),
        5,
        "nginx's access log",
    )
    hosts = {line.split("upstream=")[1].split()[0] for line in logged}
    assert len(hosts) == 2, hosts
    for port in (cluster.nginx.port, *(host.port for host in cluster.hosts)):
        assert chat(port, body, client).status == 429


def test_a_forged_forwarded_for_is_not_believed(cluster: Cluster) -> None:
    """From 127.0.0.2 (not a trusted proxy) the client is 127.0.0.2, whatever it claims."""
    body = {"model": "openclaw/scripted", "messages": [{"role": "user", "content": "hi"}]}
    forged = {"X-Forwarded-For": "192.0.2.1"}
    for _ in range(4):  # counted against 127.0.0.2, which is loopback: exempt
        exchange = chat(cluster.nginx.port, body, {**forged, **WRONG}, source="127.0.0.2")
        assert exchange.status == 401
    assert chat(cluster.nginx.port, body, forged, source="127.0.0.2").status == 200
    assert chat(cluster.nginx.port, body, forged).status == 200  # 192.0.2.1 was never blamed


# -- a host dies --------------------------------------------------------------------------


def test_sigkill_of_one_host_loses_nothing_stored_and_the_other_carries_on(
    tmp_path: pathlib.Path,
) -> None:
    cluster = start_cluster(tmp_path, lockTimeoutSeconds=1)
    try:
        _kill_one_host(cluster)
    finally:
        cluster.stop()


def _kill_one_host(cluster: Cluster) -> None:
    port = cluster.nginx.port
    carol = unique("carol")
    for n in range(1, 4):
        assert ask(port, carol, f"turn {n}").status == 200
    stored = cluster.transcript(session_key(carol))
    assert len(stored) == 3

    # Two long streams on other sessions: round-robin puts one on each host.
    words = " ".join(f"w{n}" for n in range(20))
    names = [unique("dave"), unique("erin")]
    streams = [ask(port, name, f"[[slow:100]] {words}", stream=True) for name in names]
    for stream in streams:
        assert stream.status == 200
        assert content_of(read_frame(stream)) == ""  # the role chunk
        assert content_of(read_frame(stream)) == "w0"  # the run is under way
    runs_on = [
        wait_until(lambda n=name: [h for h, _ in cluster.starts(session_key(n))], 5, "a run")[0]
        for name in names
    ]
    assert sorted(runs_on) == [0, 1], runs_on
    victim = cluster.hosts[runs_on[0]]

    os.killpg(victim.proc.pid, signal.SIGKILL)  # master and workers, no goodbye
    victim.proc.wait(5)
    wait_until(lambda: not victim.group_processes(), 5, "the killed host's processes to go")

    cut_frames, _ = read_stream(streams[0])
    assert "data: [DONE]" not in cut_frames  # cut, not finished
    rest, ended = read_stream(streams[1])  # the survivor's stream goes on to the end
    assert ended and rest[-1] == "data: [DONE]"
    assert "".join(content_of(f) for f in rest if f.startswith("data: {")).strip() == words[3:]

    # Nothing already stored is lost; nothing of the cut turn is stored.
    assert cluster.transcript(session_key(carol)) == stored
    assert cluster.transcript(session_key(names[0])) == []
    assert len(cluster.transcript(session_key(names[1]))) == 1

    # The surviving host carries on: nginx skips the dead one.
    survivor = 1 - runs_on[0]
    for n in range(4, 8):
        exchange = ask(port, carol, f"turn {n}")
        assert exchange.status == 200, exchange.body()
    assert len(cluster.transcript(session_key(carol))) == 7
    last = [line for host, line in cluster.starts(session_key(carol)) if host == survivor][-1]
    assert last["history_count"] == 12
    # The cut run's lock died with its host: it stays taken until its expiry (30 s),
    # so the session answers 409 meanwhile rather than running two turns at once.
    busy = ask(port, names[0], "again")
    assert busy.status == 409 and busy.json()["error"]["code"] == "session_busy"
    with cluster.store() as store:
        lock = f"chatcompat:{{{session_key(names[0])}}}:lock"
        assert 0 < store._redis()[0].pttl(lock) <= 30_000


# -- Redis goes away and comes back ---------------------------------------------------------


def test_redis_outage_is_503_then_service_resumes_by_itself(tmp_path: pathlib.Path) -> None:
    cluster = start_cluster(tmp_path, hosts=1, persistent_redis=True)
    try:
        _redis_outage(cluster)
    finally:
        cluster.stop()


def _redis_outage(cluster: Cluster) -> None:
    port = cluster.nginx.port
    frank = unique("frank")
    for n in (1, 2):
        assert ask(port, frank, f"turn {n}").status == 200
    stream = ask(port, frank, "[[slow:300]] a b c d", stream=True)
    assert stream.status == 200
    read_frame(stream)  # role
    assert content_of(read_frame(stream)) == "a"

    cluster.redis.kill()
    started = time.monotonic()
    status, body = get(port, "/readyz")
    assert status == 503 and json.loads(body)["error"]["code"] == "store_unavailable"
    refused = ask(port, unique("gina"), "hello")
    assert refused.status == 503
    assert refused.json()["error"]["code"] == "store_unavailable"
    assert time.monotonic() - started < 2.0  # no long hang

    frames, ended = read_stream(stream)  # the run ends, its turn cannot be stored
    frames = [frame for frame in frames if frame != ": keepalive"]
    assert ended and frames[-1] == "data: [DONE]"
    error = json.loads(frames[-2].removeprefix("data: "))["error"]
    assert error["code"] == "store_unavailable"

    cluster.redis.start()  # same port, its append-only file reloaded
    assert get(port, "/readyz")[0] == 200
    for n in range(4):  # every worker recovers without a restart
        exchange = ask(port, unique("gina"), f"hello {n}")
        assert exchange.status == 200, exchange.body()
    # The stored turns survived; the turn that failed is not there, not even in part.
    assert [len(turn) for turn in cluster.transcript(session_key(frank))] == [2, 2]
