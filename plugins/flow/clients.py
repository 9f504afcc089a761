"""Who a "client" is for flow limits: an IPv4 address, or an IPv6 prefix.

One IPv6 host usually owns a whole /64, so counting per IPv6 address would let it
open a fresh address for every connection; clients are grouped by a configurable
prefix (IPv4 /32 and IPv6 /64 by default). An IPv4-mapped IPv6 address
(``::ffff:192.0.2.1``) is the IPv4 client it stands for.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=65536)
def client_group(ip: str, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str:
    """The key limits count ``ip`` under: ``"192.0.2.7"`` (a whole /32),
    ``"192.0.2.0/24"``, ``"2001:db8:1:2::/64"``; an unparsable address as it is."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    if prefix == address.max_prefixlen:
        return str(address)
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def parse_networks(entries: list[str]) -> tuple[Network, ...]:
    """Networks of an ``exempt_networks`` list (validated by the config already)."""
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def in_networks(ip: str, networks: tuple[Network, ...]) -> bool:
    """True when ``ip`` is inside one of ``networks`` (a short list: a plain scan)."""
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == n.version and address in n for n in networks)
