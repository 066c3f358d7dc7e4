"""Named API keys on real servers (SPEC 16): keys made with ``chatcompat keys add``,
isolated from each other across two hosts on one Redis; a 100-requests-per-minute key
under 2 workers x 64 concurrent clients admits exactly 100, on SQLite and on Redis;
a killed worker's run slot frees itself within the lock TTL.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import pathlib
import signal
import subprocess
import threading
import time
import typing as t

import pytest

from chatcompat.lease import LOCK_TTL_SECONDS
from tests.live.conftest import CHATCOMPAT
from tests.live.conftest import REPO
from tests.live.conftest import LiveServer
from tests.live.conftest import base_config
from tests.live.conftest import merged
from tests.live.conftest import start_server
from tests.live.conftest import user
from tests.polling import wait_until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.live

CLIENTS_PER_WORKER = 64
LIMITED_TOKEN = "limited-key-token-0123456789"


def request(
    port: int, method: str, path: str, token: str, body: t.Any = None, **headers: str
) -> tuple[int, dict[str, str], t.Any]:
    """One request on a fresh connection: (status, headers lowercased, JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        sent = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        sent.update({name.replace("_", "-"): value for name, value in headers.items()})
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=sent)
        response = conn.getresponse()
        data = response.read()
        return (
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            json.loads(data) if data else None,
        )
    finally:
        conn.close()


def chat(port: int, token: str, body: dict[str, t.Any], **headers: str) -> t.Any:
    return request(port, "POST", "/v1/chat/completions", token, body, **headers)


def limited_key() -> dict[str, t.Any]:
    return {
        "id": "limited",
        "tokenSha256": hashlib.sha256(LIMITED_TOKEN.encode()).hexdigest(),
        "limits": {"requestsPerMinute": 100},
    }


def burst(ports: list[int], clients_per_port: int) -> list[int]:
    """``clients_per_port`` concurrent clients per port, released together, two
    requests each: the statuses."""
    statuses: list[int] = []
    lock = threading.Lock()
    clients = [port for port in ports for _ in range(clients_per_port)]
    barrier = threading.Barrier(len(clients))

    def client(port: int) -> None:
        barrier.wait()
        for n in range(2):
            status, _, _ = chat(port, LIMITED_TOKEN, {"messages": [user(f"hi {n}")]})
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=client, args=(port,)) for port in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_a_100_rpm_key_admits_exactly_100_on_sqlite(tmp_path: pathlib.Path) -> None:
    overrides = {"gateway": {"auth": {"keys": [limited_key()]}}}
    server = start_server(tmp_path / "sqlite", workers=2, overrides=overrides)
    try:
        started = time.monotonic()
        statuses = burst([server.port], 2 * CLIENTS_PER_WORKER)
        assert time.monotonic() - started < 50, "the burst must fit in one window"
        assert len(statuses) == 256
        assert statuses.count(200) == 100, sorted(set(statuses))
        assert statuses.count(429) == 156
        assert len({pid for pid in server.worker_pids()}) == 2
    finally:
        server.stop()


def test_a_100_rpm_key_admits_exactly_100_across_two_hosts_on_redis(
    tmp_path: pathlib.Path,
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    overrides = {
        "gateway": {"auth": {"keys": [limited_key()]}},
        "sessions": {"store": redis.url},
    }
    hosts: list[LiveServer] = []
    try:
        hosts = [
            start_server(tmp_path / f"host{n}", workers=2, overrides=overrides) for n in range(2)
        ]
        statuses = burst([host.port for host in hosts], CLIENTS_PER_WORKER)
        assert len(statuses) == 256
        assert statuses.count(200) == 100, sorted(set(statuses))
        assert statuses.count(429) == 156
        # The window is shared: any worker of any host now refuses, with the headers.
        status, headers, body = chat(hosts[1].port, LIMITED_TOKEN, {"messages": [user("x")]})
        assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert 1 <= int(headers["retry-after"]) <= 60
    finally:
        for host in hosts:
            host.stop()
        redis.stop()


# -- two applications, two keys, two hosts on one Redis -------------------------------


def keys_add(config: pathlib.Path, *argv: str) -> str:
    """``chatcompat keys add`` as a new user runs it: the token it prints."""
    done = subprocess.run(
        [str(CHATCOMPAT), "keys", "--config", str(config), "add", *argv],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith(("CHATCOMPAT_", "OPENCLAW_"))},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1].strip()


@pytest.fixture(scope="module")
def two_apps(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[t.Any]:
    directory = tmp_path_factory.mktemp("two-apps")
    redis = RedisServer(directory / "redis")
    redis.start()
    config = merged(
        base_config(directory),
        {
            "agents": {
                "list": [
                    {"id": "main", "default": True, "backend": "echo"},
                    {"id": "beta", "backend": "echo"},
                ]
            },
            "sessions": {"store": redis.url},
            "gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}},
        },
    )
    path = directory / "chatcompat.json5"
    path.write_text("// two applications\n" + json.dumps(config, indent=2))
    web = keys_add(path, "web", "--agents", "main")
    bot = keys_add(path, "bot", "--agents", "beta")
    assert "// two applications" in path.read_text() and web not in path.read_text()
    hosts = [start_server(directory / f"host{n}", workers=2, config_file=path) for n in range(2)]
    try:
        yield hosts, web, bot
    finally:
        for host in hosts:
            host.stop()
        redis.stop()


def test_two_keys_see_only_their_agents(two_apps: t.Any) -> None:
    hosts, web, bot = two_apps
    for host in hosts:
        _, _, models = request(host.port, "GET", "/v1/models", web)
        assert [m["id"] for m in models["data"]] == [
            "openclaw",
            "openclaw/default",
            "openclaw/main",
        ]
        _, _, models = request(host.port, "GET", "/v1/models", bot)
        assert [m["id"] for m in models["data"]] == ["openclaw/beta"]
        status, _, body = chat(host.port, web, {"model": "openclaw/beta", "messages": [user("x")]})
        assert status == 404 and body["error"]["code"] == "model_not_found"
        status, _, _ = chat(host.port, bot, {"messages": [user("x")]}, x_openclaw_agent_id="main")
        assert status == 404


def test_two_keys_cannot_reach_each_others_sessions_on_any_host(two_apps: t.Any) -> None:
    hosts, web, bot = two_apps
    status, headers, _ = chat(hosts[0].port, web, {"user": "alice", "messages": [user("web 1")]})
    assert status == 200
    web_key = headers["x-openclaw-session-key"]
    assert web_key == "agent:main:key:web:openai-user:alice"
    status, headers, _ = chat(
        hosts[1].port, bot, {"model": "openclaw/beta", "user": "alice", "messages": [user("bot 1")]}
    )
    bot_key = headers["x-openclaw-session-key"]
    assert bot_key == "agent:beta:key:bot:openai-user:alice"
    # Continued on the other host, the conversation is the same one (history of 1 turn).
    status, headers, _ = chat(hosts[1].port, web, {"user": "alice", "messages": [user("web 2")]})
    assert status == 200 and headers["x-openclaw-session-key"] == web_key
    for host in hosts:
        status, _, body = chat(
            host.port,
            bot,
            {"model": "openclaw/beta", "messages": [user("steal")]},
            x_openclaw_session_key=bot_key.replace(":bot:", ":web:"),
        )
        assert status == 404 and body["error"]["code"] == "session_not_found"
        status, _, body = chat(
            host.port,
            web,
            {"messages": [user("steal")]},
            x_openclaw_session_key=web_key.replace(":web:", ":bot:"),
        )
        assert status == 404 and body["error"]["code"] == "session_not_found"
    # Idempotency keys: the same string from two keys names two requests.
    replies = [
        chat(host.port, token, {"model": model, "messages": [user("same")]}, Idempotency_Key="k-1")
        for host, token, model in (
            (hosts[0], web, "openclaw/main"),
            (hosts[1], bot, "openclaw/beta"),
        )
    ]
    assert [r[0] for r in replies] == [200, 200]
    assert replies[0][2]["id"] != replies[1][2]["id"]
    out = subprocess.run(
        [str(CHATCOMPAT), "sessions", "--config", str(hosts[0].config_path), "list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    owners = {line.split()[0]: line.split()[2] for line in out.splitlines()[1:]}
    assert owners[web_key] == "web" and owners[bot_key] == "bot"


# -- a killed worker's run slot --------------------------------------------------------


def test_a_killed_workers_run_slot_frees_itself_within_the_lock_ttl(tmp_path: pathlib.Path) -> None:
    token = "one-run-token-0123456789"
    key = {
        "id": "onerun",
        "tokenSha256": hashlib.sha256(token.encode()).hexdigest(),
        "limits": {"concurrentRuns": 1},
    }
    overrides = {
        "gateway": {"auth": {"keys": [key]}},
        "agents": {"list": [{"id": "main", "default": True, "backend": "echo", "delayMs": 1000}]},
    }
    server = start_server(tmp_path / "slot", workers=1, overrides=overrides)
    try:
        body = {"messages": [user("one two three four five six seven eight nine ten")]}
        holder = threading.Thread(target=lambda: _swallow(chat, server.port, token, body))
        holder.start()
        time.sleep(1.0)  # the holder takes the one slot (its reply takes 9 s)
        status, headers, error = chat(server.port, token, {"messages": [user("x")]})
        assert status == 429 and headers["retry-after"] == "1"
        assert "concurrent runs" in error["error"]["message"]
        (pid,) = server.worker_pids()
        os.kill(pid, signal.SIGKILL)  # the run dies with its worker: no release
        killed_at = time.monotonic()
        holder.join()
        wait_until(
            lambda: server.worker_pids() and server.worker_pids() != [pid], 15, "a new worker"
        )
        assert chat(server.port, token, {"messages": [user("x")]})[0] == 429, "still held"
        wait_until(
            lambda: chat(server.port, token, {"messages": [user("x")]})[0] == 200,
            LOCK_TTL_SECONDS + 5,
            "the slot to expire",
            pause=0.5,
        )
        assert time.monotonic() - killed_at <= LOCK_TTL_SECONDS + 1
    finally:
        server.stop(check=False)


def _swallow(call: t.Callable[..., t.Any], *args: t.Any) -> None:
    try:
        call(*args)
    except (OSError, http.client.HTTPException):
        pass  # the worker was killed under it


def test_two_keys_cannot_reach_each_others_responses_on_any_host(two_apps: t.Any) -> None:
    hosts, web, bot = two_apps
    status, _, created = request(hosts[0].port, "POST", "/v1/responses", web, {"input": "plan"})
    assert status == 200
    response_id = created["id"]
    for host in hosts:
        path = f"/v1/responses/{response_id}"
        assert request(host.port, "GET", path, web)[0] == 200
        assert request(host.port, "GET", path, bot)[0] == 404
        assert request(host.port, "GET", path + "/input_items", bot)[0] == 404
        assert request(host.port, "DELETE", path, bot)[0] == 404
        status, _, body = request(
            host.port,
            "POST",
            "/v1/responses",
            bot,
            {"model": "openclaw/beta", "input": "go on", "previous_response_id": response_id},
        )
        assert status == 404 and body["error"]["code"] == "previous_response_not_found"
    status, headers, _ = request(
        hosts[1].port,
        "POST",
        "/v1/responses",
        web,
        {"input": "more", "previous_response_id": response_id},
    )
    assert status == 200 and headers["x-openclaw-session-key"].startswith("agent:main:key:web:")
