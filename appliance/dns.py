"""The appliance's one DNS resolver, for the sender checks (SPF, DNSBL, MX, PTR).

Built on dnspython; under the server gevent has monkey-patched sockets, so a
query waits only in its own session's greenlet. Answers are cached by TTL in a
bounded LRU cache (dnspython's, negative answers included). Every failure to get
an answer (timeout, SERVFAIL, no nameserver reachable) raises :class:`DnsTempError`,
which checks report as TempError.

A check runs under its own time budget: ``lookup = dns.budget(2.0)`` gives the
same resolver with a deadline; each query gets what is left of it::

    lookup = dns.budget(self.timeout)
    names = lookup.ptr(session.remote_ip)        # [] if there is none
    addresses = lookup.addresses(names[0])

Plugins receive the resolver as the ``dns`` argument of ``on_configure``.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

__all__ = ["DnsTempError", "Lookup", "Resolver", "ResolverKeeper", "parse_nameserver",
           "reverse_name"]


class DnsTempError(Exception):
    """No answer could be had (timeout, SERVFAIL, budget spent): try again later."""


def parse_nameserver(value: str) -> tuple[str, int]:
    """ "ip", "ip:port", "v6" or "[v6]:port" -> (ip, port)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest else 53
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, 53


def reverse_name(ip: str, zone: str = "") -> str:
    """The reversed form of ``ip`` under ``zone``: ``2.0.0.127.zone`` for IPv4,
    32 reversed nibbles for IPv6 (RFC 5782); in-addr.arpa/ip6.arpa without a zone."""
    addr = ipaddress.ip_address(ip)
    if zone:
        if addr.version == 4:
            labels = reversed(str(addr).split("."))
        else:
            labels = reversed(addr.exploded.replace(":", ""))
        return ".".join(labels) + "." + zone.rstrip(".")
    return dns.reversename.from_address(str(addr)).to_text(omit_final_dot=True)


class Resolver:
    """One per configuration generation, from the ``[dns]`` table."""

    def __init__(self, nameservers: list[str] | None = None, timeout: float = 5.0,
                 retries: int = 1, cache_size: int = 10000) -> None:
        if nameservers:
            r = dns.resolver.Resolver(configure=False)
            r.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(ns))
                             for ns in nameservers]
        else:
            try:
                r = dns.resolver.Resolver()  # /etc/resolv.conf
            except dns.resolver.NoResolverConfiguration:
                r = dns.resolver.Resolver(configure=False)
                r.nameservers = ["127.0.0.1"]
        r.timeout = timeout
        r.lifetime = timeout * (retries + 1)
        r.retry_servfail = False
        r.cache = dns.resolver.LRUCache(cache_size) if cache_size else None
        self._resolver = r
        self.timeout = timeout
        self.lifetime = r.lifetime

    @classmethod
    def from_config(cls, settings: Any) -> Resolver:
        """From a validated ``[dns]`` table (``appliance.config.Dns``)."""
        return cls(list(settings.nameservers), float(settings.timeout), settings.retries,
                   settings.cache_size)

    @property
    def nameservers(self) -> list[str]:
        return [str(ns) for ns in self._resolver.nameservers]

    def budget(self, seconds: float | None) -> Lookup:
        """The resolver under a time budget: queries after ``seconds`` fail at once."""
        deadline = time.monotonic() + seconds if seconds else None
        return Lookup(self, deadline)

    def query(self, name: str, rdtype: str, deadline: float | None = None) -> list[Any]:
        """The rdata of ``name``/``rdtype``; [] for NXDOMAIN or no such record.
        CNAMEs are followed. Raises DnsTempError."""
        lifetime = self.lifetime
        if deadline is not None:
            lifetime = min(lifetime, deadline - time.monotonic())
            if lifetime <= 0:
                raise DnsTempError(f"{name}/{rdtype}: time budget spent")
        try:
            answer = self._resolver.resolve(name, rdtype, search=False, lifetime=lifetime,
                                            raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
            return []
        except dns.exception.SyntaxError:
            return []  # not a valid DNS name (a label over 63 octets...): no such record
        except dns.exception.Timeout as exc:
            raise DnsTempError(f"{name}/{rdtype}: timeout") from exc
        except dns.resolver.NoNameservers as exc:
            raise DnsTempError(f"{name}/{rdtype}: no nameserver answered") from exc
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"{name}/{rdtype}: {type(exc).__name__}: {exc}") from exc
        return list(answer.rrset) if answer.rrset is not None else []


class ResolverKeeper:
    """Keeps the resolver, and so its cache, across reloads while ``[dns]`` is the same."""

    def __init__(self) -> None:
        self._current: tuple[Any, Resolver] | None = None

    def resolver_for(self, settings: Any) -> Resolver:
        if self._current is None or self._current[0] != settings:
            self._current = (settings, Resolver.from_config(settings))
        return self._current[1]


class Lookup:
    """The resolver with a deadline; the record-type helpers checks use."""

    __slots__ = ("deadline", "resolver")

    def __init__(self, resolver: Resolver, deadline: float | None) -> None:
        self.resolver = resolver
        self.deadline = deadline

    def left(self) -> float | None:
        """Seconds left of the budget (None: no budget)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def query(self, name: str, rdtype: str) -> list[Any]:
        return self.resolver.query(name, rdtype, self.deadline)

    def addresses(self, name: str, ipv6: bool = True) -> list[str]:
        """A (and AAAA) records of ``name``."""
        found = [r.address for r in self.query(name, "A")]
        if ipv6:
            found += [r.address for r in self.query(name, "AAAA")]
        return found

    def txt(self, name: str) -> list[str]:
        """TXT records, each one's strings joined."""
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self.query(name, "TXT")]

    def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, exchange) pairs, lowest preference first; "." is a null MX."""
        found = [(r.preference, r.exchange.to_text(omit_final_dot=True) or ".")
                 for r in self.query(name, "MX")]
        return sorted(found)

    def ptr(self, ip: str) -> list[str]:
        """The PTR names of an address, without the final dot."""
        return [r.target.to_text(omit_final_dot=True)
                for r in self.query(reverse_name(ip), "PTR")]
