"""Server-Sent Events framing."""

from __future__ import annotations

from chatcompat.protocol.sse import DONE_FRAME
from chatcompat.protocol.sse import KEEPALIVE_FRAME
from chatcompat.protocol.sse import data_frame


def test_frames():
    assert data_frame('{"a":"\u00e9"}') == 'data: {"a":"\u00e9"}\n\n'.encode()
    assert KEEPALIVE_FRAME == b": keepalive\n\n"
    assert DONE_FRAME == b"data: [DONE]\n\n"
