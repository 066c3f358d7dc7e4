"""Server-Sent Events framing.

A frame is ``data: <compact JSON>`` and a blank line; a keepalive is an SSE comment.
All headers are fixed before the first frame (they cannot change once the body
started).
"""

from __future__ import annotations

import typing as t

from flask import Response

from .jsonenc import encode

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx buffers proxied responses unless told otherwise per response.
    "X-Accel-Buffering": "no",
}
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"

KEEPALIVE_FRAME = b": keepalive\n\n"
DONE_FRAME = b"data: [DONE]\n\n"


def data_frame(payload: str) -> bytes:
    """The frame of one event whose data is ``payload`` (one line of JSON)."""
    return b"data: " + encode(payload) + b"\n\n"


def event_frame(event: str, payload: str) -> bytes:
    """The frame of one named event (the Responses API's ``event: <type>`` line, then
    its ``data:`` line of JSON)."""
    return event_frame_bytes(event, encode(payload))


def event_frame_bytes(event: str, payload: bytes) -> bytes:
    """:func:`event_frame` of a payload already encoded for the wire."""
    return b"event: " + event.encode("ascii") + b"\ndata: " + payload + b"\n\n"


def sse_response(frames: t.Iterable[bytes]) -> Response:
    """``frames`` (whole SSE frames; chat's end with ``[DONE]``) as an event stream,
    sent as they come."""
    return Response(frames, content_type=SSE_CONTENT_TYPE, headers=SSE_HEADERS)
