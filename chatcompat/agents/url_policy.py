"""Which URLs and addresses a fetch on a client's behalf may reach.

The pure checks behind :mod:`chatcompat.agents.image_fetch` and the image policy
(:mod:`chatcompat.images`): whether an address is public (the SSRF rule), whether a
host is on an allowlist, whether a URL's host and port are well formed. No I/O.
"""

from __future__ import annotations

import ipaddress
import re
import typing as t
import urllib.parse

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# A host name's label: letters, digits and hyphens, no hyphen at either end (RFC 1123).
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z", re.IGNORECASE)
# The well-known NAT64 prefix: its last 32 bits are an IPv4 address (RFC 6052).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Ranges that are not globally reachable (IANA's special-purpose registries) but that
# some Python versions' ``is_global`` still calls global: the rule must not depend on
# the interpreter. 64:ff9b:1::/48 is local-use NAT64 (RFC 8215), whose IPv4 address may
# sit at several places, so it is refused whole rather than decoded.
_NOT_GLOBAL = tuple(
    ipaddress.ip_network(net)
    for net in (
        "192.0.0.0/24",  # IETF protocol assignments
        "fec0::/10",  # site-local (deprecated, still routed inside some sites)
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 SIDs (RFC 9602)
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
    )
)


def is_public_address(address: IPAddress) -> bool:
    """Whether ``address`` is one the gateway may connect to for a client's URL: a
    globally reachable unicast address, judged by the IPv4 address inside an
    IPv4-mapped, 6to4 or NAT64 (64:ff9b::/96) one; Teredo is refused.

    The rule is ``is_global``, plus every flag of a non-public range and
    :data:`_NOT_GLOBAL` for what ``is_global`` misses on some Python versions.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.teredo is not None:
            return False
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
        if address.is_site_local:
            return False
    return (
        address.is_global
        and not (
            address.is_multicast
            or address.is_reserved
            or address.is_unspecified
            or address.is_loopback
            or address.is_link_local
            or address.is_private
        )
        and not any(address in net for net in _NOT_GLOBAL if net.version == address.version)
    )


def host_allowed(host: str, allowlist: t.Sequence[str]) -> bool:
    """Whether ``host`` is on ``allowlist`` (empty: every host is).

    :param host: a URL's host name (any case, a trailing dot ignored).
    :param allowlist: lowercased names; ``*.example.com`` matches the subdomains of
        example.com, not example.com itself.
    """
    if not allowlist:
        return True
    host = host.lower().rstrip(".")
    for entry in allowlist:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def well_formed_authority(parts: urllib.parse.SplitResult) -> bool:
    """Whether a URL's host and port are ones the fetch may name: the host an IP
    literal (IPv6 in brackets) or an LDH host name (IDNA-encodable, labels of 1-63
    letters, digits and inner hyphens, at most 253 characters; one trailing dot
    allowed), and the port, when given, a number from 1.

    :param parts: the URL split (``parts.port`` already known not to raise).
    """
    host = parts.hostname
    authority = parts.netloc.rpartition("@")[2]
    if not host or authority.endswith(":") or parts.port == 0:
        return False  # no host, an empty port ("x:"), or port 0
    if authority.startswith("["):
        return _is_ip(host, ipaddress.IPv6Address)
    return _is_ip(host, ipaddress.IPv4Address) or _is_host_name(host)


def _is_ip(host: str, kind: type[IPAddress]) -> bool:
    try:
        kind(host)
    except ValueError:
        return False
    return True


def _is_host_name(host: str) -> bool:
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False  # an empty label ("a..b"), one too long, or no IDNA form
    if ascii_host.endswith("."):
        ascii_host = ascii_host[:-1]
    return 0 < len(ascii_host) <= 253 and all(
        _LDH_LABEL.match(label) for label in ascii_host.split(".")
    )
