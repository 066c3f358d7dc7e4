"""What a request holds is given back however it ends: also when something fails after
the view returned (an ``after_request`` hook, or a ``start_response`` that refuses the
response's headers), before the server ever gets the body to close."""

from __future__ import annotations

import pytest
from werkzeug.test import EnvironBuilder

from chatcompat import metrics
from chatcompat.request_end import RequestEnd
from chatcompat.request_end import on_request_end
from tests.conftest import AUTH

STREAM = {
    "model": "openclaw",
    "user": "dora",
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}
KEY = "agent:main:openai-user:dora"


def active_streams() -> float:
    return metrics.ACTIVE_STREAMS._value.get()


def lock_is_free(app) -> bool:
    store = app.extensions["chatcompat"].store
    if not store.acquire_lock(KEY, "probe", 5):
        return False
    store.release_lock(KEY, "probe")
    return True


def test_an_after_request_hook_that_fails_still_frees_the_lock_and_the_gauge(app):
    @app.after_request
    def fails(response):  # runs before the gateway's own hook (reverse order)
        raise RuntimeError("a failure after the view returned")

    before = active_streams()
    response = app.test_client().post("/v1/chat/completions", json=STREAM, headers=AUTH)
    assert response.status_code == 500
    response.close()
    assert lock_is_free(app)
    assert active_streams() == before


def test_a_start_response_that_refuses_the_headers_still_frees_the_lock_and_the_gauge(app):
    def refusing_start_response(status, headers, exc_info=None):
        raise ValueError("invalid header value")  # as gunicorn's InvalidHeader

    environ = EnvironBuilder(
        path="/v1/chat/completions", method="POST", json=STREAM, headers=AUTH
    ).get_environ()
    before = active_streams()
    with pytest.raises(ValueError):
        app(environ, refusing_start_response)
    assert lock_is_free(app)
    assert active_streams() == before


def test_callbacks_run_once_each_even_when_one_fails():
    ran = []

    def app(environ, start_response):
        on_request_end(environ, lambda: ran.append("first"))
        on_request_end(environ, lambda: 1 / 0)
        on_request_end(environ, lambda: ran.append("third"))
        start_response("200 OK", [])
        return [b"body"]

    body = RequestEnd(app)({}, lambda *args: None)
    assert list(body) == [b"body"] and ran == []
    body.close()
    body.close()
    assert ran == ["first", "third"]


def test_a_request_without_callbacks_gets_its_body_unwrapped():
    body = [b"as is"]
    assert RequestEnd(lambda environ, start_response: body)({}, None) is body


def test_callbacks_run_even_when_the_body_fails_to_close():
    ran = []

    class Body(list):
        def close(self):
            raise RuntimeError("the body's own cleanup failed")

    def app(environ, start_response):
        on_request_end(environ, lambda: ran.append("released"))
        return Body([b"body"])

    body = RequestEnd(app)({}, lambda *args: None)
    assert list(body) == [b"body"]
    with pytest.raises(RuntimeError):
        body.close()
    assert ran == ["released"]
