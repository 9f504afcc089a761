"""Which next hop a recipient goes to (docs/delivery.md, "Routing").

In order: the recipient's ``relay_host`` (set by a rule or plugin: the name of a
next hop, or a host[:port] reached over SMTP), ``[delivery] recipients`` by
address, ``[delivery] domains`` by domain, then ``[delivery] default``.
"""

from __future__ import annotations

from appliance.config.delivery import Delivery, NextHop


def route(config: Delivery, address: str, relay_host: str = "") -> tuple[str, NextHop] | None:
    """(next hop name, next hop) for a recipient, or None when no route names one."""
    if relay_host:
        if relay_host in config.next_hops:
            return relay_host, config.next_hops[relay_host]
        return f"relay_host:{relay_host}", NextHop(protocol="smtp",
                                                    address=_inet(relay_host))
    name = config.recipients.get(address.lower()) or config.recipients.get(address)
    if name is None:
        domain = address.rpartition("@")[2].lower()
        name = config.domains.get(domain) or config.default
    if not name:
        return None
    return name, config.next_hops[name]


def _inet(relay_host: str) -> str:
    """host, host:port, [addr] or [addr]:port -> inet:host:port (port 25 by default)."""
    host, port = relay_host, "25"
    if relay_host.startswith("["):
        host, _, rest = relay_host[1:].partition("]")
        port = rest.removeprefix(":") or "25"
        return f"inet:[{host}]:{port}"
    if relay_host.count(":") == 1:
        host, _, port = relay_host.partition(":")
    return f"inet:{host}:{port}"
