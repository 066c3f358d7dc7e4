"""The lean response-head parser against ``http.client``'s own: the same headers, the
same framing decisions, and the same refusals of malformed answers."""

from __future__ import annotations

import http.client
import io
import typing as t

import pytest

from chatcompat.agents import response_head

HEADS = [
    # What upstreams send: the fast path.
    b"date: Wed, 02 Dec 2026 02:00:00 GMT\r\nserver: uvicorn\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n",
    b"Content-Type: application/json\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n",
    b"Set-Cookie: a=1\r\nset-cookie: b=2\r\nX-Empty:\r\nX-Spaces:   padded   \r\n\r\n",
    b"X-Tab:\tvalue\r\nX-Latin: caf\xe9\r\nX-Colons: a:b:c\r\n\r\n",
    b"Content-Type: text/plain\nContent-Length: 3\n\n",  # bare LF line ends
    b"\r\n",  # no headers at all
    # What the email parser decides: the slow path, and the same answer.
    b"X-Folded: one\r\n two\r\nX-After: 1\r\n\r\n",
    b" X-Leading: continuation first\r\nX-After: 1\r\n\r\n",
    b"X-Before: 1\r\nno colon here\r\nX-After: 1\r\n\r\n",
    b"X-Before: 1\r\nBad Name: space\r\nX-After: 1\r\n\r\n",
    b": no name\r\nX-After: 1\r\n\r\n",
    b"From someone\r\nX-After: 1\r\n\r\n",
    b"X-Before: 1\r\nFrom someone\r\nX-After: 1\r\n\r\n",
    b"X-Stray: a\rb\r\nX-After: 1\r\n\r\n",
    b"X-Cr-End: a\r\r\nX-After: 1\r\n\r\n",
    b"X-Nul: a\x00b\r\nX-After: 1\r\n\r\n",
]


@pytest.mark.parametrize("head", HEADS)
def test_the_same_headers_as_http_client(head):
    expected = http.client.parse_headers(io.BytesIO(head))
    lines = http.client._read_headers(io.BytesIO(head))
    parsed = response_head.parse_head(lines)
    assert isinstance(parsed, http.client.HTTPMessage)
    assert parsed.items() == expected.items()
    for name in ("content-type", "x-after", "set-cookie", "x-folded", "x-spaces"):
        assert parsed.get_all(name) == expected.get_all(name)


class _Socket:
    """What HTTPResponse reads from: a file over the bytes of an answer."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.data)


def _begin(cls: type[http.client.HTTPResponse], data: bytes, method: str = "POST") -> t.Any:
    response = cls(_Socket(data), method=method)  # type: ignore[arg-type]
    try:
        response.begin()
    except Exception as exc:  # the refusal is what is compared
        return type(exc)
    return (
        response.status,
        response.reason,
        response.version,
        response.chunked,
        response.length,
        response.will_close,
        response.getheader("content-type"),
        response.getheaders(),
    )


ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n",  # no length: read to the close
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\nX-Skip: 1\r\n\r\n"
    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    # Malformed: refused the same way.
    b"",
    b"garbage\r\n\r\n",
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"HTTP/1.1 99 Low\r\n\r\n",
    b"HTTP/2.0 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n",
    b"HTTP/1.1 200 OK\r\nX-Cut: 1\r\n",  # the head ends before its blank line
]


@pytest.mark.parametrize("data", ANSWERS, ids=[str(i) for i in range(len(ANSWERS))])
def test_the_same_response_and_the_same_refusals(data):
    assert _begin(response_head.HTTPResponse, data) == _begin(http.client.HTTPResponse, data)


def test_a_head_request_has_no_body():
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
    assert _begin(response_head.HTTPResponse, data, "HEAD") == _begin(
        http.client.HTTPResponse, data, "HEAD"
    )


def test_the_upstream_connections_use_it():
    from chatcompat.agents import upstream_http

    assert upstream_http.HTTPConnection.response_class is response_head.HTTPResponse
    assert upstream_http.HTTPSConnection.response_class is response_head.HTTPResponse


@pytest.mark.parametrize("end", [b"\r\r\n", b"\x00\r\n", b"\r\n"])
def test_a_long_blank_value_is_parsed_in_linear_time(end):
    # A header whose value is 64 KiB of blanks (http.client's longest line) and then a
    # line end the fast path refuses: the old pattern backtracked over every split of
    # the blanks (O(n^2), minutes of one worker's CPU); this test would not finish.
    head = b"X-A:" + b" " * 65000 + end + b"X-After: 1\r\n\r\n"
    expected = http.client.parse_headers(io.BytesIO(head))
    parsed = response_head.parse_head(http.client._read_headers(io.BytesIO(head)))
    assert parsed.items() == expected.items()
