"""The check methods of rules (Axigen's checkSPF, checkDNSBL, checkSenderMX,
checkGeoIp): each reads the result its check plugin left in ``session.checks`` /
``transaction.checks`` and runs the check only when there is none, so a check
that a rule calls and that its plugin also runs is done once. What they find is
recorded there too, where later rules and plugins read it
(``dnsbl_result``, ``spf_result``, ``checks.NAME.KEY``).

The lookups go through the appliance's resolver (``appliance.dns``) and the
shared check code of ``appliance.checks``; a DNS failure is a :class:`RuleFailure`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from appliance import DnsTempError, Verdict
from appliance.checks import SEED_NAMES, sender_mx, spf_check
from appliance.dns import reverse_name

#: Seconds every lookup of one check method may take together.
TIMEOUT = 10.0

Run = Callable[[Any], Verdict | None]


class RuleFailure(Exception):
    """A method could not do its work now (a check's DNS failed, no GeoIP result):
    the command gets 451 4.3.0 naming the rule."""


def compile_spf(step: Any, event: str) -> Run:
    def run(env: Any) -> None:
        tx, session = env.transaction, env.session
        if "spf" in tx.checks:
            return
        sender = tx.mail_from or f"postmaster@{session.helo_name}"
        result, text = spf_check(env.dns.budget(TIMEOUT), session.remote_ip, sender,
                                 session.helo_name, session.hostname, TIMEOUT)
        if result == "temperror":
            raise RuleFailure(f"SPF: temporary DNS error: {text}")
        tx.checks.record("spf", SEED_NAMES.get(result, result), text,
                         domain=sender.rpartition("@")[2])

    return run


def compile_dnsbl(step: Any, event: str) -> Run:
    if not step.zones:
        raise ValueError("method 'check_dnsbl' needs zones, such as [\"zen.spamhaus.org\"]")
    zones = list(step.zones)

    def run(env: Any) -> None:
        checks = env.session.checks
        found = checks.get("dnsbl")  # a listing in one of these zones, or this very check
        if found is not None and (found.get("zone") in zones or found.get("zones") == zones):
            return
        lookup = env.dns.budget(TIMEOUT)
        ip = env.session.remote_ip
        try:
            for zone in zones:
                answers = lookup.addresses(reverse_name(ip, zone))
                if answers:
                    text = " ".join(lookup.txt(reverse_name(ip, zone)))
                    checks.record("dnsbl", answers[0], text, zone=zone)
                    return
        except DnsTempError as exc:
            raise RuleFailure(f"DNSBL lookup failed: {exc}") from None
        checks.record("dnsbl", "", "", zone="", zones=zones)

    return run


def compile_sender_mx(step: Any, event: str) -> Run:
    def run(env: Any) -> None:
        tx = env.transaction
        if "sender-mx" in tx.checks:
            return
        if not tx.mail_from:
            result, why = "Neutral", "null sender"
        else:
            result, why = sender_mx(env.dns.budget(TIMEOUT), tx.mail_from_domain)
        tx.checks.record("sender-mx", result, why, domain=tx.mail_from_domain)

    return run


def compile_geoip(step: Any, event: str) -> Run:
    allowed = frozenset(c.upper() for c in step.allowed)
    banned = frozenset(c.upper() for c in step.banned)
    if not (allowed or banned):
        raise ValueError("method 'check_geoip' needs allowed or banned country codes")
    action = step.ban_action or "reject"
    if action not in ("accept", "reject", "tmpreject", "abort"):
        raise ValueError("ban_action: expected one of accept, reject, tmpreject, abort "
                         f"(got {action!r})")

    def run(env: Any) -> Verdict | None:
        checks = env.session.checks
        if "geoip" not in checks:
            raise RuleFailure("no GeoIP result: the geoip plugin is not enabled for this "
                           "listener ([plugins.geoip], [geoip] database)")
        country = (checks.value("geoip", "country") or "").upper()
        is_banned = country in banned or bool(allowed and country not in allowed)
        found = checks["geoip"]
        checks.record("geoip", found.result, found.explanation, country=country or None,
                      banned=is_banned)
        if not is_banned or action == "accept":
            return None
        text = f"Connections from {country or 'your country'} are not accepted"
        return {"reject": Verdict.reject, "tmpreject": Verdict.tmpreject,
                "abort": Verdict.abort}[action](text)

    return run
