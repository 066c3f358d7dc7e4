"""The one shape of a chat message in the gateway: OpenAI's message object as a plain
dict (``role``, ``content``, ``tool_calls``, ``tool_call_id``...), as clients send it,
as the session store keeps it and as agents receive it."""

from __future__ import annotations

import typing as t

Message = dict[str, t.Any]
