"""One ``pi --mode rpc`` child process: spawn, readiness, JSON lines both ways, stop.

pi reads one JSON command per line on stdin and writes one JSON object per line on
stdout: responses (``type: "response"``, matched by the ``id`` we sent) and events.
It has no ready event: the answer to a ``get_state`` sent at spawn time is the sign
that it has started (commands sent earlier wait inside pi until then).

A reader (a greenlet under gevent workers, a thread otherwise) drains stdout all the
time, so pi never blocks on a full pipe, and queues the parsed lines. Streamed
``message_update`` lines carry two snapshots of the whole reply so far, so the
volume grows with the square of the reply: those lines are cut before their first
``,"partial":`` key (a JSON string cannot hold a bare ``"``, so that is always the
structural key) and only the small head is parsed. ``turn_end`` and ``agent_end``
repeat the run's messages and are not parsed at all.

The child runs in its own process group (tools may start children); stopping it
closes stdin (pi exits at once), then signals the group. The reader reaps the child
when stdout ends, so no zombie is left whichever way it went.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import pathlib
import queue
import signal
import subprocess
import threading
import time
import typing as t

from ..base import AgentError

log = logging.getLogger(__name__)

STDERR_TAIL_BYTES = 2000
_UPDATE = b'{"type":"message_update",'
_PARTIAL = b',"partial":'
_AGENT_END = (b'{"type":"agent_end",', b'{"type":"agent_end"}')
_TURN_END = (b'{"type":"turn_end",', b'{"type":"turn_end"}')

# One JSON object of pi's RPC protocol: a command sent, or a line it printed.
RpcLine = dict[str, t.Any]


class ProcessGone(AgentError):
    """The pi process exited (or its pipes broke)."""


class _Exited:
    """Queued by the reader after the last line: stdout has ended."""


_EXITED = _Exited()


def parse_line(line: bytes) -> RpcLine | None:
    """One stdout line as a dict (None for lines nobody needs, or that are not JSON).

    ``message_update`` lines keep only ``type`` and ``assistantMessageEvent`` without
    its ``partial`` snapshot; ``agent_end`` becomes ``{"type": "agent_end"}``.
    """
    if line.startswith(_UPDATE):
        cut = line.find(_PARTIAL)
        if cut != -1:
            try:
                return t.cast(RpcLine, json.loads(line[:cut] + b"}}"))
            except ValueError:
                pass  # a "partial" key nested deeper (a tool call's arguments): parse it all
    elif line.startswith(_AGENT_END):
        return {"type": "agent_end"}
    elif line.startswith(_TURN_END):
        return None
    try:
        message = json.loads(line)
    except ValueError:
        log.warning("pi wrote a line that is not JSON: %r", line[:200])
        return None
    return message if isinstance(message, dict) else None


class PiProcess:
    """A pi child with a private directory (its home, config dir and stderr log).

    :param argv: the whole command line.
    :param env: the child's complete environment.
    :param cwd: its working directory.
    :param home: the private directory (exists); stderr goes to ``stderr.log`` there.
    :param on_exit: called from the reader once the child is gone and reaped.
    """

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        home: pathlib.Path,
        on_exit: t.Callable[[PiProcess], None] | None = None,
    ) -> None:
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.home = home
        self.runs = 0  # runs it was given (the pool counts them)
        self.aborts = 0  # abort commands pi answered
        self.ready_seconds = 0.0
        self._on_exit = on_exit
        self._proc: subprocess.Popen[bytes] | None = None
        self._messages: queue.Queue[RpcLine | _Exited] = queue.Queue()
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._exited = threading.Event()

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    @property
    def alive(self) -> bool:
        return self._proc is not None and not self._exited.is_set()

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float) -> None:
        """Spawn pi and wait until it answers ``get_state``.

        :raise AgentError: pi could not be started, exited, or was not ready in time
            (it is killed then).
        """
        started = time.monotonic()
        with open(self.home / "stderr.log", "ab") as stderr:
            try:
                # subprocess is looked up now: under gevent workers it is the patched,
                # cooperative one (patched after fork, long after this module's import).
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    cwd=self.cwd,
                    env=self.env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise AgentError(f"Could not start pi ({self.argv[0]}): {exc.strerror}.") from exc
        threading.Thread(target=self._read, name=f"pi-reader-{self.pid}", daemon=True).start()
        try:
            self.call("get_state", timeout)
        except AgentError as exc:
            self.kill()
            log.warning("pi %d did not start: %s\n%s", self.pid, exc, self.stderr_tail())
            if isinstance(exc, ProcessGone):
                raise AgentError(f"pi exited while starting ({self.exit_text()}).") from None
            raise AgentError(f"pi did not start within {timeout:g} s.") from None
        self.ready_seconds = time.monotonic() - started

    def close_stdin(self) -> None:
        """Ask pi to exit (it does on end of input, within milliseconds)."""
        # A write stuck on a hung pi holds the lock: then the kill that follows frees it.
        if not self._write_lock.acquire(timeout=1.0):
            return
        try:
            if self._proc is not None and self._proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
        finally:
            self._write_lock.release()

    def wait_exit(self, timeout: float) -> bool:
        """Wait until the reader has seen the end and reaped pi; True when it has."""
        return self._proc is None or self._exited.wait(max(timeout, 0.0))

    def kill(self) -> None:
        """SIGKILL the process group and wait until the child is reaped."""
        if self._proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.close_stdin()
        if not self.wait_exit(5.0):  # the reader reaps; this only bounds the wait
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(1.0)

    def _signal_group(self, signum: int) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signum)

    # -- messages ------------------------------------------------------------------------

    def next_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    def send(self, command: RpcLine) -> None:
        """Write one command line.

        :raise ProcessGone: stdin is closed or broken.
        """
        data = json.dumps(command, separators=(",", ":")).encode() + b"\n"
        with self._write_lock:
            stdin = self._proc.stdin if self._proc is not None else None
            if stdin is None or stdin.closed or self._exited.is_set():
                raise ProcessGone(f"The pi process is gone ({self.exit_text()}).")
            try:
                stdin.write(data)
                stdin.flush()
            except (OSError, ValueError) as exc:
                raise ProcessGone(f"The pi process is gone ({self.exit_text()}).") from exc

    def receive(self, timeout: float) -> RpcLine | None:
        """The next message from pi, or None after ``timeout`` seconds of silence.

        :raise ProcessGone: pi has exited (every later call raises it too).
        """
        try:
            item = self._messages.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None
        if isinstance(item, _Exited):
            self._messages.put(item)
            raise ProcessGone(f"The pi process exited ({self.exit_text()}).")
        return item

    def call(self, kind: str, timeout: float, **fields: t.Any) -> RpcLine:
        """Send a command and return its response's ``data``; only while no run is going
        on (other messages are dropped).

        :raise AgentError: pi said no, or did not answer in ``timeout`` seconds
            (:class:`ProcessGone` when it exited).
        """
        command_id = self.next_id(kind)
        self.send({"id": command_id, "type": kind, **fields})
        deadline = time.monotonic() + timeout
        while True:
            message = self.receive(deadline - time.monotonic())
            if message is None:
                raise AgentError(f"pi did not answer {kind} within {timeout:g} s.")
            if message.get("type") == "response" and message.get("id") == command_id:
                if not message.get("success"):
                    raise AgentError(f"pi refused {kind}: {message.get('error')}")
                data = message.get("data")
                return data if isinstance(data, dict) else {}

    def discard_pending(self) -> None:
        """Drop queued messages (left over from an earlier run), keeping the exit mark."""
        while True:
            try:
                item = self._messages.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Exited):
                self._messages.put(item)
                return

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        try:
            for line in iter(proc.stdout.readline, b""):
                message = parse_line(line)
                if message is not None:
                    self._messages.put(message)
        except (OSError, ValueError):
            pass
        finally:
            # stdout ended: pi is exiting or dead. Take any tool children with it and
            # reap it here, so nothing is left as a zombie.
            self._signal_group(signal.SIGKILL)
            with contextlib.suppress(OSError):
                proc.stdout.close()
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                log.error("pi %d did not exit after its output ended", proc.pid)
            self.close_stdin()
            self._exited.set()
            self._messages.put(_EXITED)
            if self._on_exit is not None:
                self._on_exit(self)

    # -- diagnostics ---------------------------------------------------------------------

    def exit_text(self) -> str:
        code = self.returncode
        if code is None:
            return "still running" if not self._exited.is_set() else "status unknown"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"

    def stderr_tail(self) -> str:
        """The end of pi's stderr (for the log: it may name local paths)."""
        try:
            with open(self.home / "stderr.log", "rb") as file:
                file.seek(0, os.SEEK_END)
                file.seek(max(0, file.tell() - STDERR_TAIL_BYTES))
                return file.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""
