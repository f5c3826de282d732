"""Which address a request comes from, for the brute-force guard and the audit log.

The socket's peer, unless that peer is a trusted proxy (`OPENMAAS_TRUSTED_PROXIES`): then the
`X-Forwarded-For` chain is read from the right, skipping trusted hops, and the first hop that
is not trusted is the client. Every hop left of it was written by someone we do not trust, so
is ignored: honouring the header from anyone would let a guesser pick a fresh address for every
attempt and never meet the brute-force guard's block.

Example::

    clients = ClientAddresses(["127.0.0.1", "10.0.0.0/8"])
    clients.resolve("10.0.0.2", ["203.0.113.9, 10.0.0.7"])  # "203.0.113.9"
    clients.resolve("198.51.100.4", ["1.2.3.4"])             # "198.51.100.4": not a proxy
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# A chain longer than this is cut: only its right end matters, and only trusted hops are walked.
MAX_FORWARDED_HOPS = 32


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """`127.0.0.1`, `10.0.0.0/8`, `::1`, ...; ValueError names the one that is not."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"trusted proxy {value!r} is not an IP address or network (CIDR)"
            ) from None
    return tuple(networks)


class ClientAddresses:
    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self.trusted = parse_networks(trusted_proxies)

    def resolve(self, peer: str, forwarded_for: Sequence[str]) -> str:
        """The client's address, from the socket `peer` and the `X-Forwarded-For` values
        (each may list several hops, comma-separated), in the order they arrived."""
        if not self.trusted or not forwarded_for or not self._is_trusted(_address(peer)):
            return peer
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        client = peer
        for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
            address = _address(hop)
            if address is None:
                # Garbage from the hop we trusted last: keep that hop as the client, rather
                # than a string anyone could vary.
                return client
            client = str(address)
            if not self._is_trusted(address):
                return client
        return client  # every hop is a trusted proxy: the leftmost one we read

    def _is_trusted(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.trusted)


def _address(value: str) -> Address | None:
    try:
        return ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return None
