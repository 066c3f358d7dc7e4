"""The reply of a run, accumulated from its events, whatever the wire protocol.

:class:`Reply` adds up the text, refusal, tool calls, token log probabilities, usage,
finish reason and the backend's service tier / fingerprint that an agent streamed. A
wire protocol renders it in its own shapes; :meth:`Reply.message` is the assistant
message the run stores as the turn (history keeps messages in one format).
"""

from __future__ import annotations

import typing as t

from ..agents.base import Finish
from ..agents.base import ReasoningDelta
from ..agents.base import RefusalDelta
from ..agents.base import ReplyInfo
from ..agents.base import TextDelta
from ..agents.base import ToolCallDelta
from ..messages import Message

if t.TYPE_CHECKING:
    from ..agents.base import Event
    from ..agents.base import Usage


class Reply:
    """Accumulates the events of a run into the assistant message."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.calls: dict[int, dict[str, t.Any]] = {}
        self.finish_reason = "stop"
        self.usage: Usage | None = None
        # Token log probabilities, merged over the pieces; None until some arrive.
        self.logprobs_content: list[dict[str, t.Any]] | None = None
        self.logprobs_refusal: list[dict[str, t.Any]] | None = None
        self.service_tier: str | None = None
        self.system_fingerprint: str | None = None
        self.refusal_parts: list[str] = []
        self.reasoning_parts: list[str] = []

    def add(self, event: Event) -> None:
        """Take one agent event into the reply (events it does not hold are ignored)."""
        if isinstance(event, (TextDelta, RefusalDelta)):
            if isinstance(event, TextDelta):
                self.parts.append(event.text)
            else:
                self.refusal_parts.append(event.text)
            if event.logprobs is not None:
                if event.logprobs.content is not None:
                    if self.logprobs_content is None:
                        self.logprobs_content = []
                    self.logprobs_content.extend(event.logprobs.content)
                if event.logprobs.refusal is not None:
                    if self.logprobs_refusal is None:
                        self.logprobs_refusal = []
                    self.logprobs_refusal.extend(event.logprobs.refusal)
        elif isinstance(event, ReasoningDelta):
            self.reasoning_parts.append(event.text)
        elif isinstance(event, ReplyInfo):
            self.service_tier = event.service_tier
            self.system_fingerprint = event.system_fingerprint
        elif isinstance(event, ToolCallDelta):
            call = self.calls.setdefault(
                event.index,
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if event.id:
                call["id"] = event.id
            if event.name:
                call["function"]["name"] += event.name
            call["function"]["arguments"] += event.arguments
        elif isinstance(event, Finish):
            self.finish_reason = event.reason
            self.usage = event.usage

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def content(self) -> str | None:
        """The message content: None for a reply made only of tool calls (OpenAI's shape)."""
        text = self.text
        return text if text or not self.calls else None

    @property
    def refusal(self) -> str | None:
        """The model's refusal, relayed to the client (not stored: the turn's content
        stays the text, empty for a refusal)."""
        return "".join(self.refusal_parts) or None

    @property
    def reasoning(self) -> str | None:
        """The reasoning the agent reported, relayed but never stored (None: none)."""
        return "".join(self.reasoning_parts) or None

    @property
    def tool_calls(self) -> list[dict[str, t.Any]]:
        """The tool calls in index order, as history stores them."""
        return [self.calls[index] for index in sorted(self.calls)]

    def message(self) -> Message:
        """The assistant message as the turn stores it."""
        message: Message = {"role": "assistant", "content": self.content}
        if self.calls:
            message["tool_calls"] = self.tool_calls
        return message
