"""Which address a request comes from: the socket's, or a trusted proxy's X-Forwarded-For."""

from __future__ import annotations

import pytest

from openmaas.auth.clients import ClientAddresses


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert ClientAddresses().resolve("127.0.0.1", ["203.0.113.9"]) == "127.0.0.1"


def test_a_peer_that_is_not_a_trusted_proxy_is_the_client() -> None:
    clients = ClientAddresses(["10.0.0.0/8"])
    assert clients.resolve("198.51.100.4", ["203.0.113.9"]) == "198.51.100.4"


def test_the_rightmost_untrusted_hop_is_the_client() -> None:
    clients = ClientAddresses(["127.0.0.1", "10.0.0.0/8"])
    # The client wrote the leftmost hop itself: only what trusted proxies appended counts.
    chain = ["192.0.2.1, 203.0.113.9", "10.0.0.7"]
    assert clients.resolve("127.0.0.1", chain) == "203.0.113.9"
    assert clients.resolve("127.0.0.1", []) == "127.0.0.1"
    assert clients.resolve("127.0.0.1", ["10.0.0.2, 10.0.0.3"]) == "10.0.0.2"  # all trusted


def test_ipv6_hops_and_garbage() -> None:
    clients = ClientAddresses(["::1"])
    assert clients.resolve("::1", ["2001:db8::5"]) == "2001:db8::5"
    # A hop that is not an address: the last trusted hop answers for it.
    assert clients.resolve("::1", ["2001:db8::5, not-an-address"]) == "::1"


def test_a_malformed_network_is_refused() -> None:
    with pytest.raises(ValueError, match="10.0.0.0/33"):
        ClientAddresses(["10.0.0.0/33"])
