"""Read a request body whole, within a size limit and a total time limit, and parse
it as JSON that every store and upstream can take (SPEC 3 step 4).

gunicorn reads the body off the socket as the app asks for it, so what can go wrong
with it shows up here, on ``wsgi.input``:

- a malformed chunked encoding, or a client that stops sending mid-body, raises
  gunicorn's parser errors: they become our 400s (:mod:`chatcompat.gunicorn_errors`);
- a Content-Length body that ends early (the client half-closed) reads short: 400;
- a body that does not arrive in time, trickling or stalled with the connection open,
  is cut at ``gateway.http.bodyTimeoutSeconds`` in total: a watchdog shuts the read
  side of the socket, the blocked read returns, and the answer is 408. The connection
  then closes (where the next request would start is unknown).

The watchdog is one thread per process (a greenlet under gevent, as gevent patches
``threading``). Shutting the socket's read side works the same under both worker
classes, where a timeout on each ``recv`` would not bound the total: a client sending
a byte a second never lets one expire.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import os
import re
import socket
import threading
import time
import typing as t

from flask import Response
from flask import request
from gunicorn.http import errors as http_errors

from . import errors
from .gunicorn_errors import from_gunicorn

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request

# Released entries in the heap before it is compacted (see Watchdog.release).
_COMPACT_AT = 1000

# The worker puts a callable here on ``wsgi.input`` (chatcompat.gunicorn_workers): it
# makes gunicorn answer with "Connection: close" and close after the response. Called
# when the body failed in any way.
CLOSE_CONNECTION_ATTR = "chatcompat_close_connection"
# Set in the environ once the body was read to its end.
_READ_WHOLE = "chatcompat.body_read"


class _Watch:
    """One socket being read under a deadline."""

    __slots__ = ("sock", "deadline", "expired", "released")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock: socket.socket | None = sock
        self.deadline = deadline
        self.expired = False
        self.released = False


class Watchdog:
    """Shuts the read side of each watched socket whose deadline passes first."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._start_lock = threading.Lock()
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._released = 0  # released entries still in the heap
        self._order = itertools.count()

    def watch(self, sock: socket.socket, seconds: float) -> _Watch:
        """Start watching ``sock``: its read side is shut in ``seconds`` unless
        :meth:`release` comes first."""
        if self._pid != os.getpid():
            self._start()  # first use in this process (a forked worker has no thread)
        entry = _Watch(sock, time.monotonic() + seconds)
        with self._cond:
            heapq.heappush(self._heap, (entry.deadline, next(self._order), entry))
            if self._heap[0][2] is entry:
                self._cond.notify()
        return entry

    def release(self, entry: _Watch) -> bool:
        """Stop watching; True when the deadline had already passed (the read side of
        the socket is then shut)."""
        with self._cond:
            entry.released = True
            entry.sock = None  # the connection may go; the entry waits for its deadline
            if entry.expired:
                return True  # already out of the heap
            self._released += 1
            # Released entries leave the heap when their deadline comes up: with every
            # request's deadline ``bodyTimeoutSeconds`` ahead, that is a whole timeout's
            # worth of requests. Drop them in one pass once they are most of the heap.
            if self._released > _COMPACT_AT and 2 * self._released > len(self._heap):
                self._heap = [item for item in self._heap if not item[2].released]
                heapq.heapify(self._heap)
                self._released = 0
            return entry.expired

    def _start(self) -> None:
        # The condition is made here, not at import: gevent patches threading in the
        # worker, after this module may have been imported. Nothing under the lock can
        # yield to another greenlet (Thread.start() can), so even an unpatched lock is safe.
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._cond = threading.Condition()
            self._heap = []
            self._released = 0
            self._pid = os.getpid()
        threading.Thread(target=self._run, name="chatcompat-body-watchdog", daemon=True).start()

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._heap or self._heap[0][2].released:
                    if self._heap:
                        heapq.heappop(self._heap)
                        self._released -= 1
                    else:
                        cond.wait()
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    cond.wait(wait)
                    continue
                entry = heapq.heappop(self._heap)[2]
                # Under the lock: release() cannot return before this is done, so the
                # socket is never shut after its request moved on.
                entry.expired = True
                try:
                    entry.sock.shutdown(socket.SHUT_RD)  # type: ignore[union-attr]
                except OSError:
                    pass  # already closed by the client or the worker


WATCHDOG = Watchdog()


def read_body(
    stream: t.IO[bytes],
    size: int,
    *,
    content_length: int | None,
    sock: socket.socket | None,
    timeout_seconds: float,
) -> bytes:
    """Read up to ``size`` bytes of the body, all of it within ``timeout_seconds``.

    :param stream: the body (``wsgi.input``).
    :param size: the most bytes to read (the caller's limit plus one shows an overflow).
    :param content_length: the declared length, None for a chunked body.
    :param sock: the client's socket (gunicorn's ``gunicorn.socket``); without one
        (the test client) there is no deadline.
    :param timeout_seconds: the total time the body may take.
    :raise errors.RequestTimeout: the body was not complete in time.
    :raise errors.InvalidBody: the body is malformed or ended early (subclasses say how).
    """
    entry = WATCHDOG.watch(sock, timeout_seconds) if sock is not None else None
    failure: Exception | None = None
    raw = b""
    try:
        raw = stream.read(size)
    except (http_errors.ParseException, OSError) as exc:  # NoMoreData is an OSError
        failure = exc
    finally:
        expired = entry is not None and WATCHDOG.release(entry)
    short = content_length is not None and len(raw) < min(content_length, size)
    if failure is None and not short:
        return raw
    # Where the next request would start on this connection is unknown: close it after
    # the answer, and say so in it.
    close_connection(stream)
    if expired:
        raise errors.RequestTimeout(
            f"Request body timeout: the request body did not arrive within {timeout_seconds:g} s."
        ) from failure
    if isinstance(failure, (http_errors.ParseException, http_errors.NoMoreData)):
        raise from_gunicorn(failure) from failure
    if failure is not None:
        raise errors.InvalidBody(f"The request body could not be read: {failure}.") from failure
    raise errors.InvalidBody(
        f"The request body ended after {len(raw)} of the {content_length} bytes its "
        "Content-Length announced."
    )


def close_connection(stream: t.Any) -> None:
    """Have the server answer ``Connection: close`` and close after the response
    (a no-op where the server offers no way: the test client)."""
    close = getattr(stream, CLOSE_CONNECTION_ATTR, None)
    if close is not None:
        close()


def mark_read_whole(environ: t.MutableMapping[str, t.Any]) -> None:
    """Note that the request's body was read to its end (see :func:`init_app`)."""
    environ[_READ_WHOLE] = True


def init_app(app: Flask) -> None:
    """Close the connection after any answer that left a request body unread.

    A request answered before its body was read (401, 404, 405, a 413 by
    ``Content-Length``) leaves the body on the connection, and gunicorn would read
    all of it, with no time limit, to find the next request: a client trickling it
    in would hold a gthread worker's thread, and a large upload would be read just
    to be thrown away.
    """

    @app.after_request
    def close_after_an_unread_body(response: Response) -> Response:
        environ = request.environ
        has_body = (
            bool(request.content_length)
            or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        )
        if has_body and not environ.get(_READ_WHOLE):
            close_connection(environ.get("wsgi.input"))
        return response


def read_json_body(req: Request, limit: int, timeout_seconds: float) -> t.Any:
    """Read and parse the body (SPEC 3 step 4).

    :param limit: the most bytes the body may have (``gateway.http.maxBodyBytes``).
    :param timeout_seconds: the total time the body may take to arrive.
    :raise errors.PayloadTooLarge: over ``limit`` bytes (by Content-Length before
        reading, else while reading).
    :raise errors.RequestTimeout: not all there within ``timeout_seconds``.
    :raise errors.InvalidBody: malformed (chunked encoding) or cut off.
    :raise errors.InvalidJSON: not JSON (an empty body counts as ``{}``), or JSON no
        store or upstream can take (a lone surrogate escape, a number out of range).
    """
    if req.content_length is not None and req.content_length > limit:
        raise _too_large(limit)
    raw = read_body(
        req.stream,
        limit + 1,
        content_length=req.content_length,
        sock=req.environ.get("gunicorn.socket"),
        timeout_seconds=timeout_seconds,
    )
    if len(raw) > limit:
        raise _too_large(limit)
    mark_read_whole(req.environ)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise errors.InvalidJSON("The request body is not valid UTF-8 JSON.") from exc
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        message = f"The request body is not valid JSON: {exc.msg} at {where}."
        raise errors.InvalidJSON(message) from exc
    except (ValueError, RecursionError) as exc:
        raise errors.InvalidJSON(f"The request body is not valid JSON: {exc}.") from exc
    # JSON may escape a lone UTF-16 surrogate ("\ud800"): not Unicode, so no store,
    # session key or upstream can take it. Only bodies with such an escape are checked.
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(body):
        raise errors.InvalidJSON(
            "The request body contains a lone UTF-16 surrogate escape (\\ud800-\\udfff), "
            "which is not valid Unicode."
        )
    return body


def _has_lone_surrogate(body: t.Any) -> bool:
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> t.NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    # 1e999 is valid JSON syntax but overflows to inf: no store or upstream takes it.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range for a number")
    return value


def _too_large(limit: int) -> errors.PayloadTooLarge:
    return errors.PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
