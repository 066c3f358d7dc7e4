"""The ``Idempotency-Key`` request header: reading it, naming a request, replaying a reply.

A client that sends ``Idempotency-Key: <key>`` may send the same request again (after
a timeout, a 503, a dropped connection) without the agent running twice:

- the key is scoped to the credential that sent it (the principal that
  :meth:`~chatcompat.auth.Authenticator.check` names): credentials never share keys;
- the first request claims the key in the session store (the claim expires like a
  run lock when its worker dies); a repeat while it runs gets 409
  ``idempotency_key_in_use``;
- the finished request's reply is stored in the same atomic write as its turn and
  lives as long as that session; a repeat gets it back without a run, as JSON or
  replayed as a stream (same id, created and model), whichever the repeat asks for;
- a request that failed stored nothing and frees its key: a repeat runs. One whose
  turn write had an unknown outcome (503 "may not have been stored") keeps its claim
  until the claim expires (30 s): a repeat gets the reply once that write has
  landed, 409 while it is unsettled, and runs again if it never lands;
- a repeat must be the same request: the same agent, the same session (header or
  ``user``; none for a stateless request) and the same body apart from ``stream``
  and ``stream_options``. Anything else gets 422 ``idempotency_key_reused``.

The statuses follow the IETF draft "The Idempotency-Key HTTP Header Field" (409 while
the first request runs, 422 for a key reused with a different request).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing as t

from . import errors
from . import protocol
from .responses import json_response
from .responses import sse_response
from .streaming import DONE_FRAME
from .streaming import data_frame

if t.TYPE_CHECKING:
    from flask import Response

    from .sessions.base import IdempotencyRecord

HEADER = "Idempotency-Key"
_KEY = re.compile(r"[\x20-\x7e]{1,255}")  # printable ASCII
# What may differ between a request and its repeat: how the reply is delivered.
_DELIVERY_FIELDS = frozenset({"stream", "stream_options"})


@dataclasses.dataclass(frozen=True)
class Idempotency:
    """A request's key as the session store knows it.

    :param scope: names (credential, key); the store's record lives under it.
    :param fingerprint: names the request, to tell a repeat from a different one.
    """

    scope: str
    fingerprint: str


def read_key(value: str | None) -> str | None:
    """The trimmed key of an ``Idempotency-Key`` header, or None when it was not sent.

    :raise errors.InvalidIdempotencyKey: not 1 to 255 printable ASCII characters.
    """
    if value is None:
        return None
    key = value.strip(" \t")  # the header's optional whitespace
    if not _KEY.fullmatch(key):
        raise errors.InvalidIdempotencyKey(
            f"The {HEADER} header must be 1 to 255 printable ASCII characters.", param=HEADER
        )
    return key


def for_request(
    principal: str, key: str | None, agent_id: str, session_key: str | None, body: dict[str, t.Any]
) -> Idempotency | None:
    """Name the request, or None when it sent no key.

    :param principal: the credential that sent it.
    :param key: what :func:`read_key` read.
    :param session_key: the session the request names (None for a stateless one,
        whose fresh key differs on every try).
    :param body: the validated request body.
    """
    if key is None:
        return None
    request = {name: value for name, value in body.items() if name not in _DELIVERY_FIELDS}
    return Idempotency(_digest([principal, key]), _digest([agent_id, session_key, request]))


def _digest(value: t.Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def replay_response(stored: IdempotencyRecord, stream: bool, include_usage: bool) -> Response:
    """The stored reply of an earlier request with the same key, in the form this
    request asks for (JSON, or a stream when ``stream``), marked
    ``Idempotent-Replayed: true``; nothing runs.

    :param stored: the finished record :meth:`chatcompat.runner.Run.claim` returned.
    """
    assert stored.reply is not None
    if stream:
        response = sse_response(replay_stream(stored.reply, include_usage))
    else:
        response = json_response(stored.reply)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def replay_stream(reply: dict[str, t.Any], include_usage: bool) -> t.Iterator[bytes]:
    """A stored ``chat.completion`` as the stream that delivers it: the role chunk,
    one content chunk, one chunk per tool call, the finish chunk, the usage chunk
    when asked, ``[DONE]``; every chunk with the reply's id, created and model."""
    choice = reply["choices"][0]
    message = choice["message"]
    encoder = protocol.ChunkEncoder(reply["id"], reply["created"], reply["model"])
    frames = [data_frame(encoder.role())]
    if message.get("content"):
        frames.append(data_frame(encoder.content(message["content"])))
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call["function"]
        chunk = encoder.tool_call(index, call["id"], function["name"], function["arguments"])
        frames.append(data_frame(chunk))
    frames.append(data_frame(encoder.finish(choice["finish_reason"])))
    if include_usage:
        frames.append(data_frame(encoder.usage(reply["usage"])))
    frames.append(DONE_FRAME)
    yield b"".join(frames)
