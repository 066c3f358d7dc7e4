"""Server-Sent Events framing."""

from __future__ import annotations

from chatcompat.protocol.sse import DONE_FRAME
from chatcompat.protocol.sse import KEEPALIVE_FRAME
from chatcompat.protocol.sse import data_frame
from chatcompat.protocol.sse import sse_response


def test_frames():
    assert data_frame('{"a":"\u00e9"}') == 'data: {"a":"\u00e9"}\n\n'.encode()
    assert KEEPALIVE_FRAME == b": keepalive\n\n"
    assert DONE_FRAME == b"data: [DONE]\n\n"


def test_sse_response_streams_its_frames_unbuffered():
    frames = iter([b'data: {"a":1}\n\n', b"data: [DONE]\n\n"])
    response = sse_response(frames)
    assert response.content_type == "text/event-stream; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.is_streamed
    assert response.get_data() == b'data: {"a":1}\n\ndata: [DONE]\n\n'
