"""chatcompat: an OpenAI-compatible /v1/chat/completions gateway in front of agents."""

from __future__ import annotations

import logging
import sys
import typing as t

from flask import Flask

if t.TYPE_CHECKING:
    from .settings import Settings

__all__ = ["create_app"]


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
    from . import cors
    from . import errors
    from . import ops
    from . import redaction
    from . import reloading
    from . import request_body
    from . import requestlog
    from . import responses_api
    from . import security_headers
    from .config import load_settings
    from .config import settings_from_document
    from .gateway import Gateway
    from .request_end import RequestEnd
    from .settings import Settings as SettingsClass

    if settings is None:
        # Under chatcompat's gunicorn config the master has read the file (and keeps
        # its last good version across reloads); otherwise read it now.
        settings = reloading.accepted() or load_settings()
    elif not isinstance(settings, SettingsClass):
        settings = settings_from_document(settings, environ=os.environ)

    # Before anything can log or answer: no configured secret may leave the gateway.
    redaction.protect(settings)
    app = Flask(__name__, static_folder=None)  # a gateway serves no files
    app.wsgi_app = RequestEnd(app.wsgi_app)  # type: ignore[method-assign]
    app.extensions["chatcompat"] = Gateway(settings)
    _configure_logging()
    errors.init_app(app)
    request_body.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(responses_api.bp)
    app.register_blueprint(ops.bp)

    # After-request hooks run last-registered first: the request log's headers, then
    # the security headers, on every response the app writes (errors included).
    security_headers.init_app(app)
    requestlog.init_app(app)
    # After the request log's: a preflight it answers is logged like any request.
    cors.init_app(app)

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
