"""The configuration the gunicorn master accepted last, which its workers serve.

gunicorn forks every worker from the master, and a worker that fails to boot makes
the master halt. So the config file is read and validated in the master only: at
start (:func:`load_initial`, from ``chatcompat.gunicorn_config``) and on every SIGHUP
(:func:`reload`, from its ``on_reload`` hook, which gunicorn calls before it forks
the new workers). A worker builds its app from :func:`accepted`, inherited through
the fork, and never reads the file. Hence:

* a file that no longer validates is logged, one line per problem, and the new
  workers serve the last good config: the gateway never goes down on a reload;
* a worker that gunicorn replaces between reloads (one crashed, or was killed) serves
  the same config as its siblings, whatever the file says by then.

A reload reads the file the master started with, when it started with one: a file
that was moved away does not silently become the built-in defaults.
"""

from __future__ import annotations

import os
import typing as t

from . import redaction
from .config import ConfigError
from .config import load_settings

if t.TYPE_CHECKING:
    from .settings import Settings


class _Log(t.Protocol):
    def info(self, msg: str, *args: t.Any) -> None: ...

    def warning(self, msg: str, *args: t.Any) -> None: ...

    def error(self, msg: str, *args: t.Any) -> None: ...


_accepted: Settings | None = None


def accepted() -> Settings | None:
    """The settings the master accepted last; None outside a chatcompat gunicorn."""
    return _accepted


def load_initial(environ: t.Mapping[str, str] | None = None) -> Settings:
    """Load the configuration at the master's start and keep it for the workers.

    :raise ConfigError: the configuration is unusable (the master must not start).
    """
    global _accepted
    _accepted = load_settings(None, environ)
    redaction.protect(_accepted, environ)  # the master's own log lines too
    return _accepted


def reload(log: _Log, environ: t.Mapping[str, str] | None = None) -> Settings:
    """Read the configuration again (SIGHUP); keep the last good one if it is unusable.

    :param log: where the outcome goes (gunicorn's error log, in the master); a
        refused file gets one error line per problem, with its key path.
    :return: the settings the workers will serve from now on.
    """
    global _accepted
    previous = _accepted
    if previous is None:  # pragma: no cover - the master always loaded first
        return load_initial(environ)
    environ = os.environ if environ is None else environ
    try:
        settings = load_settings(previous.config_path, environ)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("chatcompat: config: %s", problem)
        log.error(
            "chatcompat: config: reload refused (%d problem(s)); the workers keep the last"
            " good configuration",
            len(exc.problems),
        )
        return previous
    _accepted = settings
    redaction.protect(settings, environ)
    log.info("chatcompat: config: reloaded %s", settings.config_path or "(built-in defaults)")
    if (settings.bind, settings.port) != (previous.bind, previous.port):
        log.warning(
            "chatcompat: config: the listen address changed to %s:%s; it applies at the"
            " next restart (the gateway still listens on %s:%s)",
            settings.bind,
            settings.port,
            previous.bind,
            previous.port,
        )
    return settings
