"""The wire protocols: how a finished or streaming run goes out to a client.

One module per wire format, each built on the protocol-neutral
:class:`~chatcompat.run.Run` (which knows nothing of them):

- :mod:`.chat_completions`: OpenAI's Chat Completions (``chat.completion``,
  ``chat.completion.chunk`` over SSE, the idempotency replay);
- :mod:`.models`: the ``/v1/models`` list and entries.

Shared by them: :mod:`.reply` (the neutral accumulator of a run's events),
:mod:`.jsonenc` (compact JSON for bodies and frames) and :mod:`.sse` (Server-Sent
Events framing).
"""
