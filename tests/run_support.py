"""Building a :class:`~chatcompat.run.Run` on the scripted agent, outside any request."""

from __future__ import annotations

import typing as t

from chatcompat.agents import backend_class
from chatcompat.requestlog import RequestRecord
from chatcompat.run import Run
from chatcompat.sessions.base import StoreUnreachable
from chatcompat.settings import AgentConfig
from tests.conftest import SCRIPTED

SCRIPTED_AGENT = AgentConfig(id="scripted", backend=SCRIPTED, timeout_seconds=5)


def make_run(
    settings: t.Any,
    store: t.Any,
    agent_config: AgentConfig,
    key: str = "agent:scripted:k",
    client_socket: t.Any = None,
    sticky: bool = True,
    idempotency: t.Any = None,
    store_turn: bool = True,
    stream: bool = True,
) -> Run:
    return Run(
        settings=settings,
        store=store,
        agent=backend_class(agent_config.backend)(agent_config),
        agent_config=agent_config,
        session_key=key,
        sticky=sticky,
        model="m",
        client_socket=client_socket,
        record=RequestRecord("r", "POST", "/"),
        idempotency=idempotency,
        store_turn=store_turn,
        stream=stream,
    )


class LostReplies:
    """Wraps a store: the first ``failures`` turn writes are applied, then raise as if
    their reply had been lost (a timeout after Redis ran the command)."""

    def __init__(self, store, failures, lands=True):
        self.store = store
        self.failures = failures
        self.lands = lands
        self.turn_ids = []

    def __getattr__(self, name):
        return getattr(self.store, name)

    def append_turn(self, *args, **kwargs):
        self.turn_ids.append(kwargs["turn_id"])
        if self.lands:
            self.store.append_turn(*args, **kwargs)
        if len(self.turn_ids) <= self.failures:
            raise StoreUnreachable("Timeout reading from socket")


class KeepsResponses:
    """Wraps a store: keeps the StoredResponse each turn write carries, and writes the
    turn without it (the Responses store is tested with the stores, not here)."""

    def __init__(self, store):
        self.store = store
        self.responses = {}

    def __getattr__(self, name):
        return getattr(self.store, name)

    def append_turn(self, *args, response=None, **kwargs):
        if response is not None:
            self.responses[response.id] = response
        return self.store.append_turn(*args, **kwargs)

    def get_response(self, id):
        return self.responses.get(id)
