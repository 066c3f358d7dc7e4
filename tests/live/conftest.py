"""Live servers: ``chatcompat serve`` (real gunicorn, gevent or gthread workers) on free
loopback ports, and the raw HTTP tools the live tests read them with.

``live`` is one 2-worker gevent server shared by the whole live suite; ``make_server``
starts dedicated ones (a config that must differ) and stops them after the test.
Tests that could disturb the shared server's other clients (failed-auth lockout) use
their own loopback source address (``127.0.0.N``): the lockout is per client address.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import pathlib
import signal
import socket
import struct
import subprocess
import sys
import time
import typing as t

import pytest

from chatcompat.sessions import SQLiteStore
from tests.polling import wait_until  # noqa: F401  (the live modules import it from here)
from tests.scripted_agent import read_log

REPO = pathlib.Path(__file__).resolve().parents[2]
CHATCOMPAT = pathlib.Path(sys.executable).with_name("chatcompat")
TOKEN = "live-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCRIPTED = "tests.scripted_agent.ScriptedAgent"
CHAT = "/v1/chat/completions"
MAX_BODY_BYTES = 20000
KEEPALIVE_SECONDS = 0.3
STARTUP_SECONDS = 20.0
STOP_SECONDS = 15.0
CONNECTION_TRIES = 60  # fresh connections before concluding the kernel avoids a worker


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def base_config(directory: pathlib.Path) -> dict:
    return {
        "gateway": {
            "auth": {
                "mode": "token",
                "token": TOKEN,
                "rateLimit": {
                    "maxAttempts": 2,
                    "windowMs": 60000,
                    "lockoutMs": 60000,
                    "exemptLoopback": False,
                },
            },
            "http": {
                "sseKeepaliveSeconds": KEEPALIVE_SECONDS,
                "endpoints": {
                    "chatCompletions": {"enabled": True, "maxBodyBytes": MAX_BODY_BYTES},
                },
            },
        },
        "agents": {
            "list": [
                {"id": "main", "default": True, "backend": "echo"},
                {"id": "slow", "backend": "echo", "delayMs": 200},
                {"id": "scripted", "backend": SCRIPTED, "timeoutSeconds": 10},
            ],
        },
        "sessions": {"store": f"sqlite:///{directory}/sessions.db", "lockTimeoutSeconds": 30},
    }


def merged(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` merged in, recursively for objects (lists replace)."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _hex_address(ip: str, port: int) -> str:
    # /proc/net/tcp: the IPv4 address as a native-order 32-bit hex number, then the port.
    number = struct.unpack("=I", socket.inet_aton(ip))[0]
    return f"{number:08X}:{port:04X}"


class LiveServer:
    """A running ``chatcompat serve`` in its own process group."""

    def __init__(
        self,
        directory: pathlib.Path,
        config: dict | pathlib.Path,
        workers: int,
        worker_class: str,
        port: int | None = None,
    ):
        self.directory = directory
        self.workers_wanted = workers
        self.worker_class = worker_class
        if isinstance(config, dict):
            self.config_path = directory / "chatcompat.json5"
            self.config_path.write_text(json.dumps(config, indent=2))
        else:  # a file written by someone else (chatcompat init), used as is
            self.config_path = config
        self.log_path = directory / "server.log"
        self.agent_log = directory / "agent.log"
        self.store_path = directory / "sessions.db"
        self._fixed_port = port
        self.port = 0
        self.proc: subprocess.Popen | None = None

    # -- lifecycle ----------------------------------------------------------------

    def environ(self) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("CHATCOMPAT_", "OPENCLAW_", "GUNICORN_", "PROMETHEUS_"))
        }
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
            SCRIPTED_AGENT_LOG=str(self.agent_log),
            CHATCOMPAT_STATE_DIR=str(self.directory / "state"),
            CHATCOMPAT_GRACEFUL_TIMEOUT="5",
        )
        return env

    def start(self) -> None:
        for _ in range(3):  # another process may grab the free port before gunicorn binds
            self.port = self._fixed_port or free_port()
            argv = [
                str(CHATCOMPAT),
                "serve",
                "--config",
                str(self.config_path),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers_wanted),
                "--worker-class",
                self.worker_class,
            ]
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    argv,
                    cwd=REPO,
                    env=self.environ(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            if self._wait_ready():
                return
            if self._fixed_port or "already in use" not in self.log_tail():
                break
        self.stop(check=False)
        pytest.fail(f"chatcompat serve did not come up:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                status = get_status(self.port, "/healthz")
            except OSError:
                status = None
            if status == 200 and len(self.worker_pids()) == self.workers_wanted:
                return True
            time.sleep(0.05)
        return False

    def group_processes(self) -> list[str]:
        """Live (non-zombie) processes of the server's process group, as 'pid cmdline'."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
                cmdline = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            state, pgid = fields[0], int(fields[2])
            if pgid == self.proc.pid and state != "Z":
                command = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry} {command}")
        return found

    def stop(self, check: bool = True) -> None:
        """SIGTERM the master, wait, SIGKILL as a last resort; then no process of the
        group may be left."""
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                problems.append(f"the master ignored SIGTERM for {STOP_SECONDS:g} s")
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc is not None:
            deadline = time.monotonic() + 5
            while self.group_processes() and time.monotonic() < deadline:
                time.sleep(0.05)
            leftovers = self.group_processes()
            if leftovers:
                problems.append(f"processes left after the master exited: {leftovers}")
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if check and self.proc.returncode != 0:
                problems.append(f"the master exited with status {self.proc.returncode}")
        if check and problems:
            pytest.fail("; ".join(problems) + f"\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- introspection --------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        pids = []
        try:
            for task in os.listdir(f"/proc/{self.proc.pid}/task"):
                text = pathlib.Path(f"/proc/{self.proc.pid}/task/{task}/children").read_text()
                pids.extend(int(pid) for pid in text.split())
        except OSError:
            return []
        return sorted(pids)

    def worker_of(self, sock: socket.socket, timeout: float = 3.0) -> int:
        """The pid of the worker that accepted this client connection (from /proc)."""
        client_ip, client_port = sock.getsockname()[:2]
        server_ip, server_port = sock.getpeername()[:2]
        local, remote = _hex_address(server_ip, server_port), _hex_address(client_ip, client_port)

        def find() -> int | None:
            inodes = set()
            for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[1] == local and fields[2] == remote and fields[9] != "0":
                    inodes.add(f"socket:[{fields[9]}]")
            for pid in self.worker_pids():
                try:
                    for fd in os.listdir(f"/proc/{pid}/fd"):
                        try:
                            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                                return pid
                        except OSError:
                            continue
                except OSError:
                    continue
            return None

        return wait_until(find, timeout, "a worker to accept the connection")

    def connection(
        self, wanted: t.Callable[[int], bool] = lambda pid: True, source: str | None = None
    ) -> tuple[socket.socket, int]:
        """A fresh connection accepted by a worker for which ``wanted(pid)`` is true, and
        that worker's pid. Connections on other workers are closed unused."""
        for _ in range(CONNECTION_TRIES):
            sock = connect(self.port, source)
            worker = self.worker_of(sock)
            if wanted(worker):
                return sock, worker
            sock.close()
        pytest.fail(f"no connection landed on the wanted worker in {CONNECTION_TRIES} tries")

    def runs(self, session: str | None = None) -> list[dict]:
        """The scripted agent's log lines (start and end), optionally for one session."""
        lines = read_log(str(self.agent_log))
        return [line for line in lines if session is None or line["session"] == session]

    def wait_run_ends(self, session: str, count: int = 1, timeout: float = 5.0) -> list[dict]:
        def ends() -> list[dict]:
            found = [line for line in self.runs(session) if line["event"] == "end"]
            return found if len(found) >= count else []

        return wait_until(ends, timeout, f"{count} run end(s) of {session} in the agent log")

    def transcript(self, key: str) -> list[list[dict]]:
        """The stored turns of a session, read from the SQLite file like any other reader."""
        store = SQLiteStore(str(self.store_path))
        try:
            return [turn.messages for turn in store.transcript(key)]
        finally:
            store.close()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def start_server(
    directory: pathlib.Path,
    *,
    workers: int = 2,
    worker_class: str = "gevent",
    overrides: dict | None = None,
    config_file: pathlib.Path | None = None,
    port: int | None = None,
) -> LiveServer:
    """Start a server on the base config with ``overrides`` merged in, or on
    ``config_file`` as it is."""
    directory.mkdir(parents=True, exist_ok=True)
    config = config_file or merged(base_config(directory), overrides or {})
    server = LiveServer(directory, config, workers, worker_class, port)
    server.start()
    return server


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[LiveServer]:
    """The shared server: 2 gevent workers, the base config."""
    server = start_server(tmp_path_factory.mktemp("live-main"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gthread_live(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[LiveServer]:
    """Like ``live``, with gunicorn's gthread workers (started only when a test asks)."""
    server = start_server(tmp_path_factory.mktemp("live-gthread"), worker_class="gthread")
    yield server
    server.stop()


@pytest.fixture(params=["gevent", "gthread"])
def any_live(request: pytest.FixtureRequest) -> LiveServer:
    """The shared server of each worker class in turn."""
    return request.getfixturevalue("live" if request.param == "gevent" else "gthread_live")


def connect(port: int, source: str | None = None) -> socket.socket:
    """A new client connection (closed after the test)."""
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=15, source_address=(source, 0) if source else None
    )
    _OPEN_SOCKETS.append(sock)
    return sock


@pytest.fixture
def make_server(tmp_path: pathlib.Path) -> t.Iterator[t.Callable[..., LiveServer]]:
    """Start a dedicated server (stopped, and checked for leftovers, after the test)."""
    servers: list[LiveServer] = []

    def factory(name: str = "server", **kwargs: t.Any) -> LiveServer:
        server = start_server(tmp_path / name, **kwargs)
        servers.append(server)
        return server

    yield factory
    # Idle keep-alive connections would hold a gevent worker's shutdown for the whole
    # graceful timeout: the test's own connections go first.
    close_open_exchanges()
    for server in servers:
        server.stop()


# -- HTTP on a raw socket ------------------------------------------------------------------


def get_status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


class RawExchange:
    """One HTTP/1.1 request written byte by byte on a socket, its response read as it
    arrives: the status line and headers exactly as sent, the chunked body chunk by
    chunk with arrival times."""

    def __init__(
        self,
        port: int,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        *,
        source: str | None = None,
        timeout: float = 15.0,
        read: bool = True,
        sock: socket.socket | None = None,
    ) -> None:
        self.sock = sock or socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.file = self.sock.makefile("rb")
        _OPEN_EXCHANGES.append(self)  # closed after the test by close_exchanges
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        self.started = time.monotonic()
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        if read:
            self.read_head()

    def read_head(self) -> None:
        """Read the status line and the headers."""
        self.status_line = self.file.readline().decode("latin-1")
        assert self.status_line.startswith("HTTP/1.1 "), self.status_line
        self.status = int(self.status_line.split()[1])
        while True:
            line = self.file.readline().decode("latin-1")
            assert line.endswith("\r\n"), f"header line not CRLF-terminated: {line!r}"
            if line == "\r\n":
                break
            name, _, value = line[:-2].partition(":")
            self.headers.append((name, value.strip()))

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None

    def chunks(self) -> t.Iterator[tuple[bytes, float]]:
        """The chunked body, one (data, arrival monotonic time) per chunk."""
        assert self.header("Transfer-Encoding") == "chunked", self.headers
        while True:
            size_line = self.file.readline()
            assert size_line.endswith(b"\r\n"), size_line
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                assert self.file.readline() == b"\r\n"  # no trailers
                return
            data = self.file.read(size)
            assert len(data) == size and self.file.read(2) == b"\r\n"
            yield data, time.monotonic()

    def body(self) -> bytes:
        length = self.header("Content-Length")
        if length is not None:
            return self.file.read(int(length))
        return b"".join(data for data, _ in self.chunks())

    def frames(self) -> t.Iterator[tuple[str, float]]:
        """SSE frames (text between blank lines) as they complete, with arrival times."""
        buffer = b""
        for data, at in self.chunks():
            buffer += data
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                yield frame.decode("utf-8"), at
        assert buffer == b"", f"stream ended inside a frame: {buffer!r}"

    def close_after_contents(self, count: int) -> None:
        """Read until ``count`` content chunks (not the empty role chunk) arrived, then
        hang up: a client that leaves mid-stream."""
        seen = 0
        for frame, _ in self.frames():
            if '"content":"' in frame and '"content":""' not in frame:
                seen += 1
            if seen == count:
                break
        assert seen == count, f"the stream ended after {seen} content chunks"
        self.close()

    def json(self) -> t.Any:
        return json.loads(self.body())

    def close(self) -> None:
        self.file.close()
        self.sock.close()


_OPEN_EXCHANGES: list[RawExchange] = []
_OPEN_SOCKETS: list[socket.socket] = []


def close_open_exchanges() -> None:
    while _OPEN_EXCHANGES:
        _OPEN_EXCHANGES.pop().close()
    while _OPEN_SOCKETS:
        _OPEN_SOCKETS.pop().close()


@pytest.fixture(autouse=True)
def close_exchanges() -> t.Iterator[None]:
    yield
    close_open_exchanges()


def post_on(
    sock: socket.socket, body: dict | bytes, headers: dict[str, str] | None = None
) -> RawExchange:
    """POST /v1/chat/completions on an open connection (see LiveServer.connection)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    port = sock.getpeername()[1]
    return RawExchange(port, "POST", CHAT, sent, data, sock=sock)


def chat(
    port: int,
    body: dict | bytes,
    headers: dict[str, str] | None = None,
    *,
    auth: bool = True,
    source: str | None = None,
    read: bool = True,
) -> RawExchange:
    """POST /v1/chat/completions on a fresh connection (headers read unless ``read`` is
    false, body not yet)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {**(AUTH if auth else {}), "Content-Type": "application/json", **(headers or {})}
    return RawExchange(port, "POST", CHAT, sent, data, source=source, read=read)
