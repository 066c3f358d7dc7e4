"""Server-Sent Events framing, and noticing a client that went away.

A frame is ``data: <compact JSON>`` and a blank line; a keepalive is an SSE comment.
All headers are fixed before the first frame (they cannot change once the body
started).
"""

from __future__ import annotations

import select
import socket
import typing as t

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx buffers proxied responses unless told otherwise per response.
    "X-Accel-Buffering": "no",
}
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"

KEEPALIVE_FRAME = b": keepalive\n\n"
DONE_FRAME = b"data: [DONE]\n\n"


def data_frame(payload: str) -> bytes:
    return b"data: " + payload.encode("utf-8") + b"\n\n"


def peer_closed(sock: t.Any) -> bool:
    """True when the client has closed its side of the connection.

    A closed peer makes the socket readable with nothing to read. Data waiting
    (a pipelined next request) means the client is still there. Sockets that cannot
    peek (TLS) are assumed alive: the next failed write will tell.
    """
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except (ValueError, NotImplementedError, AttributeError, TypeError):
        return False
    except OSError:
        return True
