"""The per-app runtime objects: settings, authenticator, session store, agents.

Kept in ``app.extensions["chatcompat"]``. The store and the agents are created on
first use in the process that serves (gunicorn forks workers after loading the
config, and gevent patches sockets after the fork), and again after a fork.
"""

from __future__ import annotations

import os
import threading
import typing as t

from flask import current_app

from .agents import AgentPool
from .auth import Authenticator
from .sessions import open_store

if t.TYPE_CHECKING:
    from .sessions.base import SessionStore
    from .settings import Settings


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.authenticator = Authenticator(settings)
        self._pid = 0
        self._store: SessionStore | None = None
        self._agents: AgentPool | None = None
        self._lock = threading.Lock()

    def _fresh_process(self) -> None:
        # Objects made before a fork belong to the parent: start over in the child.
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._store = open_store(self.settings.session_store, self.settings.redis)
                    self._agents = AgentPool(self.settings.agents)
                    self._pid = os.getpid()

    @property
    def store(self) -> SessionStore:
        self._fresh_process()
        assert self._store is not None
        return self._store

    @property
    def agents(self) -> AgentPool:
        self._fresh_process()
        assert self._agents is not None
        return self._agents

    def close(self) -> None:
        """Release the worker's agents and store connections (worker exit)."""
        if self._pid == os.getpid():
            if self._agents is not None:
                self._agents.close()
            if self._store is not None:
                self._store.close()
        self._pid = 0


def current_gateway() -> Gateway:
    return t.cast(Gateway, current_app.extensions["chatcompat"])
