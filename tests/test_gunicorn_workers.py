"""The workers' answer to requests gunicorn's parser refuses: gunicorn's exceptions map
to our error classes, the answer is a complete JSON response that closes the
connection, and nothing is written after a request that was already answered.

Live: tests/live/test_http_parser.py, against real gunicorn with both worker classes."""

from __future__ import annotations

import json
import logging
import re
import socket
import types
import typing as t

import pytest
from gunicorn.http import errors as http_errors
from gunicorn.workers.ggevent import GeventWorker as GunicornGeventWorker
from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker

from chatcompat import errors
from chatcompat.gunicorn_errors import from_gunicorn
from chatcompat.gunicorn_workers import GeventWorker
from chatcompat.gunicorn_workers import JSONErrorsMixin
from chatcompat.gunicorn_workers import ThreadWorker
from chatcompat.gunicorn_workers import error_response
from tests.wire import check_error

ADDR = ("127.0.0.1", 40000)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (http_errors.InvalidRequestLine("GET"), 400, "invalid_request_line"),
        (http_errors.InvalidRequestMethod("G(T"), 400, "invalid_request_line"),
        (http_errors.InvalidHTTPVersion("HTTP/9.x"), 400, "invalid_request_line"),
        (http_errors.InvalidHeader("X-BAD"), 400, "invalid_header"),
        (http_errors.InvalidHeaderName("X Bad"), 400, "invalid_header"),
        (http_errors.ObsoleteFolding("X-FOLDED"), 400, "invalid_header"),
        (http_errors.InvalidSchemeHeaders(), 400, "invalid_header"),
        (http_errors.InvalidChunkSize(b"zz"), 400, "invalid_chunked_encoding"),
        (http_errors.ChunkMissingTerminator(b"XX"), 400, "invalid_chunked_encoding"),
        (http_errors.InvalidChunkExtension("bare CR"), 400, "invalid_chunked_encoding"),
        (http_errors.NoMoreData(), 400, "invalid_body"),
        (http_errors.LimitRequestLine(8192, 4094), 414, "request_line_too_long"),
        (http_errors.ExpectationFailed("200-ok"), 417, "expectation_failed"),
        (
            http_errors.LimitRequestHeaders("limit request headers fields size"),
            431,
            "header_fields_too_large",
        ),
        (http_errors.UnsupportedTransferCoding("gzip"), 501, "unsupported_transfer_coding"),
        (http_errors.InvalidProxyLine("PROXY x"), 400, "invalid_value"),
        (http_errors.ForbiddenProxyRequest("10.0.0.1"), 403, "invalid_value"),
        # The app's fault, not the client's.
        (http_errors.InvalidResponseHeader("'x-openclaw-session-key'"), 500, "internal_error"),
        (http_errors.ConfigurationProblem("oops"), 500, "internal_error"),
        (RuntimeError("boom"), 500, "internal_error"),
    ],
)
def test_gunicorn_exceptions_map_to_our_classes(exc, status, code):
    error = from_gunicorn(exc)
    assert isinstance(error, errors.APIError)
    assert (error.status, error.code) == (status, code)
    check_error(error.to_dict(), code=code)
    assert "boom" not in error.message  # unexpected errors say nothing of their insides


def test_header_messages_name_the_header_and_cut_long_text():
    assert "'X-FOLDED'" in from_gunicorn(http_errors.ObsoleteFolding("X-FOLDED")).message
    long = from_gunicorn(http_errors.InvalidHeaderName("X" * 5000)).message
    assert len(long) < 200


def parse(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert len(headers) == len(lines), "a header is repeated"
    return status_line, headers, body


def test_error_response_is_a_complete_json_answer_that_closes():
    error = errors.HeaderFieldsTooLarge()
    status_line, headers, body = parse(error_response(error, "abc123"))
    assert status_line == "HTTP/1.1 431 Request Header Fields Too Large"
    assert headers["Connection"] == "close"
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    assert headers["x-request-id"] == "abc123"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert body == error.body()  # the envelope, built by the error class itself
    check_error(json.loads(body), code="header_fields_too_large")


def test_error_response_carries_the_error_class_headers():
    status_line, headers, _ = parse(error_response(errors.MethodNotAllowed(["POST"]), "x"))
    assert status_line == "HTTP/1.1 405 Method Not Allowed"
    assert headers["Allow"] == "POST"


# -- handle_error, on a socket pair ------------------------------------------------------------


class _FakeLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, level: str) -> t.Callable[..., None]:
        def log(message: str, *args: t.Any, **kwargs: t.Any) -> None:
            self.lines.append((level, message % args if args else message))

        return log


class _Base:
    def __init__(self) -> None:
        self.log = _FakeLog()


class Worker(JSONErrorsMixin, _Base):
    pass


@pytest.fixture
def pair() -> t.Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    client.settimeout(5)
    yield server, client
    server.close()
    client.close()


def written(server: socket.socket, client: socket.socket) -> bytes:
    """All the worker wrote (gunicorn closes the connection after handle_error)."""
    server.close()
    data = b""
    while piece := client.recv(65536):
        data += piece
    return data


def test_handle_error_writes_the_envelope_and_logs_the_request_id(pair, caplog):
    server, client = pair
    worker = Worker()
    with caplog.at_level(logging.INFO, logger="chatcompat.request"):
        worker.handle_error(None, server, ADDR, http_errors.ObsoleteFolding("X-FOLDED"))
    status_line, headers, body = parse(written(server, client))
    assert status_line == "HTTP/1.1 400 Bad Request"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    error = check_error(json.loads(body), code="invalid_header")
    assert "X-FOLDED" in error["message"]
    logged = [r.msg for r in caplog.records if r.name == "chatcompat.request"]
    assert [(line["request_id"], line["status"]) for line in logged] == [
        (headers["x-request-id"], 400)
    ]
    assert worker.log.lines[0][0] == "warning"


def test_handle_error_writes_nothing_after_an_answered_request(pair):
    # The app answered (a 401, say) without reading the body; skipping it then failed.
    server, client = pair
    worker = Worker()
    answered = types.SimpleNamespace(body=types.SimpleNamespace(failed=True))
    worker._requests[server] = answered  # what handle_request records
    worker.handle_error(None, server, ADDR, http_errors.InvalidChunkSize(b"zz"))  # gevent
    worker.handle_error(answered, server, ADDR, http_errors.InvalidChunkSize(b"zz"))  # gthread
    assert written(server, client) == b""


def test_handle_error_answers_a_new_request_after_an_answered_one(pair):
    # Keep-alive: the first request's body was skipped fine, the second one's head is bad.
    server, client = pair
    worker = Worker()
    worker._requests[server] = types.SimpleNamespace(body=types.SimpleNamespace(failed=False))
    worker.handle_error(None, server, ADDR, http_errors.InvalidHeader("X-BAD"))
    assert parse(written(server, client))[0] == "HTTP/1.1 400 Bad Request"


def test_handle_error_writes_nothing_when_nobody_asked(pair):
    # The worker stops (GreenletExit, SystemExit) while a connection waits for a request.
    server, client = pair
    Worker().handle_error(None, server, ADDR, SystemExit(0))
    assert written(server, client) == b""


def test_handle_error_never_raises(pair):
    server, client = pair
    server.close()  # writing fails
    worker = Worker()
    worker.handle_error(None, server, ADDR, http_errors.InvalidHeader("X-BAD"))
    worker.handle_error(None, object(), None, RuntimeError("boom"))  # not even a socket
    assert any(level == "exception" for level, _ in worker.log.lines)


def test_the_worker_classes_are_gunicorns():
    assert issubclass(GeventWorker, GunicornGeventWorker)
    assert issubclass(ThreadWorker, GunicornThreadWorker)
