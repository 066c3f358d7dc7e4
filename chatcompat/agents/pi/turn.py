"""One run on one pi process: pi's events to the agent's, abort, back to idle.

:class:`PiTurn` sends ``prompt`` and turns what pi streams into the agent events
(:meth:`PiTurn.run`); :meth:`PiTurn.abort` is the cancellation callback;
:meth:`PiTurn.settle` brings the process back to idle after the run, however it
ended, and says whether it may serve again. :func:`session_file` writes a history
as a pi session file.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
import typing as t
import uuid

from ...history import message_body
from ...history import sender_label
from ...messages import Message
from ..base import AgentError
from ..base import Cancellation
from ..base import Event
from ..base import Finish
from ..base import ReasoningDelta
from ..base import Started
from ..base import TextDelta
from ..base import Usage
from .process import PiProcess
from .process import ProcessGone

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # a silent pi: how often the run looks at its cancellation
ABORT_SECONDS = 5.0  # after abort: how long pi gets to answer before it is killed
# Dialogs of extensions (only with extensions configured): nobody is there to answer.
_DIALOGS = frozenset({"select", "confirm", "input", "editor"})
_ZERO_COST = {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0, "total": 0}
# pi's streamed pieces of the assistant message: its text, and its thinking (what a
# reasoning model, or an upstream sending reasoning_content, thinks) as reasoning.
_DELTAS: dict[str, type[TextDelta] | type[ReasoningDelta]] = {
    "text_delta": TextDelta,
    "thinking_delta": ReasoningDelta,
}


class PiTurn:
    """The state of one run; shared by the run and its cancellation callback."""

    def __init__(self, process: PiProcess, cancel: Cancellation, agent_id: str) -> None:
        self.process = process
        self.cancel = cancel
        self.agent_id = agent_id
        self.prepared = False  # the session switch went through
        self._lock = threading.Lock()
        self._prompt_id: str | None = None
        self._answered = False  # pi answered the prompt command
        self._accepted = False  # ... with success: a run is going on until agent_end
        self._ended = False  # agent_end seen
        self._abort_wanted = False
        self._abort_id: str | None = None  # the abort pi has not answered yet
        self._aborted = False  # pi answered an abort
        self._settling = False
        self._broken = False  # pi said something we cannot place

    # -- the run -----------------------------------------------------------------------

    def run(
        self, prompt: str, images: list[Message] | None = None
    ) -> t.Generator[Event, None, Finish | None]:
        """Send the prompt (with pi's ``ImageContent`` images), yield the run's events;
        return its Finish (None if cancelled).

        :raise AgentError: pi refused the prompt, its model call failed, or it died.
        """
        if self.cancel.is_set:
            return None
        try:
            with self._lock:
                self._prompt_id = self.process.next_id("prompt")
                command: Message = {"id": self._prompt_id, "type": "prompt", "message": prompt}
                if images:
                    command["images"] = images
                self.process.send(command)
            started = False
            usage = [0, 0, 0, 0, 0]  # prompt, completion, total, cache read, cache write
            stop_reason = error = None
            while True:
                message = self.process.receive(POLL_SECONDS)
                if message is None:
                    if self.cancel.is_set:
                        return None
                    continue
                kind = message.get("type")
                if kind == "message_update":
                    event = message.get("assistantMessageEvent") or {}
                    delta = event.get("delta")
                    piece = _DELTAS.get(str(event.get("type")))
                    if piece is not None and isinstance(delta, str) and delta:
                        if not started:
                            started = True
                            yield Started()
                        yield piece(delta)
                elif kind == "message_start":
                    reply = message.get("message") or {}
                    # The assistant message starts once the upstream answered 200; a
                    # failed or aborted call starts it already with its final stopReason.
                    failed = reply.get("stopReason") in ("error", "aborted")
                    if reply.get("role") == "assistant" and not failed:
                        if not started:
                            started = True
                            yield Started()
                elif kind == "message_end":
                    reply = message.get("message") or {}
                    if reply.get("role") == "assistant":
                        stop_reason = reply.get("stopReason")
                        error = reply.get("errorMessage")
                        _add_usage(usage, reply.get("usage"))
                elif kind == "agent_end":
                    with self._lock:
                        self._ended = True
                    break
                elif kind == "response":
                    self._on_response(message)
                elif kind == "extension_ui_request":
                    self._decline(message)
                if self.cancel.is_set:
                    return None
        except ProcessGone:
            raise AgentError(
                f"The pi process of agent {self.agent_id!r} exited during the run"
                f" ({self.process.exit_text()})."
            ) from None
        if stop_reason == "error":
            raise AgentError(f"The model call of pi failed: {error or 'no details'}")
        if stop_reason == "aborted":
            raise AgentError("pi aborted the run.")
        if stop_reason is None:
            raise AgentError("pi ended the run without a reply.")
        reason = "length" if stop_reason == "length" else "stop"
        return Finish(reason, _usage(usage))

    def abort(self) -> None:
        """The cancellation callback (any thread): abort pi's run if one is going on."""
        with self._lock:
            if self._settling:
                return  # settle() takes it from here
            self._abort_wanted = True
            if self._accepted and not self._ended and self._abort_id is None:
                self._send_abort()

    # -- after the run -------------------------------------------------------------------

    def settle(self) -> bool:
        """Bring the process back to idle; True when it may serve another run.

        A run that did not reach ``agent_end`` is aborted, and pi must answer that
        within ``ABORT_SECONDS`` (its answer follows the aborted run's ``agent_end``).
        """
        with self._lock:
            self._settling = True
        if not self.process.alive or self._broken or not self.prepared:
            return False
        if self._prompt_id is None:
            return True
        give_up = time.monotonic() + ABORT_SECONDS
        while True:
            with self._lock:
                if self._answered and (self._ended or not self._accepted):
                    if self._abort_id is None:
                        break
                elif self._accepted and (self._abort_id is None or self._aborted):
                    # Not aborted yet, or an abort that came before pi's run began.
                    self._aborted = False
                    self._send_abort()
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                log.warning("pi %d did not answer abort in %g s", self.process.pid, ABORT_SECONDS)
                return False
            try:
                message = self.process.receive(min(remaining, POLL_SECONDS))
            except ProcessGone:
                return False
            if message is None:
                continue
            kind = message.get("type")
            if kind == "agent_end":
                with self._lock:
                    self._ended = True
            elif kind == "response":
                try:
                    self._on_response(message)
                except AgentError:
                    pass  # the refused prompt of a run that is over anyway
        return not self._broken

    # -- internals ---------------------------------------------------------------------

    def _send_abort(self) -> None:
        """Send ``abort`` (with the lock held)."""
        self._abort_id = self.process.next_id("abort")
        try:
            self.process.send({"id": self._abort_id, "type": "abort"})
        except ProcessGone:
            pass  # the run sees the exit

    def _on_response(self, message: Message) -> None:
        message_id = message.get("id")
        success = bool(message.get("success"))
        with self._lock:
            if message_id is not None and message_id == self._prompt_id:
                self._answered = True
                self._accepted = success
                if success and self._abort_wanted and self._abort_id is None:
                    self._send_abort()
            elif message_id is not None and message_id == self._abort_id:
                self._abort_id = None
                self._aborted = True
                self.process.aborts += 1
                return
            elif message_id is None and not success:
                # Only a command pi could not parse is answered without its id.
                self._broken = True
                log.warning("pi %d: %s", self.process.pid, message.get("error"))
                return
            else:
                return  # the late answer to an earlier command
        if not success:
            # The first line only: the rest is advice that names local paths.
            lines = str(message.get("error") or "").strip().splitlines()
            reason = lines[0] if lines else "no details"
            raise AgentError(f"pi refused the prompt: {reason}")

    def _decline(self, request: Message) -> None:
        if request.get("method") in _DIALOGS and request.get("id"):
            reply = {"type": "extension_ui_response", "id": request["id"], "cancelled": True}
            try:
                self.process.send(reply)
            except ProcessGone:
                pass


def _add_usage(totals: list[int], usage: t.Any) -> None:
    """Add an assistant message's usage: prompt (input and cache), completion, total,
    cache reads and cache writes."""
    if not isinstance(usage, dict):
        return

    def number(key: str) -> int:
        value = usage.get(key)
        return int(value) if isinstance(value, (int, float)) else 0

    prompt = number("input") + number("cacheRead") + number("cacheWrite")
    totals[0] += prompt
    totals[1] += number("output")
    totals[2] += number("totalTokens") or prompt + number("output")
    totals[3] += number("cacheRead")
    totals[4] += number("cacheWrite")


def _usage(totals: list[int]) -> Usage:
    """The run's usage; pi's cache reads and writes are OpenAI's ``cached_tokens`` and
    ``cache_write_tokens`` (only when there were any: pi reports 0 for "not reported")."""
    prompt, completion, total, cache_read, cache_write = totals
    details = {"cached_tokens": cache_read, "cache_write_tokens": cache_write}
    details = {name: count for name, count in details.items() if count}
    return Usage(prompt, completion, total, details or None)


# -- the history as a session file ------------------------------------------------------


def session_file(history: list[Message], cwd: str, provider: str, model: str) -> str:
    """A pi session file (JSONL, version 3) holding ``history``.

    Users' and assistants' texts become pi's user and assistant messages (tool calls
    written out as text, as in the flattened prompt); tool results become user text
    ``Tool:<id>: ...``. Consecutive messages of one role are merged, so the upstream
    sees the roles alternate.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    millis = int(now.timestamp() * 1000)
    header = {"type": "session", "version": 3, "id": str(uuid.uuid4()), "timestamp": stamp,
              "cwd": cwd}  # fmt: skip
    lines = [json.dumps(header)]
    parent = None
    for role, text in _entries(history):
        if role == "user":
            message: Message = {"role": "user", "content": [{"type": "text", "text": text}],
                                "timestamp": millis}  # fmt: skip
        else:
            usage = {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0,
                     "totalTokens": 0, "cost": _ZERO_COST}  # fmt: skip
            message = {"role": "assistant", "content": [{"type": "text", "text": text}],
                       "api": "openai-completions", "provider": provider, "model": model,
                       "usage": usage, "stopReason": "stop", "timestamp": millis}  # fmt: skip
        entry_id = uuid.uuid4().hex[:8]
        entry = {"type": "message", "id": entry_id, "parentId": parent, "timestamp": stamp,
                 "message": message}  # fmt: skip
        lines.append(json.dumps(entry))
        parent = entry_id
    return "\n".join(lines) + "\n"


def _entries(history: list[Message]) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    for message in history:
        role = message["role"]
        text = message_body(message)
        if role not in ("user", "assistant"):
            text = f"{sender_label(message)}: {text}"
            role = "user"
        if not text:
            continue
        if entries and entries[-1][0] == role:
            entries[-1] = (role, f"{entries[-1][1]}\n\n{text}")
        else:
            entries.append((role, text))
    return entries
