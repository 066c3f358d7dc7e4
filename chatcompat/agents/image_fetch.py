"""The guarded fetch of a remote image, for backends that need the bytes (``pi``).

The gateway fetches a client's image URL only for such a backend, and only after the
agent's image policy took the URL (:mod:`chatcompat.images`). A URL is attacker
controlled, so the fetch refuses to reach the gateway's own network (SSRF):

- Each hop's host is resolved here, and **every** answer must be a public address
  (:func:`~chatcompat.agents.url_policy.is_public_address`: no private, loopback,
  link-local, shared, multicast, reserved or unspecified address, also when embedded
  in an IPv6 one); the connection
  then goes to the address that was checked (no second lookup that a DNS rebinding
  could answer differently). HTTPS still verifies the certificate for the host name.
- Redirects are followed by hand, each one checked like the first URL (scheme, host
  allowlist, addresses), at most ``max_redirects`` of them; a redirect may not add
  credentials nor go from https to http (:func:`redirect_target`).
- The body is read up to ``max_bytes`` (a larger ``Content-Length`` is refused before
  reading); the whole fetch, redirects included, has ``timeout_seconds``: every read
  and write on the socket waits at most until that deadline (:class:`_DeadlineSocket`),
  so a server that trickles its headers or chunk sizes a byte at a time is cut there.
  A DNS lookup spends from that time but is not cut at the deadline (the system
  resolver has its own timeout).

A refusal raises :class:`FetchRefused`, whose message names no address and may be
shown to the client. The address check and the resolver are parameters so that tests
can reach a server on loopback explicitly; nothing else changes them.
"""

from __future__ import annotations

import dataclasses
import http.client
import io
import ipaddress
import logging
import socket
import ssl
import threading
import time
import typing as t
import urllib.parse

from .url_policy import IPAddress
from .url_policy import host_allowed
from .url_policy import is_public_address
from .url_policy import well_formed_authority

if t.TYPE_CHECKING:
    from .base import Cancellation

log = logging.getLogger(__name__)

AddressCheck = t.Callable[[IPAddress], bool]
Resolver = t.Callable[[str, int], list[str]]

REDIRECTS = frozenset({301, 302, 303, 307, 308})
CHUNK = 64 * 1024
USER_AGENT = "chatcompat-image-fetch"


class FetchRefused(Exception):
    """The image was not fetched; the message says why (no address in it)."""


@dataclasses.dataclass(frozen=True)
class Fetched:
    data: bytes = dataclasses.field(repr=False)
    content_type: str | None = None


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver; gevent's when patched)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def fetch(
    url: str,
    *,
    max_bytes: int,
    max_redirects: int,
    timeout_seconds: float,
    allowlist: t.Sequence[str] = (),
    address_allowed: AddressCheck = is_public_address,
    resolver: Resolver = resolve,
    cancel: Cancellation | None = None,
) -> Fetched:
    """GET an image URL under the guard described in the module docstring.

    :param allowlist: the policy's ``urlAllowlist``, checked on every hop.
    :param address_allowed: the address check (tests pass one that admits loopback).
    :param cancel: cancelling it cuts the connection at once.
    :raise FetchRefused: refused or failed (the message can be shown to the client).
    """
    deadline = time.monotonic() + timeout_seconds
    current = _Current()
    if cancel is not None:
        cancel.on_cancel(current.cut)
    redirects = 0
    while True:
        if current.is_cut:
            raise FetchRefused("The image fetch was cancelled.")
        parts = _hop(url, allowlist)
        conn = _connect(parts, deadline, timeout_seconds, address_allowed, resolver, current)
        response = None
        try:
            response = _get(conn, parts)
            location = response.getheader("Location")
            if response.status in REDIRECTS:
                if not location:
                    raise FetchRefused(
                        f"The image URL answered a redirect ({response.status}) without a Location."
                    )
                redirects += 1
                if redirects > max_redirects:
                    raise FetchRefused(f"The image URL redirects more than {max_redirects} times.")
                url = redirect_target(url, location)
                continue
            if response.status != 200:
                raise FetchRefused(f"The image URL answered HTTP {response.status}.")
            data = _body(response, current, max_bytes)
            return Fetched(data, response.getheader("Content-Type"))
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
                raise _timed_out(timeout_seconds) from None
            log.info("image fetch from %s failed: %s", parts.hostname, exc)
            raise FetchRefused(
                f"The image URL could not be fetched ({type(exc).__name__})."
            ) from None
        finally:
            if response is not None:
                response.close()  # it owns the socket once the server said it will close
            conn.close()


def redirect_target(url: str, location: str) -> str:
    """The URL a redirect from ``url`` to ``location`` leads to, if it may be followed.

    A client's URL may not carry credentials (:mod:`chatcompat.images`); a redirect
    must not add them behind its back, and must not take an HTTPS fetch to plain HTTP,
    where anyone on the path could swap the image.

    :raise FetchRefused: the target carries credentials, or leaves HTTPS for HTTP.
    """
    target = urllib.parse.urljoin(url, location)
    try:
        parts = urllib.parse.urlsplit(target)
    except ValueError:
        raise FetchRefused("The image URL (or a redirect) is malformed.") from None
    if parts.username is not None or parts.password is not None:
        raise FetchRefused("The image URL redirects to a URL with credentials.")
    if urllib.parse.urlsplit(url).scheme == "https" and parts.scheme != "https":
        raise FetchRefused("The image URL redirects from https to a non-https URL.")
    return target


class _Current:
    """The socket of the hop going on, which cancelling shuts down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.is_cut = False

    def set(self, sock: socket.socket | None) -> None:
        with self._lock:
            self.sock = sock
            cut = self.is_cut
        if cut:
            self.cut()

    def cut(self) -> None:
        with self._lock:
            self.is_cut = True
            sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected yet, or already gone


def _hop(url: str, allowlist: t.Sequence[str]) -> urllib.parse.SplitResult:
    """The URL of one hop, if it may be fetched at all (before any lookup)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise FetchRefused("The image URL (or a redirect) is malformed.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchRefused("The image URL (or a redirect) is not an http(s) URL.")
    if not well_formed_authority(parts):
        raise FetchRefused("The image URL (or a redirect) has a malformed host or port.")
    if not host_allowed(parts.hostname, allowlist):
        raise FetchRefused(
            f"The image URL (or a redirect) names {parts.hostname!r}, a host outside"
            " images.urlAllowlist."
        )
    return parts


def _connect(
    parts: urllib.parse.SplitResult,
    deadline: float,
    timeout_seconds: float,
    address_allowed: AddressCheck,
    resolver: Resolver,
    current: _Current,
) -> http.client.HTTPConnection:
    """A connection to a checked address of the hop's host."""
    host = parts.hostname
    assert host is not None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        answers = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            answers = [ipaddress.ip_address(a.partition("%")[0]) for a in resolver(host, port)]
        except (OSError, UnicodeError, ValueError):
            raise FetchRefused(f"The image URL's host {host!r} could not be resolved.") from None
    if time.monotonic() >= deadline:
        raise _timed_out(timeout_seconds)
    if not answers or not all(address_allowed(address) for address in answers):
        log.info("image fetch refused: %s resolves to %s", host, [str(a) for a in answers])
        raise FetchRefused(
            f"The image URL's host {host!r} is refused: it is (or resolves to) a private,"
            " loopback, link-local or otherwise non-public address."
        )
    address = str(answers[0])
    cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    conn = cls(host, port, address, _remaining(deadline, timeout_seconds))
    try:
        conn.connect()
    except OSError as exc:
        conn.close()
        if isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
            raise _timed_out(timeout_seconds) from None
        log.info("image fetch from %s failed to connect: %s", host, exc)
        raise FetchRefused(f"The image URL's host {host!r} could not be reached.") from None
    # Every read and write after this waits at most until the fetch's deadline.
    current.set(conn.sock)
    conn.sock = _DeadlineSocket(conn.sock, deadline)
    return conn


def _get(
    conn: http.client.HTTPConnection, parts: urllib.parse.SplitResult
) -> http.client.HTTPResponse:
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    conn.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
    return conn.getresponse()


def _body(response: http.client.HTTPResponse, current: _Current, max_bytes: int) -> bytes:
    length = response.getheader("Content-Length")
    too_large = FetchRefused(
        f"Invalid image: larger than {max_bytes} bytes (images.maxBytes of this agent)."
    )
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = response.read1(CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    if current.is_cut:
        raise FetchRefused("The image fetch was cancelled.")
    return b"".join(chunks)


def _remaining(deadline: float, timeout_seconds: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _timed_out(timeout_seconds)
    return left


def _timed_out(timeout_seconds: float) -> FetchRefused:
    return FetchRefused(f"The image URL did not answer within {timeout_seconds:g} s.")


class _DeadlineSocket:
    """A connected socket whose every read and write waits at most until ``deadline``.

    http.client reads a status line, headers and chunk-size lines with many small
    reads; a socket timeout alone bounds each of them, not their sum, so a server
    sending a byte every second could hold a fetch for as long as it likes. Before
    each call the timeout is set to what is left; past the deadline a call raises
    :class:`TimeoutError` at once, which the fetch reports as too slow.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def _bounded(self) -> socket.socket:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the image fetch's deadline has passed")
        self._sock.settimeout(left)
        return self._sock

    def recv(self, size: int, flags: int = 0) -> bytes:
        return self._bounded().recv(size, flags)

    def recv_into(self, buffer: t.Any, size: int = 0, flags: int = 0) -> int:
        return self._bounded().recv_into(buffer, size, flags)

    def sendall(self, data: t.Any, flags: int = 0) -> None:
        self._bounded().sendall(data, flags)

    def makefile(self, mode: str = "rb", buffering: int = -1, **_: t.Any) -> t.Any:
        """The buffered reader http.client reads the response from: it reads through
        this wrapper (the real socket's ``makefile`` would bypass the deadline)."""
        if mode != "rb":
            raise ValueError(f"only 'rb' is supported, not {mode!r}")
        raw = socket.SocketIO(self, "rb")  # type: ignore[arg-type]
        self._sock._io_refs += 1  # type: ignore[attr-defined]  # as socket.makefile does
        size = io.DEFAULT_BUFFER_SIZE if buffering < 0 else buffering
        return io.BufferedReader(raw, size) if size else raw

    def __getattr__(self, name: str) -> t.Any:
        # shutdown, close, fileno, _decref_socketios...: the real socket's.
        return getattr(self._sock, name)


class _Pinned:
    """Connects to a checked address instead of looking the host up again; the host
    name still goes in ``Host`` and, for HTTPS, in SNI and the certificate check."""

    port: int

    def _pin(self, address: str) -> None:
        self._address = address
        self._create_connection = self._to_address

    def _to_address(
        self, _where: tuple[str, int], timeout: float | None = None, source: t.Any = None
    ) -> socket.socket:
        return socket.create_connection((self._address, self.port), timeout, source)


class _PinnedHTTP(_Pinned, http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        http.client.HTTPConnection.__init__(self, host, port, timeout=timeout)
        self._pin(address)


class _PinnedHTTPS(_Pinned, http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        context = ssl.create_default_context()
        http.client.HTTPSConnection.__init__(self, host, port, timeout=timeout, context=context)
        self._pin(address)
