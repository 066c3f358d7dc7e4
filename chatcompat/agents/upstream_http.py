"""HTTP plumbing for backends that stream from an upstream server over HTTP/1.1.

* :class:`ConnectionPool`: keep-alive connections to one upstream (stdlib
  ``http.client``), made lazily in the worker, checked before reuse.
* :class:`Hold`: a run's hold on its connection; cancelling the run shuts the socket
  down, which wakes a read blocked in another greenlet or thread at once.
* :func:`mapped_errors`: socket and ``http.client`` failures become
  :class:`~chatcompat.agents.base.AgentError` / ``AgentTimeout`` (httpx's
  ``map_httpcore_exceptions`` habit), wrapping both the request and the stream.
* :class:`SSEDecoder`: incremental Server-Sent Events decoding.

The exception mapping::

    socket / http.client                        raised here
    connect: timeout                            AgentTimeout
    connect: DNS, refused, TLS, other OSError   AgentError
    read: timeout (no byte in time)             AgentTimeout
    read: IncompleteRead, reset, not HTTP       AgentError
    SSE: event too large, not UTF-8             AgentError
    any of these after the run was cancelled    nothing: the run ends quietly
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
import typing as t

from ..client_socket import readable_now
from .base import AgentError
from .base import AgentTimeout
from .response_head import HTTPResponse

if t.TYPE_CHECKING:
    from .base import Cancellation

# Idle connections older than this are not reused: uvicorn (vLLM, LiteLLM) drops
# keep-alive connections after 5 idle seconds, and a request on one it just
# dropped fails.
IDLE_SECONDS = 4.0
MAX_IDLE = 64


class Cut(Exception):
    """The run was cancelled while it was getting its connection."""


class Hold:
    """A run's hold on its upstream connection, which the cancel callback may cut."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # The socket itself: http.client drops conn.sock when a response says
        # "Connection: close", while the response goes on reading from it.
        self._sock: socket.socket | None = None
        self.is_cut = False

    def attach(self, conn: http.client.HTTPConnection) -> None:
        """Hold ``conn``'s socket; raise :class:`Cut` (closing it) if already cancelled."""
        with self._lock:
            if self.is_cut:
                conn.close()
                raise Cut()
            self._sock = conn.sock

    def release(self) -> None:
        """Let go: a later cancel must not touch a socket another run may now use."""
        with self._lock:
            self._sock = None

    def cut(self) -> None:
        """Shut the socket down: a read blocked in another greenlet or thread returns
        at once (a plain close() does not wake a thread blocked in recv)."""
        with self._lock:
            self.is_cut = True
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)


class _OneWrite:
    """Send the request head and a bytes body in one ``send()``, and read the answer's
    head with :mod:`~chatcompat.agents.response_head`'s cheaper parser.

    ``http.client`` sends them apart: two syscalls per request, and a second small
    segment that Nagle's algorithm may hold back until the first is acknowledged.
    """

    _buffer: list[bytes]

    def send(self, data: t.Any) -> None:  # http.client's, the class mixed with
        super().send(data)  # type: ignore[misc]

    def _send_output(self, message_body: t.Any = None, encode_chunked: bool = False) -> None:
        if isinstance(message_body, bytes) and not encode_chunked:
            self._buffer.extend((b"", b""))
            head = b"\r\n".join(self._buffer)
            del self._buffer[:]
            self.send(head + message_body)
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class HTTPConnection(_OneWrite, http.client.HTTPConnection):
    response_class = HTTPResponse


class HTTPSConnection(_OneWrite, http.client.HTTPSConnection):
    response_class = HTTPResponse


class ConnectionPool:
    """Idle keep-alive connections to one upstream, most recently used first."""

    def __init__(
        self, scheme: str, host: str, port: int, connect_timeout: float, read_timeout: float
    ) -> None:
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        # Made here, on the first run in the worker: never in gunicorn's master.
        self._ssl = ssl.create_default_context() if scheme == "https" else None
        self._idle: list[tuple[float, http.client.HTTPConnection]] = []
        self._lock = threading.Lock()
        self._closed = False

    def get(self, where: str) -> tuple[http.client.HTTPConnection, bool]:
        """A live idle connection (reused=True) or a new one."""
        while True:
            with self._lock:
                since, conn = self._idle.pop() if self._idle else (0.0, None)
            if conn is None:
                return self._connect(where), False
            if time.monotonic() - since < IDLE_SECONDS and not dropped(conn.sock):
                return conn, True
            conn.close()

    def put(self, conn: http.client.HTTPConnection) -> bool:
        """Keep ``conn`` for the next run; False when it should be closed instead."""
        now = time.monotonic()
        with self._lock:
            kept = not (self._closed or len(self._idle) >= MAX_IDLE or conn.sock is None)
            if kept:
                self._idle.append((now, conn))
            # The oldest are at the bottom: close those the upstream has dropped by now.
            stale = 0
            while stale < len(self._idle) and now - self._idle[stale][0] >= IDLE_SECONDS:
                stale += 1
            expired, self._idle[:stale] = self._idle[:stale], []
        for _, old in expired:
            old.close()
        return kept

    def _connect(self, where: str) -> http.client.HTTPConnection:
        if self._ssl is not None:
            conn: http.client.HTTPConnection = HTTPSConnection(
                self._host, self._port, timeout=self._connect_timeout, context=self._ssl
            )
        else:
            conn = HTTPConnection(self._host, self._port, timeout=self._connect_timeout)
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise AgentTimeout(
                f"Connecting to the upstream {where} timed out after {self._connect_timeout:g} s."
            ) from exc
        except socket.gaierror as exc:
            conn.close()
            raise AgentError(f"The upstream host {where} could not be resolved.") from exc
        except ssl.SSLError as exc:
            conn.close()
            reason = exc.reason or exc.strerror or type(exc).__name__
            raise AgentError(f"TLS with the upstream {where} failed: {reason}.") from exc
        except OSError as exc:
            conn.close()
            reason = exc.strerror or type(exc).__name__
            raise AgentError(f"Cannot connect to the upstream {where}: {reason}.") from exc
        assert conn.sock is not None
        conn.sock.settimeout(self._read_timeout)
        return conn

    def close(self) -> None:
        """Close the idle connections; those in use are closed by their runs."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.close()


def dropped(sock: socket.socket | None) -> bool:
    """True when an idle connection cannot be reused: an idle HTTP connection has nothing
    to read, so readable means the upstream closed it (or sent junk)."""
    if sock is None:
        return True
    try:
        return readable_now(sock)
    except (OSError, ValueError, TypeError):
        return True


@contextlib.contextmanager
def mapped_errors(where: str, read_timeout: float, cancel: Cancellation) -> t.Iterator[None]:
    """Turn socket and ``http.client`` failures (around the request and the stream)
    into the agent's exceptions; after a cancel, end the run quietly instead."""
    try:
        yield
    except Cut:
        return
    except AgentError:
        if cancel.is_set:
            return
        raise
    except TimeoutError as exc:
        if cancel.is_set:
            return
        raise AgentTimeout(f"The upstream {where} sent nothing for {read_timeout:g} s.") from exc
    except (OSError, http.client.HTTPException, SSEError) as exc:
        if cancel.is_set:
            return
        raise AgentError(f"The upstream {where} failed: {describe(exc)}.") from exc


def describe(exc: BaseException) -> str:
    """A short reason for a failed exchange, fit for the client (no request details)."""
    if isinstance(exc, SSEError):
        return str(exc)
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed mid-stream"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the connection closed without a response"
    if isinstance(exc, http.client.HTTPException):
        return "the answer is not HTTP"
    return getattr(exc, "strerror", None) or type(exc).__name__


# -- Server-Sent Events ------------------------------------------------------------

# One event larger than this is not a chat chunk: refuse it rather than buffer forever.
MAX_EVENT_BYTES = 16 * 1024 * 1024


class SSEError(ValueError):
    """The stream is not SSE (an event too large, or not UTF-8)."""


class SSEDecoder:
    """Feed bytes with :meth:`feed`, get the ``data`` of each complete event."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._size = 0
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[str]:
        """Decode ``chunk``; return the data of the events it completed, in order.

        :raise SSEError: an event is over the size limit or a line is not UTF-8.
        """
        self._buffer += chunk
        if b"\n" not in chunk:
            if len(self._buffer) + self._size > self._max:
                raise SSEError("an upstream event is larger than the limit")
            return []
        *lines, self._buffer = self._buffer.split(b"\n")
        events = []
        for raw in lines:
            event = self._line(raw[:-1] if raw.endswith(b"\r") else raw)
            if event is not None:
                events.append(event)
        return events

    def flush(self) -> list[str]:
        """The stream ended: the last event, if the upstream did not end it with a blank line."""
        events = self.feed(b"\n") if self._buffer else []
        if self._data:
            events.append("\n".join(self._data))
            self._data, self._size = [], 0
        return events

    def _line(self, raw: bytes) -> str | None:
        if not raw:
            if not self._data:
                return None
            event = "\n".join(self._data)
            self._data, self._size = [], 0
            return event
        if raw.startswith(b":") or not raw.startswith(b"data"):
            return None  # a comment, or a field we do not use
        field, colon, value = raw.partition(b":")
        if field != b"data":
            return None
        if colon and value.startswith(b" "):
            value = value[1:]
        self._size += len(value)
        if self._size > self._max:
            raise SSEError("an upstream event is larger than the limit")
        try:
            self._data.append(value.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise SSEError("the upstream stream is not UTF-8") from exc
        return None
