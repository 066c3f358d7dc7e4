"""A test backend driven by directives in the last message, e.g. ``[[fail-after:2]]``.

Loaded by dotted path (``backend: "tests.scripted_agent.ScriptedAgent"``), so the
live gunicorn tests use it the same way as the in-process ones.

Directives (one per message):
    [[reject:<status>]]   AgentRejected before starting (upstream said 4xx)
    [[fail]]              AgentError before starting (502)
    [[timeout]]           AgentTimeout before starting (504)
    [[crash]]             a plain RuntimeError before starting (500)
    [[fail-after:<n>]]    stream n words, then AgentError (error frame)
    [[silent:<s>]]        wait s seconds before the first word (keepalives flow)
    [[hang]]              start, then never finish until cancelled
    [[tools]]             answer with two tool calls and finish_reason tool_calls
    [[tool]]              answer "Checking." and one tool call, finish_reason tool_calls
    [[refuse]]            refuse ("I can't help with that.") instead of answering
    [[length]]            echo, then finish_reason length (cut by the token limit)
    [[think]]             reason first (THOUGHTS, in two ReasoningDelta pieces), then echo
    [[slow:<ms>]]         pause ms before each word
    [[flood]]             stream 8 KiB pieces without end until cancelled
    [[gate]]              start, then wait until the file ``open_gate()`` makes exists
                          (its path: ``$SCRIPTED_AGENT_LOG`` + ``.gate``), then echo
Anything else is echoed word by word. Each run appends a line to ``$SCRIPTED_AGENT_LOG``
(when set): what it received and how it ended, for tests to inspect.
"""

from __future__ import annotations

import json
import os
import re
import time
import typing as t
import uuid

from chatcompat.agents.base import Agent
from chatcompat.agents.base import AgentError
from chatcompat.agents.base import AgentRejected
from chatcompat.agents.base import AgentRequest
from chatcompat.agents.base import AgentTimeout
from chatcompat.agents.base import Cancellation
from chatcompat.agents.base import Event
from chatcompat.agents.base import Finish
from chatcompat.agents.base import ReasoningDelta
from chatcompat.agents.base import RefusalDelta
from chatcompat.agents.base import Started
from chatcompat.agents.base import TextDelta
from chatcompat.agents.base import ToolCallDelta
from chatcompat.agents.base import Usage
from chatcompat.history import message_text

DIRECTIVE = re.compile(r"\[\[([a-z-]+)(?::([0-9.]+))?\]\]")
THOUGHTS = ("Let me think. ", "Echo it.")


class ScriptedAgent(Agent):
    name = "scripted"
    stops_at_once = True  # every wait is on the cancellation

    def run(self, request: AgentRequest, cancel: Cancellation) -> t.Iterator[Event]:
        text = message_text(request.messages[-1])
        match = DIRECTIVE.search(text)
        verb, value = (match.group(1), match.group(2)) if match else ("", None)
        outcome = "finished"
        run_id = uuid.uuid4().hex  # pairs a run's start and end lines
        _log(
            {
                "event": "start",
                "run": run_id,
                "at": time.time(),
                "session": request.session_key,
                "messages": request.messages,
                "system": request.system_prompt,
                "params": request.params,
                "history_count": request.history_count,
            }
        )
        try:
            if verb == "reject":
                raise AgentRejected(
                    int(value or 400), "upstream says no", "invalid_request_error", "upstream_code"
                )
            if verb == "fail":
                raise AgentError("upstream exploded")
            if verb == "timeout":
                raise AgentTimeout("upstream too slow")
            if verb == "crash":
                raise RuntimeError("secret internals must not leak")
            yield Started()
            if verb == "silent" and cancel.wait(float(value or 1)):
                outcome = "cancelled"
                return
            if verb == "hang":
                while not cancel.wait(0.05):
                    pass
                outcome = "cancelled"
                return
            if verb == "flood":
                piece = "x" * 8192
                while not cancel.is_set:
                    yield TextDelta(piece)
                outcome = "cancelled"
                return
            if verb == "gate":
                while not os.path.exists(os.environ["SCRIPTED_AGENT_LOG"] + ".gate"):
                    if cancel.wait(0.01):
                        outcome = "cancelled"
                        return
            if verb == "tools":
                yield from _tool_calls()
                yield Finish("tool_calls", Usage(3, 4, 7))
                return
            if verb == "tool":
                yield TextDelta("Checking.")
                yield ToolCallDelta(0, id="call_w", name="get_weather", arguments='{"city":')
                yield ToolCallDelta(0, arguments='"Oslo"}')
                yield Finish("tool_calls", Usage(3, 4, 7))
                return
            if verb == "refuse":
                yield RefusalDelta("I can't ")
                yield RefusalDelta("help with that.")
                yield Finish("stop", Usage(2, 5, 7))
                return
            if verb == "think":
                for thought in THOUGHTS:
                    yield ReasoningDelta(thought)
            delay = float(value) / 1000 if verb == "slow" else 0.0
            words = DIRECTIVE.sub("", text).split()
            for index, word in enumerate(words):
                if verb == "fail-after" and index == int(value or 0):
                    raise AgentError("the agent failed mid-stream")
                if delay and cancel.wait(delay):
                    outcome = "cancelled"
                    return
                if cancel.is_set:
                    outcome = "cancelled"
                    return
                yield TextDelta(word if index == 0 else " " + word)
            yield Finish(
                "length" if verb == "length" else "stop",
                Usage(len(request.messages), len(words), len(request.messages) + len(words)),
            )
        except GeneratorExit:
            outcome = "closed"
            raise
        except Exception as exc:
            outcome = f"raised {type(exc).__name__}"
            raise
        finally:
            _log(
                {
                    "event": "end",
                    "run": run_id,
                    "session": request.session_key,
                    "outcome": outcome,
                    "at": time.time(),
                }
            )


def _tool_calls() -> t.Iterator[Event]:
    yield ToolCallDelta(0, id="call_1", name="get_weather", arguments="")
    yield ToolCallDelta(0, arguments='{"city":')
    yield ToolCallDelta(0, arguments='"Paris"}')
    yield ToolCallDelta(1, id="call_2", name="get_time", arguments="{}")


def _log(line: dict[str, t.Any]) -> None:
    path = os.environ.get("SCRIPTED_AGENT_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")


def open_gate(log_path: str) -> None:
    """Let every run waiting at ``[[gate]]`` (with this agent log) go on."""
    with open(log_path + ".gate", "w", encoding="utf-8"):
        pass


def read_log(path: str) -> list[dict[str, t.Any]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
