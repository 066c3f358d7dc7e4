"""Bearer authentication with a failed-attempt lockout shared through the session store.

The lockout is checked before the credential, so a locked-out client gets 429 even
with the right token. A missing credential is refused but not counted; a wrong one
is counted; a right one clears the client's count.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import typing as t

from . import errors
from . import metrics
from .errors import AuthenticationFailed
from .errors import TooManyAuthFailures
from .principal import ANONYMOUS
from .principal import OPERATOR
from .principal import Principal

if t.TYPE_CHECKING:
    from flask import Request

    from .sessions.base import SessionStore
    from .settings import Settings

log = logging.getLogger(__name__)

__all__ = ["ANONYMOUS", "OPERATOR", "Authenticator", "Principal", "authenticate"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def authenticate(request: Request, authenticator: Authenticator, store: SessionStore) -> Principal:
    """Authenticate a request (SPEC 3 step 3), counting each refusal by its reason
    in ``chatcompat_auth_failures`` (``missing``, ``invalid``, ``locked_out``).

    :param request: the request; its peer and ``X-Forwarded-For`` name the client,
        its ``Authorization`` header carries the credential.
    :param authenticator: the gateway's.
    :param store: the session store that holds the lockout state.
    :return: the principal (:data:`OPERATOR`, :data:`ANONYMOUS` or a named key's):
        its rights, and the id that scopes per-credential state such as an
        ``Idempotency-Key``.
    :raise errors.TooManyAuthFailures: while the client is locked out (429).
    :raise errors.AuthenticationFailed: for a missing or wrong credential (401).
    :raise errors.StoreUnavailable: when the lockout state cannot be read or written.
    """
    authorization = request.headers.get("authorization")
    client = authenticator.client_address(
        request.remote_addr, request.headers.get("x-forwarded-for")
    )
    try:
        with errors.map_store_errors():
            return authenticator.check(authorization, client, store)
    except TooManyAuthFailures:
        metrics.AUTH_FAILURES.labels("locked_out").inc()
        raise
    except AuthenticationFailed:
        metrics.AUTH_FAILURES.labels("invalid" if authorization else "missing").inc()
        raise


class Authenticator:
    """Checks ``Authorization: Bearer <secret>`` for one gateway configuration."""

    def __init__(self, settings: Settings) -> None:
        self.mode = settings.auth_mode
        self.rate_limit = settings.rate_limit
        self._proxies: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies
        )
        # Both sides go through HMAC with a per-process key so the comparison takes
        # the same time whatever the lengths and contents.
        self._key = os.urandom(32)
        self._warned_untrusted_proxy = False
        secret = settings.auth_secret
        self._expected = None if secret is None else self._digest(secret)
        # Named keys: (SHA-256 of the token, principal), each compared in constant time.
        self._keys = tuple((key.token_sha256, Principal.of_key(key)) for key in settings.api_keys)

    def _digest(self, value: str) -> bytes:
        return hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).digest()

    def check(self, authorization: str | None, client: str, store: SessionStore) -> Principal:
        """Let the request through or raise.

        :param authorization: the raw ``Authorization`` header.
        :param client: the client address (see :meth:`client_address`).
        :return: the principal: :data:`OPERATOR` for the gateway's credential, a named
            key's, or :data:`ANONYMOUS` in mode ``none``.
        :raise TooManyAuthFailures: while the client is locked out.
        :raise AuthenticationFailed: for a missing or wrong credential.
        :raise StoreUnreachable: when the lockout state cannot be read or written.
        """
        if self.mode == "none":
            return ANONYMOUS
        limited = self.rate_limit is not None and not (
            self.rate_limit.exempt_loopback and is_loopback(client)
        )
        if limited:
            remaining = store.auth_lockout_remaining(client)
            if remaining > 0:
                raise TooManyAuthFailures(remaining)
        credential = bearer_credential(authorization)
        if credential is None:
            raise AuthenticationFailed()
        principal = self._principal(credential)
        if principal is None:
            if self.rate_limit is not None and limited:
                store.record_auth_failure(client, self.rate_limit)
            raise AuthenticationFailed("Invalid credential.")
        if limited:
            store.clear_auth_failures(client)
        return principal

    def _principal(self, credential: str) -> Principal | None:
        """Whose credential this is. Every key is compared, with
        ``hmac.compare_digest``, whichever matches: the time taken says nothing about
        which key, or how much of one, was guessed right."""
        found = None
        if self._expected is not None and hmac.compare_digest(
            self._digest(credential), self._expected
        ):
            found = OPERATOR
        if self._keys:
            digest = hashlib.sha256(credential.encode("utf-8")).digest()
            for token_sha256, principal in self._keys:
                if hmac.compare_digest(digest, token_sha256):
                    found = principal
        return found

    def client_address(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address: the socket peer, or the rightmost untrusted
        ``X-Forwarded-For`` hop when the peer is a trusted proxy."""
        peer = canonical_address(peer or "")
        if not (forwarded_for and self._proxies and self._trusted(peer)):
            if forwarded_for and not self._warned_untrusted_proxy and is_loopback(peer):
                # A proxy on this host that is not trusted makes every client look
                # like loopback, which the lockout exempts by default.
                self._warned_untrusted_proxy = True
                log.warning(
                    "X-Forwarded-For from the untrusted loopback peer %s is ignored; "
                    "list the proxy in gateway.trustedProxies",
                    peer,
                )
            return peer
        hops = [canonical_address(hop.strip()) for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _trusted(self, address: str) -> bool:
        ip = _parse_ip(address)
        return ip is not None and any(ip in network for network in self._proxies)


def bearer_credential(authorization: str | None) -> str | None:
    """The trimmed secret of ``Bearer <secret>`` (scheme case-insensitive), or None."""
    if not authorization:
        return None
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    secret = rest.strip()
    return secret or None


@functools.lru_cache(maxsize=4096)
def _parse_ip(address: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def canonical_address(address: str) -> str:
    """One spelling per client: an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, how a
    dual-stack socket shows IPv4 peers) is the IPv4 address, and IPv6 is compressed.
    What is not an IP address is returned as it is."""
    ip = _parse_ip(address)
    return address if ip is None else str(ip)


def is_loopback(address: str) -> bool:
    ip = _parse_ip(address)
    return ip is not None and ip.is_loopback
