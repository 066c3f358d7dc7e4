"""Harness of the multi-host tests: real nginx, running the repository's own
``deploy/nginx.conf``, in front of ``chatcompat serve`` hosts that share one real
``redis-server``.

nginx runs in the foreground (``daemon off``) from a throwaway prefix directory with
its own pid file, logs and temp paths, on a free loopback port: it never touches the
system's nginx, and systemd plays no part. The sample is included as it is, except
for its upstream ``server`` lines and its ``listen`` line, which point at the test's
ports. The surrounding ``http {}`` is as unfriendly to streams as a tuned distro
config: compression on for every type. (nginx 1.22 relays chunks as they come even
with ``proxy_buffering on``; what holds a stream back is an output filter such as
gzip, so it takes both for the sample's own settings to be what keeps SSE flowing.)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import http.client
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import time
import typing as t

import pytest

from chatcompat.sessions.redis_store import RedisStore
from tests.live.conftest import REPO
from tests.live.conftest import LiveServer
from tests.live.conftest import RawExchange
from tests.live.conftest import chat
from tests.live.conftest import free_port
from tests.live.conftest import start_server
from tests.live.conftest import user
from tests.redis_server import RedisServer
from tests.redis_server import SentinelGroup
from tests.redis_server import require_binary

NGINX_SAMPLE = REPO / "deploy" / "nginx.conf"
START_SECONDS = 15.0
AGENT = "scripted"  # tests.scripted_agent.ScriptedAgent in the live base config

MAIN_CONF = """\
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 512; }}
http {{
    log_format hosts '$remote_addr "$request" $status upstream=$upstream_addr '
                     'xff="$http_x_forwarded_for"';
    access_log {prefix}/access.log hosts;
    gzip on;
    gzip_types *;
    gzip_min_length 1;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/chatcompat.conf;
}}
"""

_UPSTREAM_LINE = re.compile(r"^( +)server 127\.0\.0\.1:\d+( [^;]*)?;\n", re.MULTILINE)
_LISTEN_LINE = "    listen 8080;\n"


def render_sample(upstream_ports: list[int], listen_port: int) -> str:
    """``deploy/nginx.conf`` aimed at the test's hosts and port."""
    text = NGINX_SAMPLE.read_text()
    lines = list(_UPSTREAM_LINE.finditer(text))
    assert len(lines) == 2 and text.count(_LISTEN_LINE) == 1, "deploy/nginx.conf changed shape"
    indent, options = lines[0].group(1), lines[0].group(2) or ""
    servers = "".join(f"{indent}server 127.0.0.1:{port}{options};\n" for port in upstream_ports)
    text = text[: lines[0].start()] + servers + text[lines[-1].end() :]
    return text.replace(_LISTEN_LINE, f"    listen 127.0.0.1:{listen_port};\n")


class Nginx:
    """A foreground nginx on a free loopback port in front of ``upstream_ports``."""

    def __init__(self, upstream_ports: list[int]) -> None:
        self.binary = require_binary("nginx", "nginx")
        self.upstream_ports = upstream_ports
        # Under /tmp and world-traversable: when the tests run as root, nginx's workers
        # run as "nobody" and must reach their temp directories.
        self.prefix = pathlib.Path(tempfile.mkdtemp(prefix="cc-nginx-"))
        os.chmod(self.prefix, 0o755)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for _ in range(3):  # somebody may take the free port before nginx binds it
            self.port = free_port()
            site = render_sample(self.upstream_ports, self.port)
            (self.prefix / "chatcompat.conf").write_text(site)
            (self.prefix / "nginx.conf").write_text(MAIN_CONF.format(prefix=self.prefix))
            argv = [self.binary, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf")]
            argv += ["-e", str(self.prefix / "error.log")]
            with open(self.prefix / "stderr.log", "ab") as log:
                self.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if self._wait_ready():
                return
            self.stop(keep_files=True)
            if "Address already in use" not in self.log_tail():
                break
        pytest.fail(f"nginx did not start:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                if get(self.port, "/healthz")[0] == 200:  # proxied to a host
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self, keep_files: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # fast shutdown: open client connections are cut
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if not keep_files:
            shutil.rmtree(self.prefix, ignore_errors=True)

    def access_log(self) -> list[str]:
        try:
            return (self.prefix / "access.log").read_text().splitlines()
        except OSError:
            return []

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for name in ("stderr.log", "error.log"):
            try:
                text = (self.prefix / name).read_text(errors="replace")
            except OSError:
                continue
            parts.append("\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts) or "(no nginx log)"


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def host_overrides(redis_url: str, **sessions: t.Any) -> dict[str, t.Any]:
    """The config every host gets: the shared Redis, nginx (loopback) trusted."""
    return {
        "gateway": {
            "trustedProxies": ["127.0.0.1"],
            "auth": {
                "rateLimit": {
                    "maxAttempts": 3,
                    "windowMs": 60000,
                    "lockoutMs": 60000,
                    # The hosts see nginx's loopback address: the client is the
                    # X-Forwarded-For hop, which is not loopback in these tests.
                    "exemptLoopback": True,
                },
            },
        },
        "sessions": {"store": redis_url, **sessions},
    }


@dataclasses.dataclass
class Cluster:
    """One Redis, the gateway hosts sharing it, nginx in front of them."""

    redis: RedisServer
    hosts: list[LiveServer]
    nginx: Nginx

    def store(self) -> RedisStore:
        """A store on the shared Redis, as any host sees it (close it after use)."""
        return RedisStore(self.redis.url)

    def transcript(self, key: str) -> list[list[dict[str, t.Any]]]:
        with self.store() as store:
            return [turn.messages for turn in store.transcript(key)]

    def starts(self, key: str) -> list[tuple[int, dict[str, t.Any]]]:
        """(host index, agent "start" line) for every run of the session, per host."""
        return [
            (index, line)
            for index, host in enumerate(self.hosts)
            for line in host.runs(key)
            if line["event"] == "start"
        ]

    def stop(self) -> None:
        self.nginx.stop()
        for host in self.hosts:
            host.stop(check=host.proc is not None and host.proc.returncode in (None, 0))
        self.redis.stop()


def start_cluster(
    directory: pathlib.Path, hosts: int = 2, *, persistent_redis: bool = False, **sessions: t.Any
) -> Cluster:
    """Redis, then ``hosts`` gateway hosts (2 gevent workers each, started together),
    then nginx over them. ``sessions`` go into each host's ``sessions`` config."""
    # Skip (or fail, under CI) before anything starts: a skip after would leave the
    # Redis and the hosts running.
    require_binary("nginx", "nginx")
    redis = RedisServer(directory / "redis", persistent=persistent_redis)
    redis.start()
    overrides = host_overrides(redis.url, **sessions)
    with concurrent.futures.ThreadPoolExecutor(hosts) as pool:
        futures = [
            pool.submit(start_server, directory / f"host{n}", workers=2, overrides=overrides)
            for n in range(hosts)
        ]
        servers = [future.result() for future in futures]
    nginx = Nginx([server.port for server in servers])
    nginx.start()
    return Cluster(redis, servers, nginx)


@dataclasses.dataclass
class SentinelCluster:
    """A Sentinel group (primary, replica, three sentinels), the gateway hosts using
    it through a ``redis+sentinel://`` URL, nginx in front of them."""

    group: SentinelGroup
    hosts: list[LiveServer]
    nginx: Nginx

    def store(self) -> RedisStore:
        """A store on the group's current primary (close it after use)."""
        return RedisStore(self.group.url)

    def stop(self) -> None:
        self.nginx.stop()
        for host in self.hosts:
            host.stop(check=host.proc is not None and host.proc.returncode in (None, 0))
        self.group.stop()


def start_sentinel_cluster(
    directory: pathlib.Path, hosts: int = 2, **sessions: t.Any
) -> SentinelCluster:
    """:func:`start_cluster` with a :class:`SentinelGroup` for the store."""
    require_binary("nginx", "nginx")
    group = SentinelGroup(directory / "sentinel-group")
    try:
        group.start()
        overrides = host_overrides(group.url, **sessions)
        with concurrent.futures.ThreadPoolExecutor(hosts) as pool:
            futures = [
                pool.submit(start_server, directory / f"host{n}", workers=2, overrides=overrides)
                for n in range(hosts)
            ]
            servers = [future.result() for future in futures]
        nginx = Nginx([server.port for server in servers])
        nginx.start()
    except BaseException:
        group.stop()
        raise
    return SentinelCluster(group, servers, nginx)


def session_key(name: str) -> str:
    return f"agent:{AGENT}:openai-user:{name.lower()}"


def ask(
    port: int,
    name: str,
    text: str,
    *,
    stream: bool = False,
    headers: dict[str, str] | None = None,
    auth: bool = True,
) -> RawExchange:
    """One turn of user ``name`` on the scripted agent (headers read, body not yet)."""
    body = {"model": f"openclaw/{AGENT}", "user": name, "messages": [user(text)]}
    if stream:
        body["stream"] = True
    return chat(port, body, headers, auth=auth)


def read_stream(exchange: RawExchange) -> tuple[list[str], bool]:
    """The SSE frames of a chunked body until it ends or the connection drops.

    :return: the frames, and whether the body ended properly (its last chunk came).
    """
    frames: list[str] = getattr(exchange, "_pending_frames", [])  # read by read_frame
    exchange._pending_frames = []  # type: ignore[attr-defined]
    buffer = b""
    while True:
        size_line = exchange.file.readline()
        if not size_line.endswith(b"\r\n"):
            return frames, False
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            exchange.file.readline()
            return frames, True
        data = exchange.file.read(size + 2)
        if len(data) < size + 2:
            return frames, False
        buffer += data[:-2]
        while b"\n\n" in buffer:
            frame, buffer = buffer.split(b"\n\n", 1)
            frames.append(frame.decode("utf-8"))


def read_frame(exchange: RawExchange) -> str:
    """The next SSE data frame, keepalive comments skipped (for reading a stream a
    little at a time; :func:`read_stream` reads the rest)."""
    while True:
        frame = _next_frame(exchange)
        if frame != ": keepalive":
            return frame


def _next_frame(exchange: RawExchange) -> str:
    pending = getattr(exchange, "_pending_frames", None)
    if pending:
        return pending.pop(0)
    buffer = b""
    while b"\n\n" not in buffer:
        size = int(exchange.file.readline().split(b";")[0], 16)
        assert size > 0, "the stream ended"
        buffer += exchange.file.read(size)
        assert exchange.file.read(2) == b"\r\n"
    frames = [frame.decode("utf-8") for frame in buffer.split(b"\n\n")]
    assert frames[-1] == "", "a frame was split across chunks"
    exchange._pending_frames = frames[1:-1]  # type: ignore[attr-defined]
    return frames[0]
