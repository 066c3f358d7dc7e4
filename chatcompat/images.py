"""The image policy of an agent (``images``), applied to a request's ``image_url`` parts.

:func:`check_images` is a check of the request (README "Images"): every image part
that will reach the agent is checked against the routed agent's policy, and the first
one refused is answered 400 ``invalid_image`` with ``param`` naming the part
(``messages[2].content[1].image_url.url``). It works on chat-shaped messages, so
another wire protocol (the Responses API) converts its input first and calls it with
its own paths (``param_prefix`` or ``param_for``).

- A data URI must say ``;base64``, carry a non-empty, valid payload, and decode to
  at most ``maxBytes``; its type is what its bytes are (:func:`~chatcompat.image_types.sniff`),
  which must be one of ``allowedMimes``; a claimed type that is not one of them is
  refused as well (``application/pdf``, ``image/svg+xml``).
- Any other URL must be a well-formed ``http(s)`` URL without credentials, whose host
  is an LDH host name or an IP literal and whose port, if any, is not empty or 0; it is taken
  only when ``allowUrl`` is on, and only for a host of ``urlAllowlist`` when that is
  given. The gateway does not fetch it here: a backend that needs bytes (``pi``) does,
  through the guarded fetcher (:mod:`chatcompat.agents.image_fetch`).
- At most ``maxParts`` image parts and ``maxTotalBytes`` decoded bytes per request.

The images checked are those that reach the agent: the current user turn's (the
messages after the last assistant message that answered the user; an assistant's
tool calls followed by their results do not end the turn, see
:func:`~chatcompat.history.user_turn_start`), and the earlier turns' only with ``history:
"keep"``; with ``"marker"`` (the default) those are replaced by a short text
(:func:`mark_earlier_images`) and not looked at, as OpenClaw ignores them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import typing as t
import urllib.parse

from .agents.base import InputImage
from .agents.url_policy import host_allowed
from .agents.url_policy import well_formed_authority
from .errors import InvalidImage
from .history import SYSTEM_ROLES
from .history import user_turn_start
from .image_types import sniff

if t.TYPE_CHECKING:
    from .messages import Message
    from .settings import ImagePolicy

#: What an earlier turn's image becomes in the history the agent gets (``marker``).
IMAGE_MARKER = "[image from an earlier turn: not sent again]"
# Common spellings of a type, as clients claim it.
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def check_images(
    messages: t.Sequence[Message],
    policy: ImagePolicy,
    *,
    param_prefix: str = "messages",
    param_for: t.Callable[[int, int], str] | None = None,
    with_bytes: bool = True,
) -> tuple[InputImage, ...]:
    """Check the image parts of chat-shaped ``messages`` that will reach the agent.

    :param messages: the request's messages (schema-valid: an ``image_url`` part has a
        non-empty string URL, or an object with one).
    :param policy: the routed agent's :class:`~chatcompat.settings.ImagePolicy`.
    :param param_prefix: the messages' path in the request, for ``param``.
    :param param_for: ``(message index, part index) -> param`` of the part's URL, for a
        protocol whose paths are not ``<prefix>[i].content[j].image_url[.url]``.
    :param with_bytes: keep the decoded bytes in the result (for a backend that needs
        them; else they are dropped once checked, not held for the whole run).
    :return: the new turn's images, in order, as a backend that needs bytes takes them.
    :raise InvalidImage: the first part the policy refuses (400, ``param`` naming it).
    """
    # The user's turn goes on through the assistant's tool calls and their results.
    turn_start = user_turn_start(messages)
    count = total = 0
    new_turn: list[InputImage] = []
    for index, message in enumerate(messages):
        content = message.get("content")
        if message.get("role") in SYSTEM_ROLES or not isinstance(content, list):
            continue
        current = index >= turn_start
        if not current and policy.history != "keep":
            continue  # replaced by the marker: never sent, so not looked at (as OpenClaw)
        for position, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "image_url"):
                continue
            field = part.get("image_url")
            url = field.get("url") if isinstance(field, dict) else field
            if param_for is not None:
                param = param_for(index, position)
            else:
                param = f"{param_prefix}[{index}].content[{position}].image_url"
                param += ".url" if isinstance(field, dict) else ""
            count += 1
            if count > policy.max_parts:
                raise InvalidImage(
                    f"Too many images: at most {policy.max_parts} image parts per request"
                    " (images.maxParts of this agent).",
                    param=param,
                )
            image = _check_one(url, policy, param)
            if image.data is not None:
                total += len(image.data)
                if total > policy.max_total_bytes:
                    raise InvalidImage(
                        f"Too many image bytes: at most {policy.max_total_bytes} bytes of"
                        " images per request (images.maxTotalBytes of this agent).",
                        param=param,
                    )
            if current:
                new_turn.append(image if with_bytes else dataclasses.replace(image, data=None))
    return tuple(new_turn)


def _check_one(url: t.Any, policy: ImagePolicy, param: str) -> InputImage:
    if not isinstance(url, str) or not url.strip():
        raise InvalidImage("Invalid image: the URL is blank.", param=param)
    if url[:5].lower() == "data:":
        data, mime_type = decode_data_uri(url, policy, param)
        return InputImage(param=param, data=data, mime_type=mime_type)
    check_remote_url(url, policy, param)
    return InputImage(param=param, url=url)


def decode_data_uri(url: str, policy: ImagePolicy, param: str) -> tuple[bytes, str]:
    """The bytes of a base64 data URI and their sniffed type, within the policy.

    :raise InvalidImage: not base64, empty, invalid, too large, or not an allowed type.
    """
    header, comma, payload = url[5:].partition(",")
    fields = [field.strip().lower() for field in header.split(";")]
    claimed = _ALIASES.get(fields[0], fields[0])
    if not comma or "base64" not in fields[1:]:
        raise InvalidImage(
            "Invalid image: a data URI must be base64 ('data:image/png;base64,...').",
            param=param,
        )
    if claimed and claimed not in policy.allowed_mimes:
        raise InvalidImage(
            f"Invalid image: the type {claimed!r} is not taken by this agent"
            f" (images.allowedMimes: {', '.join(policy.allowed_mimes)}).",
            param=param,
        )
    if not payload:
        raise InvalidImage("Invalid image: the data URI has no data.", param=param)
    # The size is known before decoding: a huge payload is refused without decoding it.
    if len(payload) // 4 * 3 - payload.count("=", -2) > policy.max_bytes:
        raise _too_large(policy, param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(
            "Invalid image: the data URI is not valid base64.", param=param
        ) from None
    if len(data) > policy.max_bytes:
        raise _too_large(policy, param)
    return data, check_type(data, policy, param)


def check_type(data: bytes, policy: ImagePolicy, param: str) -> str:
    """The type of ``data`` by its magic bytes, if the policy takes it.

    :raise InvalidImage: the bytes are no image type the policy takes.
    """
    sniffed = sniff(data)
    if sniffed is None or sniffed not in policy.allowed_mimes:
        what = f"an {sniffed} image" if sniffed else "no image of a known type"
        raise InvalidImage(
            f"Invalid image: its bytes are {what}; this agent takes"
            f" {', '.join(policy.allowed_mimes)} (images.allowedMimes).",
            param=param,
        )
    return sniffed


def check_remote_url(url: str, policy: ImagePolicy, param: str) -> None:
    """Refuse a malformed ``http(s)`` URL, and one the policy does not take.

    :raise InvalidImage: malformed, with credentials, a malformed host or port,
        remote URLs off, or a host outside ``urlAllowlist``.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or _SPACE_OR_CONTROL.search(url)
    ):
        raise InvalidImage(
            "Invalid image: the URL is neither a base64 data URI nor an http(s) URL.",
            param=param,
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidImage("Invalid image: the URL must not carry credentials.", param=param)
    if not well_formed_authority(parts):
        raise InvalidImage(
            "Invalid image: the URL's host is neither a valid host name nor an IP address"
            " (IPv6 in brackets), or its port is empty or 0.",
            param=param,
        )
    if not policy.allow_url:
        raise InvalidImage(
            "Invalid image: remote image URLs are not taken by this agent (images.allowUrl"
            " is off); send the image as a base64 data URI.",
            param=param,
        )
    if not host_allowed(parts.hostname, policy.url_allowlist):
        raise InvalidImage(
            f"Invalid image: the host {parts.hostname!r} is not in this agent's"
            " images.urlAllowlist.",
            param=param,
        )


def mark_earlier_images(
    messages: list[Message],
    policy: ImagePolicy,
    *,
    always: bool,
    new_turn: t.Sequence[Message],
) -> list[Message]:
    """The history the agent gets: earlier turns' ``image_url`` parts replaced by
    :data:`IMAGE_MARKER` (``history: "marker"``), or left as sent (``"keep"``).

    :param messages: the history (stored transcript or the request's earlier
        messages), not changed.
    :param always: mark whatever the policy says (a backend whose history is text).
    :param new_turn: the messages that follow the history. When they are tool results
        the history's last messages (the user's request, the assistant's tool calls)
        are still the current user turn: their images are not earlier ones.
    """
    if policy.history == "keep" and not always:
        return messages
    turn_start = min(user_turn_start([*messages, *new_turn]), len(messages))
    marked = []
    for index, message in enumerate(messages):
        content = message.get("content")
        if (
            index < turn_start
            and isinstance(content, list)
            and any(_is_image(part) for part in content)
        ):
            content = [
                {"type": "text", "text": IMAGE_MARKER} if _is_image(part) else part
                for part in content
            ]
            message = {**message, "content": content}
        marked.append(message)
    return marked


def _is_image(part: t.Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "image_url"


def _too_large(policy: ImagePolicy, param: str) -> InvalidImage:
    return InvalidImage(
        f"Invalid image: larger than {policy.max_bytes} bytes (images.maxBytes of this agent).",
        param=param,
    )
