"""gunicorn settings for chatcompat: gevent workers, bind from the config file.

Used by ``chatcompat serve`` (``-c python:chatcompat.gunicorn_config``) and, through
the top-level ``gunicorn.conf.py``, by a plain ``gunicorn wsgi:app`` in a checkout.

Environment (``CHATCOMPAT_*`` wins over ``GUNICORN_*``):
    CHATCOMPAT_CONFIG              the config file (else the usual discovery)
    CHATCOMPAT_BIND                host:port, overrides gateway.bind/gateway.port
    CHATCOMPAT_WORKERS             worker processes [number of CPUs]
    CHATCOMPAT_WORKER_CLASS        gevent [default] or gthread
    CHATCOMPAT_WORKER_CONNECTIONS  open connections (streams) per worker [4096]
    CHATCOMPAT_GRACEFUL_TIMEOUT    seconds running streams get on shutdown [60]
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
import typing as t


def _env(name: str, default: str) -> str:
    return os.environ.get(f"CHATCOMPAT_{name}") or os.environ.get(f"GUNICORN_{name}") or default


# Metrics: every worker writes its samples under one directory that /metrics sums.
# It must be set before any worker imports prometheus_client, so here, in the master.
_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="chatcompat-metrics-")
_METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]

from chatcompat import reloading  # noqa: E402  (after the env setup above)
from chatcompat.config import ConfigError  # noqa: E402

# The master reads the config; the workers serve what it accepted (chatcompat.reloading).
try:
    _settings = reloading.load_initial()
except ConfigError as exc:
    for problem in exc.problems:
        print(f"chatcompat: config: {problem}", file=sys.stderr)
    raise SystemExit(2) from None

# Server socket
_host = _settings.bind
bind = [f"[{_host}]:{_settings.port}" if ":" in _host else f"{_host}:{_settings.port}"]
backlog = 2048

# Workers
# gevent and gthread are gunicorn's workers answering its HTTP parser's errors as JSON
# (chatcompat/gunicorn_workers.py); any other value goes to gunicorn as it is.
_WORKER_CLASSES = {
    "gevent": "chatcompat.gunicorn_workers.GeventWorker",
    "gthread": "chatcompat.gunicorn_workers.ThreadWorker",
}
_worker_class = _env("WORKER_CLASS", "gevent")
worker_class = _WORKER_CLASSES.get(_worker_class, _worker_class)
workers = int(_env("WORKERS", str(os.cpu_count() or 1)))
threads = int(_env("THREADS", "32"))  # gthread only: concurrent requests per worker
# Every open SSE stream holds one connection: this caps streams per worker.
worker_connections = int(_env("WORKER_CONNECTIONS", "4096"))
preload_app = False  # gevent patches after fork; nothing may open sockets in the master
proc_name = "chatcompat"
# gunicorn's control socket has one fixed default path per user: two gateways on
# one host would fight over it, and nothing here uses it.
control_socket_disable = True

# Timeouts
timeout = int(_env("TIMEOUT", "30"))  # worker heartbeat, not a request limit under gevent
# On SIGTERM/SIGHUP running streams get this long to finish, then they are cut.
graceful_timeout = int(_env("GRACEFUL_TIMEOUT", "60"))
keepalive = int(_env("KEEPALIVE", "15"))

# Logging: chatcompat writes one structured line per request itself.
accesslog = None
errorlog = "-"
loglevel = _env("LOGLEVEL", "info")


def _raise_fd_limit() -> None:
    # Each stream holds the client's socket and, with an upstream backend (openai),
    # an upstream socket too: allow two per connection plus headroom.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * worker_connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))


_raise_fd_limit()

# A response's head goes out in the same send() as its first body bytes (one syscall
# per JSON reply instead of two); see chatcompat/gunicorn_response.py.
from chatcompat import gunicorn_response  # noqa: E402

_ONE_WRITE_RESPONSES = gunicorn_response.install()


def on_starting(server: t.Any) -> None:
    if not _ONE_WRITE_RESPONSES:
        # Said once, by the master: every worker forks from this state.
        server.log.warning(
            "chatcompat: this gunicorn's HTTP response has no _emit_body hook; "
            "response heads go out in their own send() (slower, same bytes)"
        )
    # Samples of a previous run would be summed with ours.
    for name in os.listdir(_METRICS_DIR):
        path = os.path.join(_METRICS_DIR, name)
        if name.endswith(".db"):
            os.unlink(path)


def on_reload(server: object) -> None:
    # SIGHUP, before the new workers are forked: a file that no longer validates is
    # logged and the workers keep the last good config (gunicorn would halt on them).
    reloading.reload(server.log)  # type: ignore[attr-defined]


def child_exit(server: object, worker: object) -> None:
    from chatcompat import metrics

    metrics.worker_exited(worker.pid)  # type: ignore[attr-defined]


def worker_exit(server: object, worker: object) -> None:
    app = getattr(worker, "wsgi", None)
    gateway = getattr(app, "extensions", {}).get("chatcompat")
    if gateway is not None:
        gateway.close()


def on_exit(server: object) -> None:
    if _OWN_METRICS_DIR:
        shutil.rmtree(_METRICS_DIR, ignore_errors=True)
