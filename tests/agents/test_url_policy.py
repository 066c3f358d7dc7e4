"""The pure checks of chatcompat.agents.url_policy: public addresses, host allowlists,
well-formed hosts and ports. The fetch that applies them is in test_image_fetch.py."""

from __future__ import annotations

import ipaddress
import urllib.parse

import pytest

from chatcompat.agents.url_policy import host_allowed
from chatcompat.agents.url_policy import is_public_address
from chatcompat.agents.url_policy import well_formed_authority

# Non-public by IANA's special-purpose registries, each range at least once, also
# inside the IPv6 forms that carry an IPv4 address.
NOT_PUBLIC = [
    # IPv4
    "0.0.0.0", "0.1.2.3", "10.1.2.3", "100.64.0.1", "100.127.255.254", "127.0.0.1",
    "127.255.255.255", "169.254.169.254", "172.16.0.1", "172.31.255.255", "192.0.0.1",
    "192.0.0.8", "192.0.0.170", "192.0.2.1", "192.168.1.1", "198.18.0.1", "198.19.255.255",
    "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255",
    # IPv6
    "::", "::1", "::1.2.3.4", "::ffff:0:8.8.8.8", "100::1", "2001::1", "2001:2::1",
    "2001:10::1", "2001:db8::1", "3fff::1", "3fff:fff::1", "5f00::1", "fc00::1", "fd12::1",
    "fe80::1", "febf::1", "fec0::1", "fedc::1", "feff::1", "ff02::1", "ff0e::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    # IPv4 inside IPv6: mapped, 6to4, NAT64 (well-known), local-use NAT64 refused whole
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:100.64.0.1",
    "2002:7f00:1::", "2002:a00:1::", "2002:c0a8:101::", "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe", "64:ff9b::c0a8:101", "64:ff9b:1::808:808", "64:ff9b:1::1",
]  # fmt: skip
PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "100.128.0.1", "172.32.0.1", "198.20.0.1",
          "2606:4700::1111", "2a00:1450:4001::1", "::ffff:8.8.8.8", "64:ff9b::808:808",
          "2002:808:808::1"]  # fmt: skip


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses_are_refused(address):
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("host", "allowlist", "expected"),
    [
        ("cdn.example.com", (), True),
        ("cdn.example.com", ("cdn.example.com",), True),
        ("CDN.Example.com.", ("cdn.example.com",), True),
        ("img.cdn.example.com", ("cdn.example.com",), False),
        ("a.example.com", ("*.example.com",), True),
        ("a.b.example.com", ("*.example.com",), True),
        ("example.com", ("*.example.com",), False),
        ("badexample.com", ("*.example.com",), False),
        ("other.org", ("cdn.example.com", "*.example.com"), False),
    ],
)
def test_host_allowlist(host, allowlist, expected):
    assert host_allowed(host, allowlist) is expected


@pytest.mark.parametrize(
    "url",
    ["http://example.com/", "https://cdn.example.com:8443/x", "http://example.com./",
     "http://bücher.example/", "http://93.184.216.34/", "http://[2606:4700::1111]:80/",
     "http://user@example.com/", "http://a-b.c0/", "http://" + "a" * 63 + ".com/"],
)  # fmt: skip
def test_well_formed_hosts_and_ports(url):
    assert well_formed_authority(urllib.parse.urlsplit(url))


@pytest.mark.parametrize(
    "url",
    ["http://<script>/", "http://a..b/", "http://-/", "http://-a.com/", "http://a-.com/",
     "http://x:0/", "http://x:/", "http://a_b.com/",
     "http://" + "a" * 64 + ".com/", "http://" + "a." * 127 + "com/",
     "http://:80/"],
)  # fmt: skip
def test_malformed_hosts_and_ports(url):
    assert not well_formed_authority(urllib.parse.urlsplit(url))
