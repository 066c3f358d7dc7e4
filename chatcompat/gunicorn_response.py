"""gunicorn's HTTP/1.1 response writer, sending the head with the first body bytes.

gunicorn writes a response's status line and headers with one ``send()`` and then each
body piece with another: for a JSON reply (or a stream whose first frames are ready)
that is two syscalls where one does, and on loopback each ``send()`` also runs the
receiver's TCP path. :class:`OneWriteResponse` keeps the head from ``send_headers()``
when it is called from ``write()`` and sends it in the same ``sendall()`` as the first
body bytes. The bytes on the wire are exactly gunicorn's; only their grouping into
segments changes, and the head never waits for anything that was not already there.

``chatcompat.gunicorn_config`` installs it as gunicorn's HTTP/1 response class (the
class ``gunicorn.http.wsgi.create`` makes by default), for gunicorn versions whose
``Response`` has the ``_emit_body`` hook.
"""

from __future__ import annotations

import typing as t

from gunicorn.http import wsgi

# A larger first body piece goes out on its own rather than being copied behind the head.
MAX_COALESCED_BYTES = 65536


class _Capture:
    """Stands in for the socket while gunicorn formats the head."""

    def __init__(self) -> None:
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


class OneWriteResponse(wsgi.Response):
    sock: t.Any
    _head: bytes | None = None
    _in_write = False

    def send_headers(self) -> None:
        if not self._in_write or self.headers_sent:
            super().send_headers()
            return
        sock, capture = self.sock, _Capture()
        self.sock = capture
        try:
            super().send_headers()
        finally:
            self.sock = sock
        self._head = capture.data

    def write(self, arg: bytes) -> None:
        self._in_write = True
        try:
            super().write(arg)
        finally:
            self._in_write = False
            head, self._head = self._head, None
            if head is not None:  # no body bytes went with it (HEAD, 204, empty piece...)
                self.sock.sendall(head)

    def _emit_body(self, data: bytes) -> None:
        head, self._head = self._head, None
        if head is None or len(data) > MAX_COALESCED_BYTES:
            if head is not None:
                self.sock.sendall(head)
            super()._emit_body(data)
            return
        if self.chunked:  # as gunicorn.util.write_chunk frames it
            data = b"%X\r\n%s\r\n" % (len(data), data)
        self.sock.sendall(head + data)


def install() -> bool:
    """Make :class:`OneWriteResponse` gunicorn's HTTP/1 response class; False when this
    gunicorn has no ``_emit_body`` hook (its own class then stays)."""
    if not hasattr(wsgi.Response, "_emit_body"):
        return False
    wsgi.Response = OneWriteResponse
    return True
