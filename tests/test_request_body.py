"""Reading the request body: gunicorn's body errors become our 400s, a body cut short
is refused, and the total time limit holds against a stalled or trickling client.

gunicorn's own body readers run over a socket pair, as under the workers; the live
tests (tests/live/test_http_parser.py) do the same over real gunicorn."""

from __future__ import annotations

import io
import socket
import threading
import types
import typing as t

import pytest
from gunicorn.http import errors as http_errors
from gunicorn.http.body import Body
from gunicorn.http.body import ChunkedReader
from gunicorn.http.body import LengthReader
from gunicorn.http.unreader import SocketUnreader
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from chatcompat import errors
from chatcompat.request_body import CLOSE_CONNECTION_ATTR
from chatcompat.request_body import WATCHDOG
from chatcompat.request_body import read_body
from chatcompat.request_body import read_json_body
from tests.conftest import AUTH
from tests.wire import check_error

CHAT = "/v1/chat/completions"
LONG = 30.0  # a deadline no test reaches


@pytest.fixture
def pair() -> t.Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    server.settimeout(10)  # a broken watchdog fails the test instead of hanging it
    yield server, client
    server.close()
    client.close()


def chunked_body(sock: socket.socket) -> Body:
    return Body(ChunkedReader(types.SimpleNamespace(), SocketUnreader(sock)))


def length_body(sock: socket.socket, length: int) -> Body:
    return Body(LengthReader(SocketUnreader(sock), length))


class Closer:
    def __init__(self, body: Body) -> None:
        self.calls = 0
        setattr(body, CLOSE_CONNECTION_ATTR, self)

    def __call__(self) -> None:
        self.calls += 1


def wait_for_watchdog_past(seconds: float) -> None:
    """Returns once the watchdog has acted on a deadline ``seconds`` from now: it
    works through deadlines in order, so every earlier one was handled too."""
    server, client = socket.socketpair()
    try:
        server.settimeout(10)
        entry = WATCHDOG.watch(server, seconds)
        assert server.recv(1) == b""  # blocks until the watchdog shuts the read side
        assert WATCHDOG.release(entry) is True
    finally:
        server.close()
        client.close()


@pytest.mark.live  # waits out real timeouts
def test_a_complete_body_is_returned_and_the_socket_is_left_alone(pair):
    server, client = pair
    client.sendall(b"3\r\n{}\n\r\n0\r\n\r\n")
    body = chunked_body(server)
    closer = Closer(body)
    assert read_body(body, 100, content_length=None, sock=server, timeout_seconds=0.5) == b"{}\n"
    assert closer.calls == 0
    wait_for_watchdog_past(0.6)  # the body's deadline has passed
    client.sendall(b"next request")
    assert server.recv(100) == b"next request"  # the read side was never shut


@pytest.mark.parametrize(
    ("chunked", "code"),
    [
        (b"zz\r\n{}\r\n0\r\n\r\n", "invalid_chunked_encoding"),
        (b"-5\r\n{}\r\n0\r\n\r\n", "invalid_chunked_encoding"),
        (b"2\r\n{}XX0\r\n\r\n", "invalid_chunked_encoding"),
        (b"2;a=\x01\r\n{}\r\n0\r\n\r\n", "invalid_chunked_encoding"),
        (b"10\r\n{}", "invalid_body"),  # then the client stops sending
        (b"1000000000000000000\r\n{}", "invalid_body"),  # 2^72 bytes announced
    ],
)
def test_malformed_or_cut_chunked_bodies_are_400(pair, chunked, code):
    server, client = pair
    client.sendall(chunked)
    client.shutdown(socket.SHUT_WR)
    body = chunked_body(server)
    closer = Closer(body)
    with pytest.raises(errors.InvalidBody) as caught:
        read_body(body, 100, content_length=None, sock=server, timeout_seconds=LONG)
    assert caught.value.status == 400
    assert caught.value.code == code
    assert closer.calls == 1  # the connection cannot carry another request


def test_a_body_shorter_than_its_content_length_is_400(pair):
    server, client = pair
    client.sendall(b'{"a":')
    client.shutdown(socket.SHUT_WR)
    body = length_body(server, 50)
    closer = Closer(body)
    with pytest.raises(errors.InvalidBody) as caught:
        read_body(body, 101, content_length=50, sock=server, timeout_seconds=LONG)
    assert caught.value.code == "invalid_body"
    assert "5 of the 50 bytes" in caught.value.message
    assert closer.calls == 1


@pytest.mark.live  # waits out real timeouts
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_stalled_body_is_cut_at_the_deadline(pair, framing):
    server, client = pair
    if framing == "length":
        client.sendall(b'{"a":')
        body, length = length_body(server, 50), 50
    else:
        client.sendall(b"1000000000000000000\r\n{")
        body, length = chunked_body(server), None
    closer = Closer(body)
    with pytest.raises(errors.RequestTimeout) as caught:
        read_body(body, 101, content_length=length, sock=server, timeout_seconds=0.2)
    assert caught.value.status == 408
    assert caught.value.message.startswith("Request body timeout")
    assert closer.calls == 1


@pytest.mark.live  # waits out real timeouts
def test_a_trickling_body_is_cut_at_the_deadline(pair):
    # A byte every 20 ms: no single read ever waits long, the total still is bounded.
    server, client = pair
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.02):
            try:
                client.send(b" ")
            except OSError:
                return

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        with pytest.raises(errors.RequestTimeout):
            read_body(
                length_body(server, 100000),
                100001,
                content_length=100000,
                sock=server,
                timeout_seconds=0.3,
            )
    finally:
        stop.set()
        sender.join(5)


@pytest.mark.live  # waits out real timeouts
def test_the_watchdog_shuts_only_what_is_still_watched(pair):
    server, client = pair
    released = WATCHDOG.watch(server, 0.5)
    assert WATCHDOG.release(released) is False
    wait_for_watchdog_past(0.6)
    client.sendall(b"x")
    assert server.recv(1) == b"x"


# -- through the app (Flask's test client, wsgi.input as gunicorn's) -------------------------


class FailingInput:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def read(self, size: int = -1) -> bytes:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (http_errors.InvalidChunkSize(b"zz"), "invalid_chunked_encoding"),
        (http_errors.ChunkMissingTerminator(b"XX"), "invalid_chunked_encoding"),
        (http_errors.InvalidChunkExtension("bare CR not allowed"), "invalid_chunked_encoding"),
        (http_errors.NoMoreData(), "invalid_body"),
        (ConnectionResetError(104, "Connection reset by peer"), "invalid_body"),
    ],
)
def test_body_read_errors_are_400_envelopes(client, exc, code):
    response = client.post(
        CHAT,
        headers={**AUTH, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input": FailingInput(exc), "wsgi.input_terminated": True},
    )
    assert response.status_code == 400, response.get_data()
    error = check_error(response.get_json(), code=code)
    assert error["type"] == "invalid_request_error"
    assert response.headers["x-request-id"]


def test_released_watches_do_not_pile_up():
    # Every request releases its watch long before its deadline: the heap is compacted
    # instead of holding a whole timeout's worth of requests.
    server, client = socket.socketpair()
    try:
        for _ in range(5000):
            WATCHDOG.release(WATCHDOG.watch(server, LONG))
        assert len(WATCHDOG._heap) <= 2 * 1000 + 2
    finally:
        server.close()
        client.close()


# -- read_json_body: the body as JSON every store and upstream can take ------------------


class Unread(io.BytesIO):
    """A body that records whether anything read it."""

    touched = False

    def read(self, size: int | None = -1) -> bytes:
        self.touched = True
        return super().read(size)


def json_request(data: bytes, *, declared: bool = True) -> Request:
    """A request carrying ``data``; without ``declared`` it has no Content-Length
    (a chunked body, which the server has de-chunked)."""
    environ = EnvironBuilder(method="POST", data=data).get_environ()
    if not declared:
        del environ["CONTENT_LENGTH"]
        environ["wsgi.input_terminated"] = True
    return Request(environ)


@pytest.mark.parametrize("data", [b"", b"  \r\n\t"])
def test_an_empty_body_is_an_empty_object(data):
    assert read_json_body(json_request(data), 100, LONG) == {}


def test_a_json_body_is_parsed():
    body = read_json_body(json_request(b'{"a": [1, 2.5, "z\\u00eb"]}'), 100, LONG)
    assert body == {"a": [1, 2.5, "z\u00eb"]}


def test_a_declared_length_over_the_limit_is_413_before_reading():
    req = json_request(b"{}")
    req.environ["CONTENT_LENGTH"] = "101"
    req.environ["wsgi.input"] = stream = Unread(b"{}")
    with pytest.raises(errors.PayloadTooLarge, match="limit of 100 bytes"):
        read_json_body(req, 100, LONG)
    assert not stream.touched


def test_an_undeclared_body_over_the_limit_is_413_once_it_passes_it():
    assert read_json_body(json_request(b'"' + b"x" * 8 + b'"', declared=False), 10, LONG)
    with pytest.raises(errors.PayloadTooLarge):
        read_json_body(json_request(b'"' + b"x" * 9 + b'"', declared=False), 10, LONG)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not valid JSON: Expecting property name enclosed in double quotes at line 1"),
        (b'{"c": "\xff"}', "not valid UTF-8 JSON"),
        (b'{"t": NaN}', "NaN is not a JSON number"),
        (b"[-Infinity]", "-Infinity is not a JSON number"),
        (b'{"t": 1e999}', "1e999 is out of range for a number"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),  # deeper than the recursion limit
        (b'{"c": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"c": "\\uDC00x"}', "lone UTF-16 surrogate"),
    ],
)
def test_json_no_store_or_upstream_takes_is_invalid_json(data, message):
    with pytest.raises(errors.InvalidJSON, match=message):
        read_json_body(json_request(data), len(data), LONG)


def test_an_escaped_surrogate_pair_is_one_character():
    body = read_json_body(json_request(b'{"c": "\\ud83d\\ude00"}'), 100, LONG)
    assert body == {"c": "\U0001f600"}
