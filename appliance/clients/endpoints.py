"""Where a peer listens, written the way Postfix and Sendmail write it.

One syntax for every external server the appliance talks to (milters, policy
servers, Dovecot's auth socket): ``inet:host:port``, ``inet:[v6addr]:port``,
``inet6:[v6addr]:port``, Sendmail's ``inet:port@host``, and ``unix:/path`` (also
``local:/path``).
"""

from __future__ import annotations

import socket

__all__ = ["is_socket", "parse_socket"]


def parse_socket(spec: str) -> tuple[int, str | tuple[str, int]]:
    """``spec`` -> (address family, address for ``socket.connect``); ValueError if
    it is none of the forms above."""
    kind, _, rest = spec.partition(":")
    kind = kind.lower()
    if kind in ("unix", "local") and rest.startswith("/"):
        return socket.AF_UNIX, rest
    if kind not in ("inet", "inet6") or not rest:
        raise ValueError(f"expected inet:host:port, inet6:[addr]:port or unix:/path (got {spec!r})")
    if "@" in rest:  # Sendmail's inet:port@host
        port_text, _, host = rest.partition("@")
    elif rest.startswith("["):
        host, _, port_text = rest[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = rest.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected a host and a port 1-65535 (got {spec!r})")
    family = socket.AF_INET6 if kind == "inet6" or ":" in host else socket.AF_INET
    return family, (host, int(port_text))


def is_socket(spec: str) -> bool:
    """Is ``spec`` one of the forms above? (For config checks.)"""
    try:
        parse_socket(spec)
    except ValueError:
        return False
    return True
