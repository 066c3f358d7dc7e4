"""The ``echo`` backend: answers with the current message, word by word.

Deterministic and dependency-free, for smoke tests, demos and benchmarks. The reply
is the text of the last message of the new turn (a user message, or a tool result
after a tool call), streamed one word at a time with ``delayMs`` between words.
Usage counts whitespace-separated words, so it is real for what echo does.

Echo takes every optional request field the ``openai`` backend takes and ignores them
all (its answer never depends on sampling, tools or token limits): it stands in for a
real upstream in smoke tests, demos and benchmarks, so a client's real request must
pass unchanged. The README's table of fields says so.
"""

from __future__ import annotations

import re
import typing as t

from ..history import message_text
from .base import BACKEND_FIELDS
from .base import Agent
from .base import AgentRequest
from .base import Cancellation
from .base import Event
from .base import Finish
from .base import Started
from .base import TextDelta
from .base import Usage

# A word and the whitespace before it, so the pieces join back to the exact text.
_PIECES = re.compile(r"\s*\S+|\s+$")


class EchoAgent(Agent):
    name = "echo"
    # Accepted and ignored, on purpose (see the module docstring).
    request_fields = BACKEND_FIELDS
    takes_extension_fields = True  # ignored as well: echo stands in for an upstream
    stops_at_once = True  # its only wait is on the cancellation itself
    options_schema: t.ClassVar[dict[str, t.Any]] = {
        "type": "object",
        "properties": {
            "delayMs": {
                "type": "number",
                "minimum": 0,
                "maximum": 600000,
                "description": "Pause before each word, in milliseconds.",
            },
        },
        "additionalProperties": False,
    }

    def run(self, request: AgentRequest, cancel: Cancellation) -> t.Iterator[Event]:
        delay = float(self.config.options.get("delayMs", 0)) / 1000.0
        text = message_text(request.messages[-1]) if request.messages else ""
        yield Started()
        pieces = _PIECES.findall(text)
        for piece in pieces:
            if delay and cancel.wait(delay):
                return
            if cancel.is_set:
                return
            yield TextDelta(piece)
        prompt_words = sum(len(message_text(m).split()) for m in request.messages)
        if request.system_prompt:
            prompt_words += len(request.system_prompt.split())
        completion_words = len(text.split())
        yield Finish(
            "stop",
            Usage(prompt_words, completion_words, prompt_words + completion_words),
        )
