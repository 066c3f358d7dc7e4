"""Server-Sent Events framing, and noticing a client that went away.

A frame is ``data: <compact JSON>`` and a blank line; a keepalive is an SSE comment.
All headers are fixed before the first frame (they cannot change once the body
started).
"""

from __future__ import annotations

import select
import socket
import sys
import typing as t

from .protocol import encode

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx buffers proxied responses unless told otherwise per response.
    "X-Accel-Buffering": "no",
}
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"

KEEPALIVE_FRAME = b": keepalive\n\n"
DONE_FRAME = b"data: [DONE]\n\n"


def data_frame(payload: str) -> bytes:
    return b"data: " + encode(payload) + b"\n\n"


def _os_poll() -> t.Callable[[], t.Any] | None:
    """``select.poll`` as the OS gives it, also under gevent's monkey-patching.

    A zero-timeout poll never blocks, so gevent's cooperative version (which builds
    watchers and a result object on every call: 9 µs against 0.6 µs) only costs more.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("select"):
        try:
            return monkey.get_original("select", "poll")
        except (AttributeError, ImportError):
            return None
    return getattr(select, "poll", None)


def readable_now(sock: t.Any) -> bool:
    """True when ``sock`` has something to read (data, or the peer's close), without
    waiting.

    :raise ValueError, TypeError, OSError: ``sock`` is closed or not a socket.
    """
    poll = _os_poll()
    if poll is None:  # no poll() on this platform
        return bool(select.select([sock], [], [], 0)[0])
    poller = poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def peer_closed(sock: t.Any) -> bool:
    """True when the client has closed its side of the connection.

    A closed peer makes the socket readable with nothing to read. Data waiting
    (a pipelined next request) means the client is still there. Sockets that cannot
    peek (TLS) are assumed alive: the next failed write will tell.
    """
    try:
        if not readable_now(sock):
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except (ValueError, NotImplementedError, AttributeError, TypeError):
        return False
    except OSError:
        return True
