"""From the request's messages and the stored transcript to what the agent receives.

SPEC section 9: system/developer texts become an extra system prompt (never
stored); the new turn is everything after the request's last assistant message;
a session with stored turns gets its stored transcript as history (the client's
copy of older turns is not added again), a new session gets the request's own
earlier messages.
"""

from __future__ import annotations

import json
import logging
import typing as t

from .messages import Message

SYSTEM_ROLES = frozenset({"system", "developer"})

# Reasoning a client sends back on its assistant messages (the reasoning_content it
# was given): never stored, never sent on (DeepSeek answers 400 to it in input).
REASONING_KEYS = ("reasoning_content", "reasoning")

CONTEXT_MARKER = "[Chat messages since your last reply - for context]"
CURRENT_MARKER = "[Current message - respond to this]"

log = logging.getLogger(__name__)


class MissingUserMessage(ValueError):
    """The new turn has no user text, image or tool result to answer."""


def message_text(message: Message) -> str:
    """The text of a message: a string content, or its text parts joined by newlines."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                text = part.get("text")
                if not isinstance(text, str):
                    text = part.get("input_text")
                if isinstance(text, str):
                    texts.append(text)
        return "\n".join(texts)
    return ""


def has_image(message: Message) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") == "image_url" for part in content
    )


class Conversation(t.NamedTuple):
    """The request's messages, split as SPEC 9 uses them."""

    system_text: str  # system/developer texts joined by a blank line ("" when none)
    earlier: list[Message]  # up to and including the last assistant message
    new_turn: list[Message]  # after it: what this run answers


def split_request(messages: list[Message]) -> Conversation:
    """Split request messages into the extra system text, earlier messages, new turn.
    Assistant messages lose the reasoning a client sends back (:data:`REASONING_KEYS`).

    :raise MissingUserMessage: when the new turn has nothing to answer.
    """
    system_texts = []
    conversation = []
    for message in messages:
        if message["role"] in SYSTEM_ROLES:
            text = message_text(message).strip()
            if text:
                system_texts.append(text)
        elif message["role"] == "assistant" and any(key in message for key in REASONING_KEYS):
            conversation.append({k: v for k, v in message.items() if k not in REASONING_KEYS})
        else:
            conversation.append(message)
    last_assistant = -1
    for index, message in enumerate(conversation):
        if message["role"] == "assistant":
            last_assistant = index
    earlier = conversation[: last_assistant + 1]
    new_turn = conversation[last_assistant + 1 :]
    if not any(_answerable(message) for message in new_turn):
        raise MissingUserMessage("Missing user message in messages.")
    return Conversation("\n\n".join(system_texts), earlier, new_turn)


def user_turn_start(messages: t.Sequence[Message]) -> int:
    """The index of the first message of the user's current turn: the one after the
    last assistant message that answered the user (0 when none did).

    An assistant message that calls tools and is followed by their results is a step
    of the answer, not the answer: the turn it belongs to goes on (the tool loop of
    one user request). The user's images before it are still the current turn's.
    System and developer messages are skipped when looking at what follows.
    """
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "assistant" and not _tool_step(messages, index):
            return index + 1
    return 0


def _tool_step(messages: t.Sequence[Message], index: int) -> bool:
    """Whether the assistant message at ``index`` calls tools whose results follow it."""
    message = messages[index]
    if not (message.get("tool_calls") or message.get("function_call")):
        return False
    following = [m for m in messages[index + 1 :] if m.get("role") not in SYSTEM_ROLES]
    return bool(following) and following[0].get("role") in ("tool", "function")


def _answerable(message: Message) -> bool:
    if message["role"] == "user":
        return bool(message_text(message).strip()) or has_image(message)
    return message["role"] in ("tool", "function")


def join_system_prompts(*prompts: str | None) -> str | None:
    """Join the non-empty prompts with a blank line; None when there is none."""
    joined = "\n\n".join(p for p in prompts if p)
    return joined or None


def choose_history(
    stored: list[Message] | None, earlier: list[Message], limit: int
) -> list[Message]:
    """The history the agent sees: the stored transcript when there is one, else the
    request's own earlier messages; the last ``limit`` messages either way."""
    history = stored if stored is not None else earlier
    if limit <= 0:
        return []
    window = history[-limit:]
    # Tool results whose assistant tool_calls message fell outside the window would
    # open it: upstreams refuse such a history (OpenAI answers 400), so drop them.
    start = 0
    while start < len(window) and window[start]["role"] in ("tool", "function"):
        start += 1
    return window[start:]


def flatten_prompt(messages: list[Message]) -> str:
    """One prompt string for backends that take text only (OpenClaw's format).

    A lone first message is sent as is; otherwise the earlier messages are listed
    as ``Sender: text`` lines under a context marker, then the current message.
    """
    entries = []
    for message in messages:
        body = message_body(message)
        if body or _kept_empty(message):
            entries.append((sender_label(message), body))
    if not entries:
        return ""
    current_label, current_body = entries[-1]
    if len(entries) == 1 and current_label == "User":
        return current_body
    lines = [CONTEXT_MARKER]
    lines.extend(f"{label}: {body}" for label, body in entries[:-1])
    lines += ["", CURRENT_MARKER, f"{current_label}: {current_body}"]
    return "\n".join(lines)


def sender_label(message: Message) -> str:
    role = message["role"]
    if role == "user":
        return "User"
    if role == "assistant":
        return "Assistant"
    tool_id = message.get("tool_call_id") or message.get("name")
    return f"Tool:{tool_id}" if tool_id else "Tool"


def message_body(message: Message) -> str:
    """A message as one line of a flattened prompt (without its sender label): the
    trimmed text, and for an assistant one ``tool_call id=... name=... arguments=...``
    line per tool call."""
    body = message_text(message).strip()
    if message["role"] == "assistant":
        calls = []
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            arguments = function.get("arguments", "")
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments)
            calls.append(
                f"tool_call id={call.get('id')} name={function.get('name')} arguments={arguments}"
            )
        body = "\n".join([body, *calls]) if body else "\n".join(calls)
    return body


def _kept_empty(message: Message) -> bool:
    # An empty tool result still answers a call, so it stays in the prompt.
    return message["role"] in ("tool", "function") and bool(
        message.get("tool_call_id") or message.get("name")
    )


def drop_images(messages: list[Message], *, agent_id: str) -> list[Message]:
    """Remove ``image_url`` parts for backends that cannot take images (logged once)."""
    result = []
    dropped = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and has_image(message):
            kept = [
                p for p in content if not (isinstance(p, dict) and p.get("type") == "image_url")
            ]
            dropped += len(content) - len(kept)
            message = {**message, "content": kept}
        result.append(message)
    if dropped:
        log.warning("agent %s takes no images: dropped %d image part(s)", agent_id, dropped)
    return result
