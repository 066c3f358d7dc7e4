"""The response writer that sends the head with the first body bytes: the same bytes
as gunicorn's own writer, in fewer sends."""

from __future__ import annotations

import types

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi

from chatcompat import gunicorn_response
from chatcompat.gunicorn_response import OneWriteResponse

# gunicorn's own class, whatever install() did to the module in this process.
GunicornResponse = OneWriteResponse.__mro__[1]


class Socket:
    def __init__(self) -> None:
        self.sends: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))


def respond(cls, method, status, headers, pieces):
    req = types.SimpleNamespace(method=method, version=(1, 1), should_close=lambda: False)
    sock = Socket()
    resp = cls(req, sock, Config())
    resp.start_response(status, headers)
    for piece in pieces:
        resp.write(piece)
    resp.close()
    return sock.sends


CASES = [
    (
        "json",
        "POST",
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", "7")],
        [b'{"a":1}'],
    ),
    (
        "stream",
        "POST",
        "200 OK",
        [("Content-Type", "text/event-stream")],
        [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"],
    ),
    (
        "stream, empty first piece",
        "POST",
        "200 OK",
        [("Content-Type", "text/event-stream")],
        [b"", b"data: 1\n\n"],
    ),
    ("head", "HEAD", "200 OK", [("Content-Length", "7")], [b'{"a":1}']),
    ("no content", "POST", "204 No Content", [], []),
    ("no body written", "POST", "200 OK", [("Content-Length", "0")], []),
    ("large body", "POST", "200 OK", [("Content-Length", "100000")], [b"x" * 100000]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_same_bytes_as_gunicorn(case, monkeypatch):
    _, method, status, headers, pieces = case
    monkeypatch.setattr("gunicorn.util.http_date", lambda *a: "Thu, 01 Jan 2026 00:00:00 GMT")
    ours = respond(OneWriteResponse, method, status, headers, pieces)
    theirs = respond(GunicornResponse, method, status, headers, pieces)
    assert b"".join(ours) == b"".join(theirs)
    assert len(ours) <= len(theirs)


def test_head_and_first_body_bytes_go_in_one_send(monkeypatch):
    sends = respond(OneWriteResponse, *CASES[0][1:])
    assert len(sends) == 1 and sends[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert sends[0].endswith(b'\r\n\r\n{"a":1}')
    stream = respond(OneWriteResponse, *CASES[1][1:])
    assert stream[0].endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n")
    assert len(stream) == 4  # head + first frame, two frames, the last chunk


def test_install_makes_it_gunicorns_response_class(monkeypatch):
    monkeypatch.setattr(wsgi, "Response", GunicornResponse)
    assert gunicorn_response.install()
    assert wsgi.Response is OneWriteResponse
