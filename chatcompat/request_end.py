"""Work that must happen when a request ends, however it ends.

A streamed response outlives its view: the session lock and the active-streams gauge
a view takes are given back when the server closes the body. Flask's
``Response.call_on_close`` is not enough for that, because its callbacks belong to one
response object: an ``after_request`` hook that raises replaces that response with an
error page, and a ``start_response`` that refuses a header (gunicorn refuses CR, LF and
NUL in values) drops it, and either way the callbacks never run. Registered with
:func:`on_request_end`, they run when the server closes whatever body went out, or at
once when the application raised instead of returning one.
"""

from __future__ import annotations

import logging
import typing as t

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIApplication
    from _typeshed.wsgi import WSGIEnvironment

log = logging.getLogger(__name__)

_CALLBACKS = "chatcompat.on_request_end"


def on_request_end(environ: t.MutableMapping[str, t.Any], callback: t.Callable[[], t.Any]) -> None:
    """Run ``callback`` once the request ends (body closed, or the app raised).

    :param environ: the WSGI environ of a request served through :class:`RequestEnd`.
    """
    environ[_CALLBACKS].append(callback)


class RequestEnd:
    """WSGI middleware that runs the :func:`on_request_end` callbacks of each request."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> t.Iterable[bytes]:
        callbacks: list[t.Callable[[], t.Any]] = []
        environ[_CALLBACKS] = callbacks
        try:
            body = self.app(environ, start_response)
        except BaseException:
            _run(callbacks)
            raise
        if not callbacks:  # most requests: nothing to wrap
            return body
        return _Body(body, callbacks)


class _Body:
    """The app's body, whose ``close()`` runs the callbacks even when the body's own
    close raises (werkzeug's ClosingIterator would skip them then)."""

    def __init__(self, body: t.Iterable[bytes], callbacks: list[t.Callable[[], t.Any]]) -> None:
        self._body = body
        self._callbacks = callbacks

    def __iter__(self) -> t.Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            _run(self._callbacks)


def _run(callbacks: list[t.Callable[[], t.Any]]) -> None:
    # Each one runs, whatever the others do; none runs twice.
    while callbacks:
        callback = callbacks.pop(0)
        try:
            callback()
        except Exception:
            log.exception("cleanup at the end of a request failed")
