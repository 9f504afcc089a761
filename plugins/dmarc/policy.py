"""DMARC evaluation (RFC 7489): the From: domain's policy record, the
organizational domain from the Public Suffix List, SPF and DKIM alignment, and the
policy that applies (p/sp, pct). No I/O but the DNS lookups through ``lookup``.
"""

from __future__ import annotations

import random
from email.utils import getaddresses
from functools import cache
from typing import Any

from attrs import frozen
from publicsuffixlist import PublicSuffixList

from appliance import DnsTempError

POLICIES = ("none", "quarantine", "reject")


@cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # the list bundled with the package: no download


def organizational_domain(domain: str) -> str:
    """``mail.example.co.uk`` -> ``example.co.uk``; a public suffix is its own."""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


def aligned(a: str, b: str, mode: str) -> bool:
    """Identifier alignment: ``s`` the same domain, ``r`` the same organizational
    domain (RFC 7489 3.1)."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if not a or not b:
        return False
    return a == b if mode == "s" else organizational_domain(a) == organizational_domain(b)


def from_domain(values: list[str]) -> tuple[str, str]:
    """(domain, problem) from the From: field values: exactly one field with one
    address, or one domain for all of them (RFC 7489 6.6.1)."""
    if not values:
        return "", "no From: field"
    addresses = [addr for _, addr in getaddresses(values) if addr]
    domains = {addr.rpartition("@")[2].lower().rstrip(".") for addr in addresses}
    if len(domains) != 1 or "" in domains or not all("@" in a for a in addresses):
        return "", "From: field without exactly one sender domain"
    return domains.pop(), ""


@frozen
class Record:
    """A parsed ``v=DMARC1`` record; ``at`` is the domain it was found at."""

    at: str
    p: str
    sp: str
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"


def parse_record(text: str, at: str) -> Record | None:
    """None if ``text`` is not a usable DMARC record. A record with a bad ``p=``
    is treated as ``p=none`` when it has ``rua=`` (RFC 7489 6.6.3)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        if eq:
            tags.setdefault(key.strip().lower(), value.strip())
    if next(iter(tags), "") != "v" or tags["v"] != "DMARC1":  # v=DMARC1 comes first
        return None
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        if "rua" not in tags:
            return None
        p = "none"
    sp = tags.get("sp", "").lower()
    try:
        pct = min(100, max(0, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    mode = {"s": "s", "r": "r"}
    return Record(at, p, sp if sp in POLICIES else p, pct,
                  mode.get(tags.get("adkim", "r").lower(), "r"),
                  mode.get(tags.get("aspf", "r").lower(), "r"))


def find_record(domain: str, lookup: Any) -> Record | None:
    """The policy of ``domain``: ``_dmarc.domain``, else the organizational
    domain's when the domain has none. Several DMARC records at one name: no policy
    (RFC 7489 6.6.3). Raises DnsTempError."""
    org = organizational_domain(domain)
    for at in dict.fromkeys((domain, org)):
        found = [r for r in (parse_record(t, at) for t in lookup.txt(f"_dmarc.{at}")) if r]
        if found:
            return found[0] if len(found) == 1 else None
    return None


@frozen
class Outcome:
    """What DMARC says about one message."""

    result: str               # pass, fail, none, temperror, permerror
    domain: str = ""          # the From: domain
    policy: str = "none"      # the policy published for it (p, or sp for a subdomain)
    disposition: str = "none" # what to do after pct sampling: none, quarantine, reject
    reason: str = ""

    @property
    def properties(self) -> dict[str, str]:
        return {"header.from": self.domain} if self.domain else {}


def evaluate(from_values: list[str], spf: tuple[str, str], dkim: list[tuple[str, str]],
             lookup: Any, sample: float | None = None) -> Outcome:
    """``spf``: (result, domain SPF checked); ``dkim``: (result, d=) per signature.
    ``sample`` in [0, 100) decides pct (random when None)."""
    domain, problem = from_domain(from_values)
    if problem:
        return Outcome("permerror", reason=problem)
    try:
        record = find_record(domain, lookup)
    except DnsTempError as exc:
        return Outcome("temperror", domain, reason=f"policy lookup failed: {exc}")
    if record is None:
        return Outcome("none", domain, reason="no DMARC policy")
    policy = record.p if record.at == domain else record.sp
    spf_ok = spf[0] == "pass" and aligned(spf[1], domain, record.aspf)
    dkim_ok = any(r == "pass" and aligned(d, domain, record.adkim) for r, d in dkim)
    if spf_ok or dkim_ok:
        how = " and ".join(n for n, ok in (("SPF", spf_ok), ("DKIM", dkim_ok)) if ok)
        return Outcome("pass", domain, policy, "none", f"{how} aligned")
    disposition = policy
    if record.pct < 100:
        roll = random.uniform(0, 100) if sample is None else sample
        if roll >= record.pct:  # not sampled: the next less strict policy (6.6.4)
            disposition = POLICIES[max(0, POLICIES.index(policy) - 1)]
    return Outcome("fail", domain, policy, disposition, "neither SPF nor DKIM aligned")
