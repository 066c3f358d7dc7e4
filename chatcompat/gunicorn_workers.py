"""gunicorn's gevent and gthread workers, answering parser errors with our JSON envelope.

When gunicorn cannot parse a request (a bad request line, a control character or
obsolete line folding in a header, headers over its limits...) no app code runs: the
worker's ``handle_error`` answers, and gunicorn's own answer is an HTML page. Ours is
the OpenAI error envelope (the class from :mod:`chatcompat.gunicorn_errors`), with the
headers every chatcompat response has (``x-request-id`` and the security headers) and
``Connection: close``, and one request log line.

One more case reaches ``handle_error`` after the app has already answered: gunicorn
skips a body the app did not read (a 401 sent before reading it, say) and finds it
malformed. The client has its answer; a second one would be taken as the reply to its
next request. The connection is closed without writing anything.

``chatcompat.gunicorn_config`` maps ``CHATCOMPAT_WORKER_CLASS`` (gevent, gthread) to
:class:`GeventWorker` and :class:`ThreadWorker`.
"""

from __future__ import annotations

import functools
import http
import typing as t
import uuid
import weakref

from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker as _GeventWorker
from gunicorn.workers.gthread import ThreadWorker as _ThreadWorker

from .gunicorn_errors import from_gunicorn
from .request_body import CLOSE_CONNECTION_ATTR
from .security_headers import SECURITY_HEADERS

if t.TYPE_CHECKING:
    from .errors import APIError


def error_response(error: APIError, request_id: str) -> bytes:
    """A complete HTTP/1.1 response carrying ``error``'s envelope, closing the connection.

    :param error: what to answer.
    :param request_id: the ``x-request-id`` to send.
    """
    body = error.body()
    try:
        reason = http.HTTPStatus(error.status).phrase
    except ValueError:
        reason = "Error"
    headers = [
        ("Connection", "close"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("x-request-id", request_id),
        *SECURITY_HEADERS.items(),
        *error.headers().items(),
    ]
    head = f"HTTP/1.1 {error.status} {reason}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (head + "\r\n").encode("latin-1") + body


class JSONErrorsMixin:
    """``handle_error`` for gunicorn workers: the JSON envelope, never HTML."""

    log: t.Any

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        # The last request handed to the app on each open connection: its body's state
        # tells whether an error came from skipping that body after its answer.
        self._requests: weakref.WeakKeyDictionary[t.Any, t.Any] = weakref.WeakKeyDictionary()

    def _started(self, req: t.Any, sock: t.Any) -> None:
        self._requests[sock] = req
        # request_body.read_body calls this when the body failed: "Connection: close".
        # Through a weak reference: the body must not keep its request alive.
        setattr(req.body, CLOSE_CONNECTION_ATTR, functools.partial(_force_close, weakref.ref(req)))

    def handle_error(self, req: t.Any, client: t.Any, addr: t.Any, exc: BaseException) -> None:
        try:
            self._answer_error(req, client, addr, exc)
        except Exception:  # this runs where gunicorn expects no exception: never crash
            self.log.exception("Failed to answer an invalid request")

    def _answer_error(self, req: t.Any, client: t.Any, addr: t.Any, exc: BaseException) -> None:
        previous = req if req is not None else self._requests.get(client)
        if getattr(getattr(previous, "body", None), "failed", False):
            # Skipping an answered request's body failed; the app read none of it (its
            # own read errors are answered by the app, and gunicorn then just closes).
            self.log.debug("Closing after an unreadable request body: %s", exc)
            return
        if req is None and not isinstance(exc, Exception):
            return  # GreenletExit or SystemExit while waiting for a request: nobody asked
        error = from_gunicorn(exc)
        ip = addr[0] if addr else ""
        if error.status >= 500:
            self.log.error("Error handling request from ip=%s", ip, exc_info=exc)
        else:
            self.log.warning("Invalid request from ip=%s: %s", ip, exc)
        request_id = uuid.uuid4().hex
        try:
            util.write_nonblock(client, error_response(error, request_id))
        except OSError:
            self.log.debug("Failed to send the error answer.")
        _log_request(req, request_id, error.status)


def _force_close(req_ref: weakref.ref[t.Any]) -> None:
    req = req_ref()
    if req is not None:
        req.force_close()  # gunicorn then answers "Connection: close" and closes


def _log_request(req: t.Any, request_id: str, status: int) -> None:
    # Imported here: metrics must be set up in the worker, not in the master that
    # loads this module to find the worker class.
    from .requestlog import RequestRecord

    method, path = getattr(req, "method", None) or "-", getattr(req, "path", None) or "-"
    record = RequestRecord(request_id, method, path)
    record.route = "unmatched"
    record.status = status
    record.emit()


class GeventWorker(JSONErrorsMixin, _GeventWorker):
    """gunicorn's gevent worker, with JSON error answers."""

    def handle_request(self, listener_name: t.Any, req: t.Any, sock: t.Any, addr: t.Any) -> t.Any:
        self._started(req, sock)
        return super().handle_request(listener_name, req, sock, addr)


class ThreadWorker(JSONErrorsMixin, _ThreadWorker):
    """gunicorn's gthread worker, with JSON error answers."""

    def handle_request(self, req: t.Any, conn: t.Any) -> t.Any:
        self._started(req, conn.sock)
        return super().handle_request(req, conn)
