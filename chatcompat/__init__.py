"""chatcompat: an OpenAI-compatible /v1/chat/completions gateway in front of agents."""

from __future__ import annotations

import logging
import re
import sys
import typing as t
import uuid

from flask import Flask
from flask import Response
from flask import g
from flask import request

if t.TYPE_CHECKING:
    from .settings import Settings

__all__ = ["create_app"]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def create_app(settings: Settings | t.Mapping[str, t.Any] | None = None) -> Flask:
    """Build the WSGI app.

    :param settings: a :class:`~chatcompat.settings.Settings`, a configuration
        document (validated like a config file), or None: in a gunicorn worker of
        ``chatcompat serve``, what the master accepted (:mod:`chatcompat.reloading`),
        else the config file found the usual way (``--config``/``$CHATCOMPAT_CONFIG``/...
        see SPEC 1).
    :raise ConfigError: when the configuration is unusable.
    """
    import os

    from . import api
    from . import errors
    from . import ops
    from . import redaction
    from . import reloading
    from . import request_body
    from .config import load_settings
    from .config import settings_from_document
    from .gateway import Gateway
    from .request_end import RequestEnd
    from .requestlog import RequestRecord
    from .security_headers import SECURITY_HEADERS
    from .settings import Settings as SettingsClass

    if settings is None:
        # Under chatcompat's gunicorn config the master has read the file (and keeps
        # its last good version across reloads); otherwise read it now.
        settings = reloading.accepted() or load_settings()
    elif not isinstance(settings, SettingsClass):
        settings = settings_from_document(settings, environ=os.environ)

    # Before anything can log or answer: no configured secret may leave the gateway.
    redaction.protect(settings)
    app = Flask(__name__)
    app.wsgi_app = RequestEnd(app.wsgi_app)  # type: ignore[method-assign]
    app.extensions["chatcompat"] = Gateway(settings)
    _configure_logging()
    errors.init_app(app)
    request_body.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(ops.bp)

    @app.before_request
    def start_record() -> None:
        sent = request.headers.get("x-request-id", "")
        request_id = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        g.record = RequestRecord(request_id, request.method, request.path)
        g.record.route = request.url_rule.rule if request.url_rule else "unmatched"

    @app.after_request
    def finish_record(response: Response) -> Response:
        record = g.get("record")
        if record is None:  # the request failed before before_request ran
            record = RequestRecord(uuid.uuid4().hex, request.method, request.path)
            record.route = "unmatched"
        response.headers["x-request-id"] = record.request_id
        response.headers.update(SECURITY_HEADERS)
        if record.session_key is not None:
            response.headers["x-openclaw-session-key"] = record.session_key
        record.status = response.status_code
        response.call_on_close(record.emit)
        return response

    return app


def _configure_logging() -> None:
    logger = logging.getLogger("chatcompat")
    from .requestlog import JsonFormatter

    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    # Under gunicorn nothing handles the root logger: give ours a stderr handler.
    # When the host application (or pytest) already logs, just propagate to it.
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
