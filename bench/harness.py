"""What bench/run.py and bench/capacity.py share: starting the mock upstream and
``chatcompat serve``, and reading a process tree's CPU time and memory from /proc."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pathlib
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing as t

BENCH = pathlib.Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
TOKEN = "bench-token-0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's RLIMIT_NOFILE (children inherit it); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):  # only root may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            soft, hard = wanted, wanted
    if soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


# -- /proc -------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def cpu_seconds(pids: t.Iterable[int]) -> float:
    """user + system CPU time of these processes (all their threads)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def rss_bytes(pids: t.Iterable[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
    return total


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


# -- servers -----------------------------------------------------------------------------


def wait_http(
    port: int, path: str, timeout: float = 30.0, proc: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answered on port {port} within {timeout:g} s")
        time.sleep(0.05)


class Mock:
    """bench/mock_upstream.py in its own process."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [PYTHON, str(BENCH / "mock_upstream.py"), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
        )
        wait_http(self.port, "/v1/models", proc=self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def stop(self) -> None:
        stop(self.proc)


def gateway_config(directory: pathlib.Path, upstream: str, slow_model: str) -> dict:
    return {
        "gateway": {
            "auth": {"mode": "token", "token": TOKEN, "rateLimit": False},
            "http": {
                "endpoints": {
                    "chatCompletions": {"enabled": True},
                    "responses": {"enabled": True},  # bench/run.py's /v1/responses rows
                }
            },
        },
        "agents": {
            "list": [
                {
                    "id": "main",
                    "default": True,
                    "backend": "openai",
                    "baseUrl": f"{upstream}/v1",
                    "model": "mock",
                },
                # The capacity run: the upstream sends one word per second.
                {
                    "id": "slow",
                    "backend": "openai",
                    "baseUrl": f"{upstream}/v1",
                    "model": slow_model,
                    "timeoutSeconds": 600,
                },
            ],
        },
        "sessions": {"store": f"sqlite:///{directory}/sessions.db"},
    }


def chatcompat_command() -> list[str]:
    script = pathlib.Path(PYTHON).with_name("chatcompat")
    if script.exists():
        return [str(script)]
    return [PYTHON, "-c", "import sys; from chatcompat.cli import main; sys.exit(main())"]


class Gateway:
    """``chatcompat serve`` (gunicorn, gevent workers) with the openai backend."""

    def __init__(
        self,
        upstream: str,
        *,
        workers: int = 2,
        worker_connections: int | None = None,
        slow_model: str = "mock-30-1000",
        log_path: pathlib.Path | None = None,
    ) -> None:
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="chatcompat-bench-"))
        self.port = free_port()
        config = self.dir / "chatcompat.json5"
        config.write_text(json.dumps(gateway_config(self.dir, upstream, slow_model), indent=2))
        env = dict(os.environ)
        for name in list(env):
            if name.startswith(("CHATCOMPAT_", "GUNICORN_", "PROMETHEUS_")):
                del env[name]
        env["CHATCOMPAT_STATE_DIR"] = str(self.dir)
        env["CHATCOMPAT_WORKER_CLASS"] = "gevent"
        if worker_connections:
            env["CHATCOMPAT_WORKER_CONNECTIONS"] = str(worker_connections)
        self.log_path = log_path or self.dir / "gateway.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            chatcompat_command()
            + [
                "serve",
                "--config",
                str(config),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            start_new_session=True,
        )
        self.workers = workers
        wait_http(self.port, "/readyz", timeout=60, proc=self.proc)
        deadline = time.monotonic() + 30
        while len(self.worker_pids()) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway's workers did not start")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid)

    def pids(self) -> list[int]:
        return tree(self.proc.pid)

    def stop(self) -> None:
        stop(self.proc, group=True)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def stop(proc: subprocess.Popen, group: bool = False) -> None:
    if proc.poll() is not None:
        return
    try:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(timeout=20)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        proc.wait()


def load(
    url: str,
    *,
    stream: bool,
    concurrency: int,
    duration: float,
    model: str = "openclaw",
    token: str | None = TOKEN,
    extra: list[str] | None = None,
    api: str = "chat",
) -> dict:
    """Run bench/load.py once (closed loop) in its own process; its JSON result.
    ``api``: ``chat`` (/v1/chat/completions) or ``responses`` (/v1/responses)."""
    argv = [
        PYTHON,
        str(BENCH / "load.py"),
        "--url",
        url,
        "--model",
        model,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
    ]
    if token:
        argv += ["--token", token]
    if stream:
        argv.append("--stream")
    if api != "chat":
        argv += ["--api", api]
    out = subprocess.run(argv + (extra or []), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measured_load(url: str, pids: t.Iterable[int], **load_options: t.Any) -> dict:
    """:func:`load` once, with the CPU the processes ``pids`` spent meanwhile (user +
    system, seconds) in the result's ``server_cpu_s``."""
    pids = list(pids)
    before = cpu_seconds(pids)
    result = load(url, **load_options)
    result["server_cpu_s"] = cpu_seconds(pids) - before
    return result
