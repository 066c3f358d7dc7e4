"""Agent backends by name, and the per-worker set of agent instances.

A backend is named in ``agents.list[].backend`` by a short name (``echo``), by an
entry point of the ``chatcompat.agents`` group, or by a dotted path to an
:class:`~chatcompat.agents.base.Agent` subclass (``package.module.ClassName``).
"""

from __future__ import annotations

import importlib
import threading
import typing as t
from importlib.metadata import entry_points

from .base import Agent

if t.TYPE_CHECKING:
    from ..settings import AgentConfig

BUILTIN_BACKENDS = {
    "echo": "chatcompat.agents.echo.EchoAgent",
    "openai": "chatcompat.agents.openai_upstream.OpenAIAgent",
    "pi": "chatcompat.agents.pi.agent.PiAgent",
}


class UnknownBackend(Exception):
    """The backend name resolves to no agent class."""


def backend_class(name: str) -> type[Agent]:
    """Resolve a backend name to its class.

    :raise UnknownBackend: with one message whatever went wrong.
    """
    target = BUILTIN_BACKENDS.get(name)
    if target is None:
        for entry_point in entry_points(group="chatcompat.agents"):
            if entry_point.name == name:
                target = entry_point.value.replace(":", ".")
                break
    if target is None and "." in name:
        target = name
    if target is None:
        known = ", ".join(sorted(BUILTIN_BACKENDS))
        raise UnknownBackend(f"unknown backend {name!r} (built-in: {known}, or a dotted path)")
    module_name, _, class_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UnknownBackend(f"backend {name!r} not found ({exc})") from exc
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise UnknownBackend(f"backend {name!r} is not a chatcompat Agent class")
    return cls


class AgentPool:
    """The agent instances of one worker process, built on first use."""

    def __init__(self, configs: t.Iterable[AgentConfig]) -> None:
        self._configs = {config.id: config for config in configs}
        self._agents: dict[str, Agent] = {}
        self._lock = threading.Lock()

    def get(self, agent_id: str) -> Agent:
        agent = self._agents.get(agent_id)
        if agent is None:
            with self._lock:
                agent = self._agents.get(agent_id)
                if agent is None:
                    config = self._configs[agent_id]
                    agent = backend_class(config.backend)(config)
                    self._agents[agent_id] = agent
        return agent

    def close(self) -> None:
        agents, self._agents = self._agents, {}
        for agent in agents.values():
            agent.close()
