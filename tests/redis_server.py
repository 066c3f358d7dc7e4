"""A real ``redis-server`` for the tests, on a free loopback port, never the developer's.

No persistence (``--save "" --appendonly no``) unless ``persistent`` (an fsync'd
append-only file, so a SIGKILL loses nothing acknowledged), its own directory and log.
Tests may stop, kill, pause (SIGSTOP) and restart it on the same port to play an outage.
``require_binary`` fails under CI (``$CI`` set) when redis-server is missing, and
skips with the reason otherwise.

:class:`SentinelGroup` is a primary, its replicas and three sentinels
(``redis-server --sentinel``, the same binary: no extra package), all on loopback,
with a short ``down-after-milliseconds`` so a failover takes seconds (2 s: at 1 s a
loaded machine sees spurious failovers, a sentinel that has just switched to a new
primary declaring it down before its first ping came back).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
import typing as t

import pytest
import redis

START_SECONDS = 10.0


def require_binary(name: str, package: str) -> str:
    """The path of the program ``name``; fail under CI, skip elsewhere, when absent."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path:
        return path
    reason = f"{name} is not installed (apt-get install {package}; .ci/run does it)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run these tests: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One ``redis-server`` process; :meth:`start` it, :meth:`stop` it at the end."""

    def __init__(self, directory: pathlib.Path, *, persistent: bool = False) -> None:
        self.binary = require_binary("redis-server", "redis-server")
        self.persistent = persistent
        # The primary's port when this server starts as its replica (redis-server
        # --replicaof); a sentinel may change the role later.
        self.replica_of: int | None = None
        self.extra_args: list[str] = []
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same port once it had one) and wait for PING."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        for _ in range(3):  # somebody may take the free port before redis binds it
            self.port = self.port or free_port()
            argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
            argv += ["--save", "", "--dir", str(self.directory)]
            if self.persistent:
                argv += ["--appendonly", "yes", "--appendfsync", "always"]
            else:
                argv += ["--appendonly", "no"]
            argv += ["--logfile", str(self.directory / "redis.log"), "--daemonize", "no"]
            if self.replica_of:
                argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
            argv += self.extra_args
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
            if self._wait_ready():
                return
            self.kill()
            if "Address already in use" not in self.log_tail():
                break
            self.port = 0
        pytest.fail(f"redis-server did not start:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with self.client() as client:
                    if client.ping():
                        return True
            except redis.RedisError:
                time.sleep(0.02)
        return False

    def client(self) -> redis.Redis:
        """A plain redis-py client for inspection (use it as a context manager)."""
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 5 s)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # in case a test left it paused
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but nothing answers."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.directory / "redis.log").read_text(errors="replace")
        except OSError:
            return "(no redis log)"
        return "\n".join(text.splitlines()[-lines:])


SENTINEL_CONF = """\
port {port}
bind 127.0.0.1
daemonize no
dir {directory}
logfile {directory}/sentinel.log
sentinel resolve-hostnames no
sentinel monitor {service} 127.0.0.1 {primary} 2
sentinel down-after-milliseconds {service} {down_after_ms}
sentinel failover-timeout {service} 10000
sentinel parallel-syncs {service} 1
"""


class RedisSentinel:
    """One sentinel (``redis-server --sentinel``) watching ``service``."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.binary = require_binary("redis-server", "redis-server")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, service: str, primary: int, down_after_ms: int) -> None:
        for _ in range(3):
            self.port = free_port()
            conf = self.directory / "sentinel.conf"  # sentinels rewrite their file
            conf.write_text(
                SENTINEL_CONF.format(
                    port=self.port,
                    directory=self.directory,
                    service=service,
                    primary=primary,
                    down_after_ms=down_after_ms,
                )
            )
            argv = [self.binary, str(conf), "--sentinel"]
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
            if _wait_until_answers(self.proc, self.client):
                return
            self.stop()
        pytest.fail(f"redis sentinel did not start:\n{self.log_tail()}")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def primary_port(self, service: str) -> int:
        with self.client() as client:
            _, port = client.sentinel_get_master_addr_by_name(service)
        return int(port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.directory / "sentinel.log").read_text(errors="replace")
        except OSError:
            return "(no sentinel log)"
        return "\n".join(text.splitlines()[-lines:])


def _wait_until_answers(proc: subprocess.Popen[bytes], client: t.Callable[[], redis.Redis]) -> bool:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with client() as conn:
                if conn.ping():
                    return True
        except redis.RedisError:
            time.sleep(0.02)
    return False


class SentinelGroup:
    """A primary, ``replicas`` replicas and three sentinels that promote a replica
    when the primary dies (quorum 2). Servers keep their ports across restarts."""

    SERVICE = "mymaster"

    def __init__(self, directory: pathlib.Path, *, replicas: int = 1, down_after_ms: int = 2000):
        self.down_after_ms = down_after_ms
        self.servers = [RedisServer(directory / f"redis{n}") for n in range(1 + replicas)]
        for server in self.servers:
            # Diskless full syncs start at once, not after the default 5 s spent waiting
            # for more replicas: a restarted replica confirms writes again sooner.
            server.extra_args = ["--repl-diskless-sync-delay", "0"]
        self.sentinels = [RedisSentinel(directory / f"sentinel{n}") for n in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def start(self) -> None:
        primary = self.servers[0]
        primary.start()
        for server in self.servers[1:]:
            server.replica_of = primary.port
            server.start()
        self.wait_replicas_online(primary, len(self.servers) - 1)
        for sentinel in self.sentinels:
            sentinel.start(self.SERVICE, primary.port, self.down_after_ms)
        # Every sentinel must know every replica and its peers before a failover can
        # be voted on.
        self.wait_for(self._sentinels_ready, "the sentinels to see the replicas and each other")

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                state = client.sentinel_master(self.SERVICE)
                if int(state["num-slaves"]) < len(self.servers) - 1:
                    return False
                if int(state["num-other-sentinels"]) < len(self.sentinels) - 1:
                    return False
        return True

    def primary(self) -> RedisServer:
        """The server the sentinels name as primary now."""
        port = self.sentinels[0].primary_port(self.SERVICE)
        return next(server for server in self.servers if server.port == port)

    def wait_for(self, condition: t.Callable[[], t.Any], what: str, timeout: float = 30.0) -> t.Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = condition()
            except (redis.RedisError, StopIteration):
                found = None
            if found:
                return found
            time.sleep(0.05)
        logs = "\n".join(sentinel.log_tail(8) for sentinel in self.sentinels)
        pytest.fail(f"timed out waiting for {what}:\n{logs}")

    def wait_replicas_online(self, primary: RedisServer, count: int, timeout: float = 30.0) -> None:
        def online() -> bool:
            with primary.client() as client:
                info = client.info("replication")
            found = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            return sum(1 for replica in found if replica.get("state") == "online") >= count

        self.wait_for(online, f"{count} replica(s) of port {primary.port} online", timeout)

    def fail_over(self) -> tuple[RedisServer, RedisServer, float]:
        """SIGKILL the primary, wait for the sentinels to promote a replica, restart
        the killed server as a replica of the new primary (as a supervisor would) and
        wait until it is in sync.

        :return: the old and the new primary, and the seconds from the kill to the
            promotion as every sentinel reports it.
        """
        old = self.primary()
        old.kill()
        killed = time.monotonic()

        def promoted() -> RedisServer | None:
            ports = {sentinel.primary_port(self.SERVICE) for sentinel in self.sentinels}
            if len(ports) != 1 or old.port in ports:
                return None
            return next(server for server in self.servers if server.port in ports)

        new = self.wait_for(promoted, "a replica to be promoted")
        promotion = time.monotonic() - killed
        # No persistence here: restarted as a replica of the new primary from the
        # start, it can never come back as an empty primary.
        old.replica_of = new.port
        old.start()
        self.wait_replicas_online(new, len(self.servers) - 1)
        return old, new, promotion

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.stop()
