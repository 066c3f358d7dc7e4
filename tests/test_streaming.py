"""SSE framing and noticing a vanished client on a real socket pair."""

from __future__ import annotations

import socket

from chatcompat.streaming import DONE_FRAME
from chatcompat.streaming import KEEPALIVE_FRAME
from chatcompat.streaming import data_frame
from chatcompat.streaming import peer_closed


def test_frames():
    assert data_frame('{"a":"\u00e9"}') == 'data: {"a":"\u00e9"}\n\n'.encode()
    assert KEEPALIVE_FRAME == b": keepalive\n\n"
    assert DONE_FRAME == b"data: [DONE]\n\n"


def test_peer_closed_sees_a_close_but_not_pending_data():
    ours, theirs = socket.socketpair()
    try:
        assert not peer_closed(ours)
        theirs.sendall(b"GET / HTTP/1.1\r\n")  # a pipelined request: still connected
        assert not peer_closed(ours)
        assert ours.recv(100)
        theirs.close()
        assert peer_closed(ours)
    finally:
        ours.close()


def test_peer_closed_on_a_closed_socket_or_unknown_object():
    ours, theirs = socket.socketpair()
    theirs.close()
    ours.close()
    assert peer_closed(ours) in (True, False)  # never raises
    assert peer_closed(object()) is False


def test_a_lone_surrogate_from_an_agent_goes_out_as_a_json_escape():
    import json

    from chatcompat import protocol

    frame = data_frame(protocol.ChunkEncoder("c", 1, "m").content("bad \ud800 text \u00e9"))
    payload = frame.decode("utf-8")[len("data: ") : -2]  # valid UTF-8
    assert json.loads(payload)["choices"][0]["delta"]["content"] == "bad \ud800 text \u00e9"
    body = protocol.dumps_bytes({"content": "x\udfff"})
    assert json.loads(body.decode("utf-8")) == {"content": "x\udfff"}
