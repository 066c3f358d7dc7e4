"""Session stores (SPEC section 8): the contract and :func:`open_store`."""

from __future__ import annotations

import importlib

from ..settings import RedisOptions
from ..settings import StoreURL
from .base import Admission
from .base import IdempotencyRecord
from .base import KeyedReply
from .base import NotReplicated
from .base import ResponseRecord
from .base import SessionInfo
from .base import SessionStore
from .base import StoredResponse
from .base import StoreError
from .base import StoreUnreachable
from .base import Turn
from .base import WindowCount
from .sqlite_store import SQLiteStore

__all__ = [
    "Admission",
    "IdempotencyRecord",
    "KeyedReply",
    "NotReplicated",
    "ResponseRecord",
    "SQLiteStore",
    "SessionInfo",
    "SessionStore",
    "StoreError",
    "StoredResponse",
    "StoreUnreachable",
    "Turn",
    "WindowCount",
    "open_store",
    "store_class",
]


# The store class of each URL scheme (a dotted path: a store module imports its driver
# only when a configuration names it).
STORE_CLASSES = {
    "sqlite": "chatcompat.sessions.sqlite_store.SQLiteStore",
    "redis": "chatcompat.sessions.redis_store.RedisStore",
    "rediss": "chatcompat.sessions.redis_store.RedisStore",
    "redis+sentinel": "chatcompat.sessions.redis_store.RedisStore",
    "rediss+sentinel": "chatcompat.sessions.redis_store.RedisStore",
}


def store_class(scheme: str) -> type[SessionStore]:
    """The store class of a scheme :meth:`StoreURL.parse` accepts.

    :raise KeyError: for any other scheme.
    """
    module_name, _, class_name = STORE_CLASSES[scheme].rpartition(".")
    cls: type[SessionStore] = getattr(importlib.import_module(module_name), class_name)
    return cls


def open_store(url: str, redis_options: RedisOptions | None = None) -> SessionStore:
    """Open the store named by ``sessions.store``: a :class:`SQLiteStore` or a
    :class:`~chatcompat.sessions.redis_store.RedisStore` (the URL forms:
    :class:`~chatcompat.settings.StoreURL`; a relative SQLite path is relative to the
    current directory, ``?options`` of a SQLite URL are ignored with a warning).
    Nothing is opened yet: the connection is made on first use. ``redis_options`` is
    ``sessions.redis`` (replica confirmation of writes; the Redis store's only).

    :raises ValueError: for a URL that is not a store's. The message never repeats the
        URL, which may carry a password.
    """
    parsed = StoreURL.parse(url)
    return store_class(parsed.scheme).from_url(parsed, redis_options)
