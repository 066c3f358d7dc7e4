"""The ``Idempotency-Key`` request header: reading it and naming a request.

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
the first request runs, 422 for a key reused with a different request). The claim, the
stored reply and the release belong to the run (:meth:`chatcompat.run.Run.claim`); a
wire protocol replays a stored reply
(:func:`chatcompat.protocol.chat_completions.replay_stream`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing as t

from . import errors

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
    principal: str,
    key: str | None,
    agent_id: str,
    session_key: str | None,
    body: dict[str, t.Any],
    endpoint: str = "chat.completions",
    model_override: str | None = None,
) -> Idempotency | None:
    """Name the request, or None when it sent no key.

    :param principal: the credential that sent it.
    :param key: what :func:`read_key` read.
    :param session_key: the session the request names (None for a stateless one,
        whose fresh key differs on every try).
    :param body: the validated request body.
    :param endpoint: the API it came to: a reply is replayed only in its own shape.
    :param model_override: the ``x-openclaw-model`` it runs on: another model is
        another request.
    """
    if key is None:
        return None
    request = {name: value for name, value in body.items() if name not in _DELIVERY_FIELDS}
    what: list[t.Any] = [endpoint, agent_id, session_key, request]
    if model_override is not None:  # appended: fingerprints without one stay as they were
        what.append(model_override)
    return Idempotency(_digest([principal, key]), _digest(what))


def _digest(value: t.Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()
