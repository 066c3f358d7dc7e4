"""The guarded image fetch against a real HTTP server on loopback.

Loopback is not public, so the default guard refuses the server: the allowed paths
pass an address check that admits exactly the test server's address.
"""

from __future__ import annotations

import ipaddress
import threading
import time

import pytest

from chatcompat.agents.base import Cancellation
from chatcompat.agents.image_fetch import FetchRefused
from chatcompat.agents.image_fetch import fetch
from chatcompat.agents.image_fetch import redirect_target
from tests.image_server import PNG
from tests.image_server import ImageServer

LIMITS = {"max_bytes": 4096, "max_redirects": 3, "timeout_seconds": 5.0}


def only(*addresses: str):
    """An address check that admits exactly ``addresses``."""
    allowed = {ipaddress.ip_address(a) for a in addresses}
    return lambda address: address in allowed


@pytest.fixture(scope="module")
def server():
    with ImageServer("127.0.0.1") as started:
        yield started


@pytest.fixture(scope="module")
def other():
    """A second server on another loopback address, for redirects across addresses."""
    with ImageServer("127.0.0.2") as started:
        yield started


def test_loopback_server_is_refused_by_default(server):
    before = len(server.requests)
    with pytest.raises(FetchRefused, match="non-public address"):
        fetch(server.url("/png"), **LIMITS)
    assert len(server.requests) == before  # never connected


def test_localhost_by_name_is_refused_for_its_dns_answers(server):
    before = len(server.requests)
    with pytest.raises(FetchRefused, match="'localhost' is refused"):
        fetch(f"http://localhost:{server.port}/png", **LIMITS)
    assert len(server.requests) == before  # never connected


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "127.1", "[::1]", "[::ffff:127.0.0.1]"])
def test_other_spellings_of_loopback_are_refused(server, host):
    before = len(server.requests)
    with pytest.raises(FetchRefused, match="non-public address"):
        fetch(f"http://{host}:{server.port}/png", **LIMITS)
    assert len(server.requests) == before


def test_allowed_address_is_fetched(server):
    fetched = fetch(server.url("/png"), address_allowed=only("127.0.0.1"), **LIMITS)
    assert fetched.data == PNG
    assert fetched.content_type == "image/png"


def test_one_private_answer_among_public_ones_refuses_the_host(server):
    def resolver(host, port):
        return ["127.0.0.1", "10.0.0.7"]

    with pytest.raises(FetchRefused, match="'images.test' is refused"):
        fetch(f"http://images.test:{server.port}/png", address_allowed=only("127.0.0.1"),
              resolver=resolver, **LIMITS)  # fmt: skip


def test_connects_to_the_checked_address_with_the_name_as_host(server):
    lookups = []

    def resolver(host, port):
        lookups.append(host)
        return ["127.0.0.1"]

    url = f"http://images.test:{server.port}/host"
    fetched = fetch(url, address_allowed=only("127.0.0.1"), resolver=resolver, **LIMITS)
    assert fetched.data == PNG
    assert lookups == ["images.test"]  # one lookup: the connection used its answer
    assert server.hosts[-1] == f"images.test:{server.port}"


def test_redirect_to_a_refused_address_is_refused(server, other):
    before = len(other.requests)
    url = server.url("/to?u=" + other.url("/png"))
    with pytest.raises(FetchRefused, match="'127.0.0.2' is refused"):
        fetch(url, address_allowed=only("127.0.0.1"), **LIMITS)
    assert len(other.requests) == before
    # Admitted, the same redirect is followed.
    fetched = fetch(url, address_allowed=only("127.0.0.1", "127.0.0.2"), **LIMITS)
    assert fetched.data == PNG


def test_redirect_outside_the_allowlist_is_refused(server):
    url = f"http://images.test:{server.port}/to?u=http://elsewhere.test:{server.port}/png"
    with pytest.raises(FetchRefused, match="'elsewhere.test', a host outside"):
        fetch(url, allowlist=("images.test",), address_allowed=only("127.0.0.1"),
              resolver=lambda host, port: ["127.0.0.1"], **LIMITS)  # fmt: skip


def test_redirects_are_capped(server):
    before = len(server.requests)
    with pytest.raises(FetchRefused, match="more than 3 times"):
        fetch(server.url("/loop"), address_allowed=only("127.0.0.1"), **LIMITS)
    assert len(server.requests) - before == 4  # the URL and 3 redirects


def test_redirect_to_another_scheme_is_refused(server):
    with pytest.raises(FetchRefused, match="not an http"):
        fetch(server.url("/to?u=file:///etc/passwd"), address_allowed=only("127.0.0.1"),
              **LIMITS)  # fmt: skip


@pytest.mark.parametrize("host", ["a..b", "-", "<x>", "x:0", "x:"])
def test_redirect_to_a_malformed_host_or_port_is_refused(server, host):
    with pytest.raises(FetchRefused, match="malformed host or port"):
        fetch(server.url(f"/to?u=http://{host}/png"), address_allowed=only("127.0.0.1"),
              resolver=lambda host, port: ["127.0.0.1"], **LIMITS)  # fmt: skip


def test_redirect_with_credentials_is_refused_before_connecting(server):
    before = len(server.requests)
    url = server.url(f"/to?u=http://user:pw@127.0.0.1:{server.port}/png")
    with pytest.raises(FetchRefused, match="redirects to a URL with credentials"):
        fetch(url, address_allowed=only("127.0.0.1"), **LIMITS)
    assert len(server.requests) == before + 1  # the redirect only, not its target


@pytest.mark.parametrize(
    ("url", "location", "expected"),
    [
        ("https://a.test/x", "https://b.test/y", "https://b.test/y"),
        ("https://a.test/x", "/y", "https://a.test/y"),
        ("https://a.test/x", "//b.test/y", "https://b.test/y"),
        ("http://a.test/x", "https://b.test/y", "https://b.test/y"),
        ("http://a.test/x", "http://b.test/y", "http://b.test/y"),
        ("https://a.test/x", "http://b.test/y", "from https to a non-https URL"),
        ("https://a.test/x", "HTTP://a.test/y", "from https to a non-https URL"),
        ("https://a.test/x", "ftp://a.test/y", "from https to a non-https URL"),
        ("http://a.test/x", "http://u:p@b.test/y", "with credentials"),
        ("https://a.test/x", "https://u@b.test/y", "with credentials"),
        ("https://a.test/x", "//u:p@b.test/y", "with credentials"),
        ("http://a.test/x", "http://:p@b.test/y", "with credentials"),
    ],
)
def test_redirect_target(url, location, expected):
    if expected.startswith("http"):
        assert redirect_target(url, location) == expected
    else:
        with pytest.raises(FetchRefused, match=expected):
            redirect_target(url, location)


@pytest.mark.parametrize("path", ["/big?n=5000", "/stream?n=5000"])
def test_size_is_capped_with_and_without_content_length(server, path):
    with pytest.raises(FetchRefused, match="larger than 4096 bytes"):
        fetch(server.url(path), address_allowed=only("127.0.0.1"), **LIMITS)
    small = path.replace("5000", "100")
    assert len(fetch(server.url(small), address_allowed=only("127.0.0.1"), **LIMITS).data) == (
        len(PNG) + 100
    )


def test_time_is_capped(server):
    started = time.monotonic()
    with pytest.raises(FetchRefused, match="did not answer within 0.5 s"):
        fetch(server.url("/slow?s=3"), address_allowed=only("127.0.0.1"),
              **{**LIMITS, "timeout_seconds": 0.5})  # fmt: skip
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("path", ["/drip-headers?s=3", "/drip-chunks?s=3"])
def test_a_trickling_server_is_cut_at_the_deadline(server, path):
    # A byte every 0.1 s never trips a per-read timeout: the deadline covers all reads.
    started = time.monotonic()
    with pytest.raises(FetchRefused, match="did not answer within 0.5 s"):
        fetch(server.url(path), address_allowed=only("127.0.0.1"),
              **{**LIMITS, "timeout_seconds": 0.5})  # fmt: skip
    assert time.monotonic() - started < 0.5 + 0.3


def test_error_status_is_refused(server):
    with pytest.raises(FetchRefused, match="HTTP 404"):
        fetch(server.url("/status?c=404"), address_allowed=only("127.0.0.1"), **LIMITS)


def test_cancel_cuts_the_fetch(server):
    cancel = Cancellation()
    threading.Timer(0.3, cancel.cancel).start()
    started = time.monotonic()
    with pytest.raises(FetchRefused):
        fetch(server.url("/slow?s=3"), address_allowed=only("127.0.0.1"), cancel=cancel,
              **LIMITS)  # fmt: skip
    assert time.monotonic() - started < 2


def test_a_cancelled_run_fetches_nothing(server):
    cancel = Cancellation()
    cancel.cancel()
    before = len(server.requests)
    with pytest.raises(FetchRefused, match="cancelled"):
        fetch(server.url("/png"), address_allowed=only("127.0.0.1"), cancel=cancel, **LIMITS)
    assert len(server.requests) == before


def test_unresolvable_host_is_refused():
    def resolver(host, port):
        raise OSError("no such host")

    with pytest.raises(FetchRefused, match="could not be resolved"):
        fetch("http://nowhere.test/png", resolver=resolver, **LIMITS)
