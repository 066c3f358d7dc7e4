"""A real ``redis-server`` for the tests, on a free loopback port, never the developer's.

No persistence (``--save "" --appendonly no``) unless ``persistent`` (an fsync'd
append-only file, so a SIGKILL loses nothing acknowledged), its own directory and log.
Tests may stop, kill, pause (SIGSTOP) and restart it on the same port to play an outage.
``require_binary`` fails under CI (``$CI`` set) when redis-server is missing, and
skips with the reason otherwise.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

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
