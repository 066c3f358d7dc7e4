"""Looking at a socket without waiting: is there something to read, did the peer leave.

Used by the run to notice a client that went away (and cancel its agent), and by the
upstream connection pool to drop a connection its server closed.
"""

from __future__ import annotations

import select
import socket
import sys
import typing as t


def _os_poll() -> t.Callable[[], t.Any] | None:
    """``select.poll`` as the OS gives it, also under gevent's monkey-patching.

    A zero-timeout poll never blocks, so gevent's cooperative version (which builds
    watchers and a result object on every call: 9 µs against 0.6 µs) only costs more.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("select"):
        try:
            return t.cast(t.Callable[[], t.Any], monkey.get_original("select", "poll"))
        except (AttributeError, ImportError):
            return None
    return getattr(select, "poll", None)


def readable_now(sock: t.Any) -> bool:
    """True when ``sock`` has something to read (data, or the peer's close), without
    waiting.

    :raise ValueError, TypeError, OSError: ``sock`` is closed or not a socket.
    """
    poll = _os_poll()
    if poll is None:  # no poll() on this platform
        return bool(select.select([sock], [], [], 0)[0])
    poller = poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def peer_closed(sock: t.Any) -> bool:
    """True when the client has closed its side of the connection.

    A closed peer makes the socket readable with nothing to read. Data waiting
    (a pipelined next request) means the client is still there. Sockets that cannot
    peek (TLS) are assumed alive: the next failed write will tell.
    """
    try:
        if not readable_now(sock):
            return False
        return bool(sock.recv(1, socket.MSG_PEEK) == b"")
    except (BlockingIOError, InterruptedError):
        return False
    except (ValueError, NotImplementedError, AttributeError, TypeError):
        return False
    except OSError:
        return True
