"""Keep configured secrets out of everything the gateway says: error envelopes, stream
error frames and log records.

The secrets (:func:`secrets_of`): the gateway's token or password, the password of a
Redis session store, the agents' keys (``apiKey``; the value of the variable
``apiKeyEnv`` names, read when the app is built and again whenever an agent reads its
key; ``apiKey`` at any depth, so also in pi's ``models``), and the values of
``headers``, of pi's ``env`` and of the variables pi's ``passEnv`` passes whose names
say they hold a secret (``Authorization``, ``api-key``, ``ANTHROPIC_API_KEY``,
``GITHUB_TOKEN``: :data:`~chatcompat.settings.SECRET_NAME`); other ``env`` values are configuration.

What is replaced by :data:`REDACTED`: every occurrence of a secret, and of its
leading part once that part is long enough to matter (half the secret or
:data:`LEADING_PART` characters, whichever is shorter), since upstreams sometimes quote
a truncated key. Masked forms (``sk-abc***...xyz``) are the upstream's own business.
Secrets shorter than :data:`MIN_LENGTH` are never searched for: redacting ``admin``
would mangle every message and protect nothing.

One :class:`Redactor` per process (:data:`SECRETS`), because log records are made
everywhere in the process, outside any request: :func:`protect` adds an app's secrets
to it and makes every log record pass through it when it is created (a ``Filter`` on
a logger would miss its child loggers' records, one on our handler would miss the
handlers of pytest or of a host application).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import typing as t

from .settings import SECRET_KEY
from .settings import SECRET_NAME
from .settings import StoreURL
from .settings import StoreURLError

if t.TYPE_CHECKING:
    from .settings import Settings

REDACTED = "<redacted>"
MIN_LENGTH = 8
LEADING_PART = 20
# "Bearer <token>", "Basic <base64>": the credential is also quoted without its scheme.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9_-]* +(\S.*)")


class Redactor:
    """Replaces the secrets it knows in text. Thread-safe; secrets are only added."""

    def __init__(self, secrets: t.Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._known: frozenset[str] = frozenset()
        # (leading part to look for, whole secret), the longest secrets first so that
        # a secret containing another is replaced whole.
        self._heads: tuple[tuple[str, str], ...] = ()
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Protect these strings too (those under :data:`MIN_LENGTH` are ignored)."""
        new = {s for s in secrets if s and len(s) >= MIN_LENGTH} - self._known
        if not new:  # the usual case (an agent adds its key on every run): no lock
            return
        with self._lock:
            known = self._known | new
            every = sorted(known, key=len, reverse=True)
            self._heads = tuple((secret[: _head_length(secret)], secret) for secret in every)
            self._known = known

    def redact(self, text: str) -> str:
        """``text`` with every secret (and long leading part of one) replaced."""
        for head, secret in self._heads:
            if head in text:
                text = _replace(text, head, secret)
        return text

    def redact_value(self, value: t.Any) -> t.Any:
        """Like :meth:`redact` for the strings in a JSON-like value (a new value)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self.redact_value(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_value(item) for item in value]
        return value

    def __bool__(self) -> bool:
        return bool(self._heads)

    def redact_record(self, record: logging.LogRecord) -> None:
        """Redact a log record in place: its message (with its arguments merged in),
        its traceback and its stack."""
        if isinstance(record.msg, dict):  # the request lines of chatcompat.requestlog
            record.msg = self.redact_value(record.msg)
        else:
            try:
                message = record.getMessage()
            except Exception:
                return  # a broken format; logging reports it when the record is emitted
            redacted = self.redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        if isinstance(record.exc_info, tuple) and not record.exc_text:
            # Formatters use exc_text when it is set (ours and the standard one).
            record.exc_text = self.redact(_FORMATTER.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)


def _head_length(secret: str) -> int:
    return max(MIN_LENGTH, min(LEADING_PART, (len(secret) + 1) // 2))


def _replace(text: str, head: str, secret: str) -> str:
    """Replace each occurrence of ``head`` and as much of the rest of ``secret`` as
    follows it."""
    parts = []
    start = 0
    while (found := text.find(head, start)) >= 0:
        end = found + len(head)
        while end - found < len(secret) and end < len(text) and text[end] == secret[end - found]:
            end += 1
        parts += [text[start:found], REDACTED]
        start = end
    parts.append(text[start:])
    return "".join(parts)


_FORMATTER = logging.Formatter()

SECRETS = Redactor()
"""The process's redactor: what leaves the gateway goes through it."""


def redact(text: str) -> str:
    """``text`` without the process's secrets."""
    return SECRETS.redact(text)


def secrets_of(settings: Settings, environ: t.Mapping[str, str]) -> set[str]:
    """Every secret in ``settings`` (see the module docstring), with the values of the
    variables it names read from ``environ``."""
    found = {settings.auth_secret or ""}
    with contextlib.suppress(StoreURLError):  # as written, and as the store sends them
        found |= StoreURL.parse(settings.session_store).secrets
    for agent in settings.agents:
        found |= _option_secrets(agent.options, environ)
    found |= {key.token or "" for key in settings.api_keys}  # named keys (SPEC 16)
    return {secret for secret in found if secret}


def _option_secrets(options: t.Mapping[str, t.Any], environ: t.Mapping[str, str]) -> set[str]:
    found: set[str] = set()
    variable = options.get("apiKeyEnv")
    if isinstance(variable, str):
        found.add(environ.get(variable, "").strip())
    for name in options.get("passEnv") or ():
        if isinstance(name, str) and SECRET_NAME.search(name):
            found.add(environ.get(name, ""))
    found |= _named_secrets(options)
    return found


def _named_secrets(value: t.Any, name: str = "", parent: str = "") -> set[str]:
    """String values that are secrets by their name, at any depth (``apiKey``, pi's
    ``models`` providers, ``headers`` and ``env`` entries)."""
    if isinstance(value, dict):
        found: set[str] = set()
        for key, item in value.items():
            found |= _named_secrets(item, str(key), name)
        return found
    if not isinstance(value, str):
        return set()
    # Options go by SECRET_KEY: they are too varied (maxTokensField holds "max_tokens")
    # for the looser SECRET_NAME.
    if SECRET_KEY.search(name) or (parent in ("headers", "env") and SECRET_NAME.search(name)):
        credential = _SCHEME.fullmatch(value)
        return {value, credential[1]} if credential else {value}
    return set()


def protect(settings: Settings, environ: t.Mapping[str, str] | None = None) -> None:
    """Add the secrets of ``settings`` to the process's redactor, and redact every log
    record made from now on.

    :param environ: where ``apiKeyEnv`` and ``passEnv`` variables are read;
        ``os.environ`` when None.
    """
    SECRETS.add(*secrets_of(settings, os.environ if environ is None else environ))
    _install_record_factory()


_installed = False
_install_lock = threading.Lock()


def _install_record_factory() -> None:
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
        make_record = logging.getLogRecordFactory()

        def redacted_record(*args: t.Any, **kwargs: t.Any) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            if SECRETS:
                SECRETS.redact_record(record)
            return record

        logging.setLogRecordFactory(redacted_record)
