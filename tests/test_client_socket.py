"""Noticing a vanished client on a real socket pair."""

from __future__ import annotations

import socket

from chatcompat.client_socket import peer_closed


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
