"""The views' two kinds of response: a JSON document and an event stream."""

from __future__ import annotations

from chatcompat.responses import json_response
from chatcompat.responses import sse_response


def test_json_response_is_compact_utf8_json():
    response = json_response({"text": "zoë", "n": [1, 2]})
    assert response.content_type == "application/json"
    assert response.get_data() == '{"text":"zoë","n":[1,2]}'.encode()


def test_sse_response_streams_its_frames_unbuffered():
    frames = iter([b'data: {"a":1}\n\n', b"data: [DONE]\n\n"])
    response = sse_response(frames)
    assert response.content_type == "text/event-stream; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.is_streamed
    assert response.get_data() == b'data: {"a":1}\n\ndata: [DONE]\n\n'
