"""SIGHUP to the gunicorn master: a good file applies, a broken one changes nothing.

A reload never takes the gateway down: with a file that no longer validates the
master logs each problem and its new workers keep the last good config; streams that
are open during a reload finish on their old worker.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import signal
import typing as t

import pytest

from tests.live.conftest import AUTH
from tests.live.conftest import LiveServer
from tests.live.conftest import base_config
from tests.live.conftest import chat
from tests.live.conftest import close_open_exchanges
from tests.live.conftest import merged
from tests.live.conftest import user
from tests.live.conftest import wait_until
from tests.wire import parse_sse
from tests.wire import stream_text

pytestmark = pytest.mark.live

RELOAD_SECONDS = 30.0  # new workers booted and the old ones gone, on a loaded machine
SECRET = "sk-reload-secret-0123456789abcdef"


def models(port: int) -> list[str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/v1/models", headers={**AUTH, "Connection": "close"})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        return [entry["id"] for entry in json.loads(response.read())["data"]]
    finally:
        conn.close()


def reload(server: LiveServer, config: dict) -> set[int]:
    """Write ``config`` and SIGHUP the master; return the workers it had before."""
    before = set(server.worker_pids())
    server.config_path.write_text(json.dumps(config, indent=2))
    server.proc.send_signal(signal.SIGHUP)
    return before


def wait_workers_replaced(server: LiveServer, old: set[int]) -> None:
    def replaced() -> bool:
        if server.proc.poll() is not None:
            pytest.fail(f"the master exited ({server.proc.returncode}):\n{server.log_tail()}")
        pids = set(server.worker_pids())
        return len(pids) == server.workers_wanted and not pids & old

    wait_until(replaced, RELOAD_SECONDS, "the workers to be replaced after SIGHUP")


def config_lines(server: LiveServer) -> list[str]:
    return [
        line for line in server.log_path.read_text().splitlines() if "chatcompat: config:" in line
    ]


def test_a_broken_file_keeps_the_last_good_config_and_a_fixed_one_applies(make_server):
    server = make_server()
    good = base_config(server.directory)
    upstream = {
        "id": "up",
        "backend": "openai",
        "baseUrl": "http://127.0.0.1:9/v1",
        "model": "m",
        "apiKey": SECRET + "\n",
    }
    broken = merged(good, {"gateway": {"auth": {"mode": "tokn"}}})
    broken["agents"]["list"] = [
        {**good["agents"]["list"][0], "backend": "nope"},
        *good["agents"]["list"][1:],
        upstream,
    ]
    old = reload(server, broken)

    expected = [
        "agents.list[0].backend: unknown backend 'nope'",
        "agents.list[3].apiKey: has control characters or leading/trailing whitespace",
        "gateway.auth.mode: 'tokn' is not one of",
    ]

    def logged() -> bool:
        if server.proc.poll() is not None:
            pytest.fail(f"the master exited ({server.proc.returncode}):\n{server.log_tail()}")
        lines = config_lines(server)
        return all(any(problem in line for line in lines) for problem in expected)

    wait_until(logged, RELOAD_SECONDS, f"the problems of the new file in the log: {expected}")
    # One line per problem, each naming its key path.
    lines = config_lines(server)
    for problem in expected:
        assert len([line for line in lines if problem in line]) == 1, lines
    wait_workers_replaced(server, old)

    # The new workers serve the last good config.
    assert "openclaw/up" not in models(server.port)
    exchange = chat(server.port, {"model": "openclaw/main", "messages": [user("still here")]})
    assert exchange.status == 200
    assert exchange.json()["choices"][0]["message"]["content"] == "still here"
    close_open_exchanges()
    assert SECRET[:12] not in server.log_path.read_text()

    # The file is fixed (and an agent added): the next SIGHUP applies it.
    fixed = merged(good, {})
    fixed["agents"]["list"] = [*good["agents"]["list"], {"id": "added", "backend": "echo"}]
    old = reload(server, fixed)
    wait_workers_replaced(server, old)
    assert "openclaw/added" in models(server.port)
    exchange = chat(server.port, {"model": "openclaw/added", "messages": [user("new agent")]})
    assert exchange.status == 200
    assert exchange.json()["choices"][0]["message"]["content"] == "new agent"


class _PatientServer(LiveServer):
    """Streams get 60 s to finish after SIGHUP: the test must not race the cut."""

    def environ(self) -> dict[str, str]:
        return {**super().environ(), "CHATCOMPAT_GRACEFUL_TIMEOUT": "60"}


@pytest.fixture
def patient_server(tmp_path: pathlib.Path) -> t.Iterator[LiveServer]:
    directory = tmp_path / "patient"
    directory.mkdir()
    server = _PatientServer(directory, base_config(directory), 2, "gevent")
    server.start()
    yield server
    close_open_exchanges()  # an idle keep-alive connection would hold the shutdown
    server.stop()


def test_a_stream_open_across_a_good_reload_finishes(patient_server):
    server = patient_server
    words = [f"w{index}" for index in range(30)]
    body = {
        "model": "openclaw/scripted",
        "stream": True,
        "messages": [user("[[slow:100]] " + " ".join(words))],
    }
    exchange = chat(server.port, body)
    assert exchange.status == 200
    serving = server.worker_of(exchange.sock)
    received = b""
    chunks = exchange.chunks()
    while b'"content":"w0"' not in received:
        received += next(chunks)[0]

    config = base_config(server.directory)
    config["agents"]["list"].append({"id": "added", "backend": "echo"})
    reload(server, config)
    received += b"".join(data for data, _ in chunks)

    parsed, _ = parse_sse(received)
    assert stream_text(parsed) == " ".join(words)
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"
    close_open_exchanges()
    # The worker that served it was retired, and the new config is served.
    wait_until(lambda: serving not in server.worker_pids(), RELOAD_SECONDS, "the old worker")
    assert "openclaw/added" in models(server.port)
