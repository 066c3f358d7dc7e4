"""Session stores (SPEC section 8): the contract and :func:`open_store`."""

from __future__ import annotations

import logging
import os

from .base import IdempotencyRecord
from .base import KeyedReply
from .base import Message
from .base import SessionInfo
from .base import SessionStore
from .base import StoreError
from .base import StoreUnavailable
from .base import Turn
from .sqlite_store import SQLiteStore

log = logging.getLogger(__name__)

__all__ = [
    "IdempotencyRecord",
    "KeyedReply",
    "Message",
    "SQLiteStore",
    "SessionInfo",
    "SessionStore",
    "StoreError",
    "StoreUnavailable",
    "Turn",
    "open_store",
]


def open_store(url: str) -> SessionStore:
    """Open the store named by ``sessions.store``.

    ``sqlite:////abs/path.db`` (or ``sqlite:///rel/path.db``, relative to the current
    directory; the path is taken verbatim, not percent-decoded; ``?options`` are
    ignored with a warning) opens a :class:`SQLiteStore`. ``redis://[:password@]host:port/db``
    (or ``rediss://`` for TLS) opens a
    :class:`~chatcompat.sessions.redis_store.RedisStore`. Nothing is opened yet: the
    connection is made on first use.

    :raises ValueError: for any other URL. The message never repeats the URL, which
        may carry a password.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError("the session store must be a URL (sqlite:///path or redis://host)")
    if scheme == "sqlite":
        # rest is "/" + path: "//abs/x.db" for an absolute path, "/rel/x.db" otherwise.
        path, _, query = rest.partition("?")
        if not path.startswith("/") or path in ("/", "//"):
            raise ValueError("a sqlite session store URL must look like sqlite:///path/to/file.db")
        if query:
            # The config accepts SQLAlchemy-style options; none applies here (a longer
            # busy timeout, say, would freeze gevent workers). Names only: no values.
            names = sorted({part.partition("=")[0] for part in query.split("&") if part})
            log.warning("the sqlite session store ignores the URL options %s", ", ".join(names))
        return SQLiteStore(os.path.abspath(path[1:]))
    if scheme in ("redis", "rediss"):
        from .redis_store import RedisStore  # imports redis-py only when used

        return RedisStore(url)
    raise ValueError(f"unsupported session store scheme {scheme!r} (use sqlite or redis)")
