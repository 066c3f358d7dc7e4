"""The response writer that sends the head with the first body bytes: the same bytes
as gunicorn's own writer, in fewer sends."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
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


def test_install_keeps_gunicorns_class_without_the_hook(monkeypatch):
    monkeypatch.setattr(wsgi, "Response", type("Older", (), {}))
    assert not gunicorn_response.install()
    assert wsgi.Response.__name__ == "Older"


SAYS_FAST_PATH_OFF = """
import types
from gunicorn.http import wsgi
if {hook_missing}:
    del wsgi.Response._emit_body  # as in a gunicorn release without the hook
from chatcompat import gunicorn_config
said = []
server = types.SimpleNamespace(log=types.SimpleNamespace(warning=said.append))
gunicorn_config.on_starting(server)  # gunicorn calls it once, when the master starts
print(repr(said))
"""


@pytest.mark.parametrize("hook_missing", [True, False])
@pytest.mark.live
def test_serve_says_once_at_start_when_the_fast_path_is_off(tmp_path, hook_missing):
    # gunicorn_config is the master's config module: run it in a process of its own.
    (tmp_path / "chatcompat.json5").write_text('{gateway: {auth: {token: "t0123456789"}}}')
    env = {**os.environ, "CHATCOMPAT_CONFIG": str(tmp_path / "chatcompat.json5")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    script = SAYS_FAST_PATH_OFF.format(hook_missing=hook_missing)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    said = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    if hook_missing:
        assert len(said) == 1 and "_emit_body" in said[0]
    else:
        assert said == []
