"""Redis Sentinel for real: one primary, one replica and three sentinels
(``redis-server --sentinel``) on loopback, two ``chatcompat serve`` hosts on a
``redis+sentinel://`` URL and nginx in front. The primary is SIGKILLed while
conversations run, several times in a row.

What is checked: every turn a client was told about (a JSON 200, or a stream that
ended with ``[DONE]`` and no error frame) is in the transcript afterwards, no turn is
stored twice, and requests succeed again within seconds. What is measured (printed;
``pytest -s`` shows it, README "Running with Redis Sentinel" quotes it): the seconds
from the kill to the promotion and to the first success, the cost of ``WAIT`` per
stored turn, and how often one session ran twice at once.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
import threading
import time
import typing as t

import pytest

from chatcompat import cli
from chatcompat.sessions import NotReplicated
from chatcompat.sessions.redis_store import RedisStore
from chatcompat.settings import RedisOptions
from tests.live.multihost import SentinelCluster
from tests.live.multihost import ask
from tests.live.multihost import get
from tests.live.multihost import read_stream
from tests.live.multihost import session_key
from tests.live.multihost import start_sentinel_cluster
from tests.redis_server import SentinelGroup

pytestmark = pytest.mark.live

FAILOVERS = 3
TURN_SECONDS = 45.0  # one turn's retries: a claim left by a lost write lasts 30 s
RECOVERY_SECONDS = 30.0


def message(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


# -- the store: WAIT -----------------------------------------------------------------


def test_a_turn_write_waits_for_the_replica_and_fails_honestly_without_it(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    group = SentinelGroup(tmp_path)
    group.start()
    options = RedisOptions(wait_timeout_seconds=0.5, failover_wait_seconds=0)
    waiting = RedisStore(group.url, redis_options=options)
    async_only = RedisStore(group.url, redis_options=RedisOptions(min_replicas=0))
    patient = RedisStore(group.url, redis_options=RedisOptions(failover_wait_seconds=5))
    try:
        assert waiting.min_replicas() == 1  # the default: the sentinels know a replica
        assert async_only.min_replicas() == 0
        primary, replica = group.primary(), group.servers[1]
        assert waiting.ping() == f"127.0.0.1:{primary.port}"
        config = tmp_path / "check.json5"
        config.write_text(
            json.dumps({"gateway": {"auth": {"token": "t" * 24}}, "sessions": {"store": group.url}})
        )
        capsys.readouterr()
        assert cli.main(["check", "--config", str(config)]) == 0
        assert (
            f"  primary     127.0.0.1:{primary.port} (from the sentinels; 1 replica(s) confirm"
            " each turn)\n"
        ) in capsys.readouterr().out

        # Once the call returns, the replica has the turn.
        waiting.append_turn(
            "k", "main", [message("one")], sticky=True, ttl_seconds=60, turn_id="t1"
        )
        with replica.client() as client:
            assert client.llen("chatcompat:{k}:msgs") == 1

        # A replica that does not answer: the write is made but not confirmed.
        replica.pause()
        # Not even a resend of a stored turn is confirmed without it (it writes
        # nothing itself, but what it stands for must be on a replica).
        with pytest.raises(NotReplicated):
            waiting.append_turn(
                "k", "main", [message("one")], sticky=True, ttl_seconds=60, turn_id="t1"
            )
        started = time.monotonic()
        with pytest.raises(NotReplicated, match="0 of 1 replica"):
            waiting.append_turn(
                "k", "main", [message("two")], sticky=True, ttl_seconds=60, turn_id="t2"
            )
        assert 0.4 < time.monotonic() - started < 3
        # minReplicas 0 does not wait for it.
        async_only.append_turn("k", "main", [message("three")], sticky=True, ttl_seconds=60)
        replica.resume()
        # The resend of "two" stores nothing more and is confirmed this time.
        stored = waiting.append_turn(
            "k", "main", [message("two")], sticky=True, ttl_seconds=60, turn_id="t2"
        )
        assert stored is False
        texts = [turn.messages[0]["content"] for turn in waiting.transcript("k")]
        assert texts == ["one", "two", "three"]

        # With failoverWaitSeconds the write waits for a replica that comes back.
        replica.pause()
        timer = threading.Timer(1.5, replica.resume)
        timer.start()
        started = time.monotonic()
        patient.append_turn("k", "main", [message("four")], sticky=True, ttl_seconds=60)
        assert 1.4 < time.monotonic() - started < 4.5
        timer.join()

        measure_wait_cost(waiting, async_only)
    finally:
        for server in group.servers:
            if server.proc is not None and server.proc.poll() is None:
                server.resume()
        waiting.close()
        async_only.close()
        patient.close()
        group.stop()


def measure_wait_cost(waiting: RedisStore, async_only: RedisStore, turns: int = 300) -> None:
    """Store one-message turns alternately with and without WAIT (same run, same
    servers) and print the latency and the client CPU per turn."""
    samples: dict[str, list[tuple[float, float]]] = {"minReplicas 0": [], "minReplicas 1": []}
    text = [message("a turn of a measured conversation, about this long")]
    for n in range(turns * 2):
        label, store = ("minReplicas 1", waiting) if n % 2 else ("minReplicas 0", async_only)
        cpu, wall = time.thread_time(), time.perf_counter()
        store.append_turn(f"cost-{n % 20}", "main", text, sticky=True, ttl_seconds=60)
        samples[label].append((time.perf_counter() - wall, time.thread_time() - cpu))
    print(f"\nWAIT cost per stored turn ({turns} turns each, alternating):")
    for label, values in samples.items():
        walls = sorted(wall for wall, _ in values)
        cpu = statistics.fmean(c for _, c in values)
        print(
            f"  {label}: median {statistics.median(walls) * 1000:.2f} ms,"
            f" p95 {walls[int(len(walls) * 0.95)] * 1000:.2f} ms,"
            f" client CPU {cpu * 1e6:.0f} us"
        )


# -- the whole deployment: failovers under traffic -------------------------------------


@dataclasses.dataclass
class Attempt:
    started: float
    ended: float
    ok: bool
    status: int
    detail: str = ""


class Talker(threading.Thread):
    """One client holding a conversation through nginx: turn after turn, each sent
    with its own Idempotency-Key and resent with it until it is acknowledged."""

    def __init__(
        self, port: int, user: str, label: str, stop: threading.Event, *, stream: bool, slow: int
    ) -> None:
        super().__init__(daemon=True, name=label)
        self.port, self.user, self.label, self.stop, self.stream = port, user, label, stop, stream
        self.slow = f" [[slow:{slow}]]" if slow else ""
        self.sent: list[str] = []
        self.acked: list[str] = []
        self.attempts: list[Attempt] = []
        self.problems: list[str] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            text = f"{self.label} turn {n}{self.slow}"
            self.sent.append(text)
            if self.turn(text, f"{self.label}-{n}"):
                self.acked.append(text)

    def turn(self, text: str, key: str) -> bool:
        deadline = time.monotonic() + TURN_SECONDS
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                ok, status, detail = self.once(text, key)
            except (OSError, AssertionError, ValueError) as exc:
                ok, status, detail = False, 0, f"{type(exc).__name__}: {exc}"
            self.attempts.append(Attempt(started, time.monotonic(), ok, status, detail))
            if ok:
                return True
            if status in (400, 401, 404, 422):
                self.problems.append(f"{key}: HTTP {status} {detail}")
                return False
            time.sleep(0.05)
        self.problems.append(f"{key}: not acknowledged within {TURN_SECONDS:g} s")
        return False

    def once(self, text: str, key: str) -> tuple[bool, int, str]:
        headers = {"Idempotency-Key": key}
        exchange = ask(self.port, self.user, text, stream=self.stream, headers=headers)
        try:
            if not self.stream or exchange.status != 200:
                body = exchange.body()
                if exchange.status != 200:
                    error = json.loads(body).get("error") or {}
                    return False, exchange.status, f"{error.get('code')}: {error.get('message')}"
                reply = json.loads(body)["choices"][0]["message"]["content"]
                assert reply.startswith(text.split(" [[")[0]), reply
                return True, 200, ""
            frames, ended = read_stream(exchange)
            acknowledged = (
                ended
                and bool(frames)
                and frames[-1] == "data: [DONE]"
                and not any(frame.startswith('data: {"error"') for frame in frames)
            )
            return acknowledged, 200, "" if acknowledged else f"stream: {frames[-2:]}"
        finally:
            exchange.close()


def user_texts(cluster: SentinelCluster, user: str) -> list[str]:
    with cluster.store() as store:
        return [turn.messages[0]["content"] for turn in store.transcript(session_key(user))]


def overlapping_runs(cluster: SentinelCluster, user: str) -> tuple[int, int]:
    """(runs of the session, runs that overlapped another run of it) from the agent
    logs of every host."""
    lines = [line for host in cluster.hosts for line in host.runs(session_key(user))]
    starts = {line["run"]: line["at"] for line in lines if line["event"] == "start"}
    ends = {line["run"]: line["at"] for line in lines if line["event"] == "end"}
    runs = [(starts[run], ends.get(run, float("inf"))) for run in starts]
    overlapping = sum(
        any(other is not run and other[0] < run[1] and run[0] < other[1] for other in runs)
        for run in runs
    )
    return len(runs), overlapping


def wait_for(
    condition: t.Callable[[], t.Any],
    what: str,
    timeout: float,
    details: t.Callable[[], str] = lambda: "",
) -> t.Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}{details()}")


def test_failovers_lose_no_acknowledged_turn(tmp_path: pathlib.Path) -> None:
    # A replica that stops answering costs 6 s, not the default 10 s, before the 503;
    # a failover (down-after 2 s, then the election) takes less.
    cluster = start_sentinel_cluster(tmp_path, redis={"failoverWaitSeconds": 6})
    stop = threading.Event()
    port = cluster.nginx.port
    talkers = [
        Talker(port, "json-a", "json-a", stop, stream=False, slow=0),
        Talker(port, "json-b", "json-b", stop, stream=False, slow=0),
        Talker(port, "sse-a", "sse-a", stop, stream=True, slow=0),
        Talker(port, "sse-b", "sse-b", stop, stream=True, slow=0),
        # Two clients on one session: its run lock keeps their runs apart.
        Talker(port, "shared", "shared-1", stop, stream=False, slow=40),
        Talker(port, "shared", "shared-2", stop, stream=False, slow=40),
    ]
    began = time.monotonic()
    try:
        # Before any failover: a turn the replica cannot confirm is a 503 that says
        # the turn may not be stored; its resend is answered from the store.
        replica = next(s for s in cluster.group.servers if s is not cluster.group.primary())
        replica.pause()
        try:
            exchange = ask(port, "probe", "probe turn", headers={"Idempotency-Key": "probe"})
            body = exchange.json()
        finally:
            replica.resume()
        assert exchange.status == 503, body
        assert "may not have been stored" in body["error"]["message"]
        exchange = ask(port, "probe", "probe turn", headers={"Idempotency-Key": "probe"})
        assert (exchange.status, exchange.header("Idempotent-Replayed")) == (200, "true")
        exchange.body()
        assert user_texts(cluster, "probe") == ["probe turn"]

        for talker in talkers:
            talker.start()

        def each_acked(count: int) -> t.Callable[[], bool]:
            goal = {talker: len(talker.acked) + count for talker in talkers}
            return lambda: all(len(talker.acked) >= goal[talker] for talker in talkers)

        def stuck() -> str:
            lines = []
            for talker in talkers:
                last = talker.attempts[-3:]
                seen = [(a.status, a.detail[:150], round(a.ended - began, 1)) for a in last]
                lines.append(f"\n  {talker.label}: {len(talker.acked)} acked, last {seen}")
            return "".join(lines)

        wait_for(each_acked(2), "every client to get two turns through", RECOVERY_SECONDS, stuck)
        rounds = []
        for _ in range(FAILOVERS):
            killed_at = time.monotonic()
            old, new, promotion = cluster.group.fail_over()

            def first_success(since: float = killed_at) -> float | None:
                ends = [
                    attempt.ended
                    for talker in talkers
                    for attempt in list(talker.attempts)
                    if attempt.ok and attempt.started >= since
                ]
                return min(ends) if ends else None

            recovered = wait_for(first_success, "a request to succeed again", RECOVERY_SECONDS)

            def ready_on_new_primary(primary: str = f"127.0.0.1:{new.port}") -> bool:
                for host in cluster.hosts:
                    status, body = get(host.port, "/readyz")
                    if status != 200 or json.loads(body)["store"]["primary"] != primary:
                        return False
                return True

            wait_for(ready_on_new_primary, "/readyz of each host to name the new primary", 10)
            rounds.append((old.port, new.port, promotion, recovered - killed_at))
            wait_for(
                each_acked(2), "every client to get two more turns through", RECOVERY_SECONDS, stuck
            )
        stop.set()
        for talker in talkers:
            talker.join(TURN_SECONDS + 15)
            assert not talker.is_alive(), f"{talker.label} is still retrying"

        # Every acknowledged turn is stored, once; nothing is stored twice.
        problems = [problem for talker in talkers for problem in talker.problems]
        for user in {talker.user for talker in talkers}:
            stored = user_texts(cluster, user)
            mine = [talker for talker in talkers if talker.user == user]
            acked = [text for talker in mine for text in talker.acked]
            sent = {text for talker in mine for text in talker.sent}
            assert len(stored) == len(set(stored)), f"{user}: a turn stored twice"
            assert set(stored) <= sent, f"{user}: a turn nobody sent"
            lost = [text for text in acked if text not in stored]
            assert not lost, f"{user}: acknowledged turns lost: {lost}"
            if len(mine) == 1:  # one client: the turns are stored in the order sent
                assert [text for text in stored if text in acked] == acked
        runs, overlapping = overlapping_runs(cluster, "shared")
    finally:
        stop.set()
        cluster.stop()

    acked = sum(len(talker.acked) for talker in talkers)
    attempts = sum(len(talker.attempts) for talker in talkers)
    print(f"\n{FAILOVERS} failovers (kill -> promotion, kill -> first success again):")
    for old_port, new_port, promotion, recovered in rounds:
        print(f"  {old_port} -> {new_port}: {promotion:.2f} s, {recovered:.2f} s")
    print(f"  {acked} turns acknowledged ({attempts} attempts), 0 lost, 0 stored twice")
    print(f"  shared session: {runs} runs, {overlapping} overlapping another run")
    print(f"  given up: {problems}")
    statuses: dict[int, int] = {}
    for talker in talkers:
        for attempt in talker.attempts:
            statuses[attempt.status] = statuses.get(attempt.status, 0) + 1
    print(f"  attempts by status: {statuses}")
    kinds: dict[tuple[str, int, str], int] = {}
    for talker in talkers:
        for attempt in talker.attempts:
            if not attempt.ok:
                kind = (talker.label, attempt.status, attempt.detail[:90])
                kinds[kind] = kinds.get(kind, 0) + 1
    for kind, count in sorted(kinds.items()):
        print(f"  {count} x {kind}")
    assert not problems, problems
