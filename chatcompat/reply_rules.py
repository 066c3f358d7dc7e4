"""What of an agent's events reach the client, whatever the wire protocol: the
request's ``tool_choice`` enforced, the agent's reasoning relayed or dropped.

A backend may not enforce ``tool_choice`` (pi cannot, many compatible upstreams
ignore it), so the gateway does, on the events of the run (OpenClaw's contract):

- ``"required"`` or a named function: a reply that ends without calling a tool (or
  without calling the named one) fails with :class:`~chatcompat.errors.ToolChoiceNotSatisfied`
  (502) at its :class:`Finish`, before the protocol could store anything. Its text and
  refusal are held back until a call that may satisfy it starts, so a client never
  reads prose that then turns out to be a failed reply; tool calls and reasoning
  stream as they come.
- ``"none"``: tool calls are not relayed, and a ``tool_calls`` finish becomes ``stop``.

Reasoning (:class:`ReasoningDelta`) is relayed, or dropped where the agent's
``reasoning`` is ``"drop"``.
"""

from __future__ import annotations

import dataclasses
import typing as t

from . import errors
from .agents.base import Finish
from .agents.base import ReasoningDelta
from .agents.base import RefusalDelta
from .agents.base import TextDelta
from .agents.base import ToolCallDelta

if t.TYPE_CHECKING:
    from .agents.base import Event

# tool_choice values under which the reply must call a tool.
REQUIRED = "required"
NONE = "none"


def demanded_tool(tool_choice: t.Any) -> tuple[bool, str | None]:
    """Whether ``tool_choice`` (chat-shaped, already validated) demands a tool call, and
    which tool's when it names one."""
    if tool_choice == REQUIRED:
        return True, None
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        function = tool_choice.get("function") or {}
        name = function.get("name")
        return True, name if isinstance(name, str) else None
    return False, None


class ReplyRules:
    """The rules of one run; :meth:`take` each event, in order, and pass on what it
    returns.

    :param tool_choice: the request's ``tool_choice`` as chat completions shapes it
        (``"none"``, ``"auto"``, ``"required"``, ``{"type": "function", "function":
        {"name": ...}}``), or None.
    :param relay_reasoning: False drops the agent's reasoning (``reasoning: "drop"``).
    """

    def __init__(self, tool_choice: t.Any, relay_reasoning: bool = True) -> None:
        self._no_tools = tool_choice == NONE
        self._demanded, self._name = demanded_tool(tool_choice)
        self._relay_reasoning = relay_reasoning
        self._names: dict[int, str] = {}  # tool call index -> its name so far
        self._held: list[Event] = []
        self._holding = self._demanded
        #: Nothing to enforce or drop: every event passes as it is (the usual request,
        #: whose run skips :meth:`take`).
        self.passive = not self._demanded and not self._no_tools and relay_reasoning

    def take(self, event: Event) -> list[Event]:
        """The events to pass on for ``event`` (none, it, or held ones before it).

        :raise errors.ToolChoiceNotSatisfied: ``event`` is the :class:`Finish` of a
            reply that did not call the tool the request demanded.
        """
        if isinstance(event, ReasoningDelta):
            return [event] if self._relay_reasoning else []
        if isinstance(event, ToolCallDelta):
            if self._no_tools:
                return []
            if event.name:
                self._names[event.index] = self._names.get(event.index, "") + event.name
            if self._holding and self._called_demanded():
                # The prose goes first, as the agent produced it.
                self._holding = False
                held, self._held = self._held, []
                return [*held, event]
            return [event]
        if isinstance(event, Finish):
            if self._demanded and not self._called_demanded():
                raise errors.ToolChoiceNotSatisfied(self._unmet_message(), param="tool_choice")
            if self._no_tools and event.reason == "tool_calls":
                event = dataclasses.replace(event, reason="stop")
            held, self._held = self._held, []
            return [*held, event]
        if self._holding and isinstance(event, (TextDelta, RefusalDelta)):
            self._held.append(event)
            return []
        return [event]

    def _called_demanded(self) -> bool:
        """A call of the demanded tool has started. While the reply streams a name
        may still grow (the held prose is then released a little early); at the
        Finish the names are complete and the answer exact."""
        if self._name is None:
            return any(self._names.values())
        return self._name in self._names.values()

    def _unmet_message(self) -> str:
        if self._name is None:
            return "tool_choice=required was not satisfied by the agent's reply: it called no tool."
        return (
            f"tool_choice required a {self._name!r} tool call, but the agent's reply"
            " did not make one."
        )
