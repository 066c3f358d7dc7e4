"""Malformed HTTP over raw sockets to real gunicorn (gevent and gthread workers): bad
chunked bodies, a body that never finishes, and requests gunicorn's own parser refuses.
Each answer is the OpenAI error envelope with an ``x-request-id``; nothing reaches an
agent, and nothing but that one answer is written before the connection closes."""

from __future__ import annotations

import json
import re
import socket
import threading

import pytest

from tests.live.conftest import CHAT
from tests.live.conftest import TOKEN
from tests.live.conftest import connect
from tests.live.conftest import get_status
from tests.live.conftest import user
from tests.wire import check_error

pytestmark = pytest.mark.live

BODY = json.dumps({"model": "openclaw/scripted", "messages": [user("hi")]}).encode()
REPLY_SECONDS = 15.0  # a bound on waiting, never a pause


class Reply:
    """Everything the server wrote on one connection until it closed it."""

    def __init__(self, data: bytes) -> None:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"no complete response head: {data[:300]!r}"
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        assert self.status_line.startswith("HTTP/1.1 "), self.status_line
        self.status = int(self.status_line.split()[1])
        self.headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
        length = int(self.header("Content-Length"))
        self.body, self.after = rest[:length], rest[length:]
        assert len(self.body) == length, (length, self.body)

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None

    def error(self, status: int, code: str | None) -> dict:
        """The one response is ``status`` with our envelope; returns its ``error``."""
        assert self.status == status, (self.status_line, self.body[:300])
        assert self.header("Content-Type") == "application/json", self.headers
        assert re.fullmatch(r"[0-9a-f]{32}|[A-Za-z0-9._:/+=-]{1,128}", self.header("x-request-id"))
        assert self.after == b"", f"more was written after the answer: {self.after[:300]!r}"
        return check_error(json.loads(self.body), code=code)


def read_until_closed(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (bounded by the socket's
    timeout). A reset after the answer (the server closed with request bytes unread)
    counts as the close."""
    sock.settimeout(REPLY_SECONDS)
    data = b""
    while True:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            assert data, "the connection was reset before any answer"
            return data
        if not piece:
            return data
        data += piece


def send_raw(port: int, data: bytes, *, half_close: bool = False) -> Reply:
    """Write ``data`` on a new connection (then end the sending side when
    ``half_close``) and read the answer until the server closes."""
    sock = connect(port)
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before reading all of it
    if half_close:
        sock.shutdown(socket.SHUT_WR)
    return Reply(read_until_closed(sock))


def chunked_post(chunked: bytes, *, auth: bool = True, path: str = CHAT) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if auth:
        lines.append(f"Authorization: Bearer {TOKEN}")
    lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + chunked


def get(*header_lines: bytes, target: bytes = b"/healthz") -> bytes:
    return b"\r\n".join([b"GET " + target + b" HTTP/1.1", b"Host: 127.0.0.1", *header_lines])


# -- point 3: malformed chunked bodies ------------------------------------------------------

BAD_CHUNKS = {
    # (chunked body, end the sending side after it, expected code)
    "letters": (b"zz\r\n" + BODY + b"\r\n0\r\n\r\n", False, "invalid_chunked_encoding"),
    "negative": (b"-5\r\n" + BODY + b"\r\n0\r\n\r\n", False, "invalid_chunked_encoding"),
    "no-terminator": (b"2\r\n{}XX0\r\n\r\n", False, "invalid_chunked_encoding"),
    "larger-than-sent": (b"%x\r\n" % (len(BODY) + 50) + BODY, True, "invalid_body"),
    "2^72": (b"1000000000000000000\r\n" + BODY, True, "invalid_body"),
}


@pytest.mark.parametrize("case", list(BAD_CHUNKS))
def test_bad_chunked_body_is_400_and_runs_nothing(any_live, case):
    chunked, half_close, code = BAD_CHUNKS[case]
    runs_before = len(any_live.runs())
    reply = send_raw(any_live.port, chunked_post(chunked), half_close=half_close)
    error = reply.error(400, code)
    assert error["type"] == "invalid_request_error"
    assert "chunk" in error["message"] or "body" in error["message"], error
    assert reply.header("Connection") == "close"  # the rest of the connection is unusable
    assert len(any_live.runs()) == runs_before  # no agent started
    assert get_status(any_live.port, "/healthz") == 200


@pytest.mark.parametrize(
    "path, auth, status",
    [(CHAT, False, 401), ("/healthz", True, 405), ("/nope", True, 404)],
)
def test_bad_chunked_body_after_an_answer_adds_nothing(any_live, path, auth, status):
    # The app answers without reading the body; gunicorn then finds the bad chunk
    # while skipping it. The connection just closes: a second (HTML) answer would be
    # read by the client as the reply to its next request.
    reply = send_raw(any_live.port, chunked_post(b"zz\r\n{}\r\n0\r\n\r\n", auth=auth, path=path))
    reply.error(status, None)


# -- point 3: a body that does not arrive in time ---------------------------------------------


class Trickle:
    """Sends ``head`` and then one body byte every ``pause`` seconds until stopped."""

    def __init__(self, port: int, head: bytes, pause: float = 0.1) -> None:
        self.sock = connect(port)
        self.sock.sendall(head)
        self.pause = pause
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.pause):
            try:
                self.sock.send(b" ")
            except OSError:
                return

    def reply(self) -> Reply:
        try:
            return Reply(read_until_closed(self.sock))
        finally:
            self.stop.set()
            self.thread.join(5)


def _post_head(extra: str) -> bytes:
    return (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_body_that_does_not_arrive_in_time_is_408(make_server, worker_class):
    server = make_server(
        worker_class,
        workers=1,
        worker_class=worker_class,
        overrides={"gateway": {"http": {"bodyTimeoutSeconds": 1}}},
    )
    stalls = {
        # Content-Length says more than ever comes, the connection stays open.
        "short-length": lambda: _stalled(server.port, _post_head("Content-Length: 500\r\n") + b"{"),
        # A chunk far larger than what follows.
        "2^72-chunk": lambda: _stalled(
            server.port,
            _post_head("Transfer-Encoding: chunked\r\n") + b"1000000000000000000\r\n{",
        ),
        # Bytes keep coming, one every 0.1 s: never idle, never done.
        "trickle": lambda: Trickle(server.port, _post_head("Content-Length: 15000\r\n") + b"{"),
    }
    for name, start in stalls.items():
        reply = start().reply()
        error = reply.error(408, "request_timeout")
        assert error["type"] == "invalid_request_error", (name, error)
        assert "Request body timeout" in error["message"], (name, error)
        assert reply.header("Connection") == "close", (name, reply.headers)
    assert server.runs() == []
    assert get_status(server.port, "/healthz") == 200  # the worker is still serving


class _Stalled:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def reply(self) -> Reply:
        return Reply(read_until_closed(self.sock))


def _stalled(port: int, data: bytes) -> _Stalled:
    sock = connect(port)
    sock.sendall(data)
    return _Stalled(sock)


# -- point 4: what gunicorn's parser refuses ----------------------------------------------------

PARSER_ERRORS = {
    # request bytes, status, code
    "control-char-in-value": (get(b"X-Bad: a\x01b", b"", b""), 400, "invalid_header"),
    "obs-fold": (get(b"X-Folded: a", b"  b", b"", b""), 400, "invalid_header"),
    "space-in-name": (get(b"X Bad: b", b"", b""), 400, "invalid_header"),
    "64KB-header": (get(b"X-Big: " + b"a" * 65536, b"", b""), 431, "header_fields_too_large"),
    "request-line-too-long": (
        get(b"", b"", target=b"/" + b"a" * 9000),
        414,
        "request_line_too_long",
    ),
    "bad-request-line": (b"GET\r\n\r\n", 400, "invalid_request_line"),
    "bad-version": (b"GET / HTTP/9.x\r\nHost: x\r\n\r\n", 400, "invalid_request_line"),
    "bad-method": (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid_request_line"),
}


@pytest.mark.parametrize("case", list(PARSER_ERRORS))
def test_parser_errors_are_json(any_live, case):
    data, status, code = PARSER_ERRORS[case]
    workers = any_live.worker_pids()
    reply = send_raw(any_live.port, data)
    error = reply.error(status, code)
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None
    assert reply.header("X-Content-Type-Options") == "nosniff"
    assert reply.header("Referrer-Policy") == "no-referrer"
    assert reply.header("Connection") == "close"
    assert b"<html" not in reply.body
    assert get_status(any_live.port, "/healthz") == 200
    assert any_live.worker_pids() == workers  # no worker died or was replaced


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
@pytest.mark.parametrize(
    "case",
    [
        # Answered 401 before the body is read; the body would then trickle on.
        ("no-token", False, "Content-Length: 15000\r\n", 401),
        # Answered 413 by Content-Length; gunicorn would then read a gigabyte.
        ("too-large", True, "Content-Length: 1000000000\r\n", 413),
    ],
    ids=lambda case: case[0],
)
def test_an_answer_that_left_the_body_unread_closes_the_connection(make_server, worker_class, case):
    _, auth, extra, status = case
    server = make_server(
        worker_class,
        workers=1,
        worker_class=worker_class,
        overrides={"gateway": {"http": {"bodyTimeoutSeconds": 1}}},
    )
    head = _post_head(extra)
    if not auth:
        head = head.replace(f"Authorization: Bearer {TOKEN}\r\n".encode(), b"")
    trickle = Trickle(server.port, head + b"{", pause=0.2)
    # The answer comes, says it closes, and the server closes without reading the
    # rest of the body (read_until_closed would time out while the body trickles).
    reply = trickle.reply()
    reply.error(status, None)
    assert reply.header("Connection") == "close"
    # gthread closes "gracefully" on its main thread, reading what is left for up to
    # 2 s; a client gone for good lets it finish at once.
    trickle.sock.close()
    assert get_status(server.port, "/healthz") == 200
