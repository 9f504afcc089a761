"""DNSBL and DNSWL (Axigen's checkDNSBL): is the client listed in a
DNS block list or allow list (RFC 5782)? IPv4 clients are looked up reversed
(``2.0.0.127.zone``), IPv6 ones as 32 reversed nibbles.

What was found goes to ``session.checks["dnsbl"]``. Allow-list zones
(``kind = "allow"``) are asked first: a hit marks the result ``allow_listed``
(flow control, SPF, sender MX and reverse DNS then skip the client unless told
otherwise) and the block lists are not asked. Block-list hits add up their zones'
``weight`` (the ``score``); at ``threshold`` the client is listed: the result is
the answer (Axigen's DNSBLResult, "" when not listed), its ``explanation`` the
zone's TXT record (DNSBLExplanation), its ``zone`` the zone, and ``on_listed``
answers (554 5.7.1 with the TXT by default). All zones are asked at once, under
one ``timeout``; a zone that does not answer counts as not listing the client
(``on_error`` says what else to do).

The plugin owns the ``[dnsbl]`` area; a listener may override any key in
``[listeners.NAME.dnsbl]`` (its own ``zones``, ``stage`` or ``on_listed``).
``[plugins.dnsbl]`` has only ``enabled`` (false), ``priority`` and ``mode``.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Annotated, Any, Literal

from attrs import field, frozen

from appliance import AuthResult, Check, CheckResult, Duration, PluginConfig, Verdict
from appliance.checks import ClientCheck, action_table, verdict_of
from appliance.dns import DnsTempError, Lookup, reverse_name

log = logging.getLogger("smtp_appliance.dnsbl")
NAME = "dnsbl"


def _are_codes(values: list[str]) -> bool:
    try:
        for value in values:
            ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return bool(values)


@frozen(kw_only=True)
class Zone:
    """One ``[[dnsbl.zones]]`` entry."""

    zone: Annotated[str, Check(lambda v: "." in v.strip("."), 'a DNS zone such as '
                                                              '"zen.spamhaus.org"')]
    kind: Literal["block", "allow"] = "block"
    listed: Annotated[list[str], Check(_are_codes, 'a non-empty list of addresses or networks '
                                                   'such as "127.0.0.2" or "127.0.0.0/24"')] = (
        field(factory=lambda: ["127.0.0.0/8"]))
    weight: Annotated[int, Check(lambda v: v >= 1, "an integer of at least 1")] = 1


Listed = action_table("DnsblListed", "reject", 554, "5.7.1", "#Explanation#")
Error = action_table("DnsblError", "continue", 451, "4.7.1",
                     "Block list lookup failed, try again later")


@frozen(kw_only=True)
class DnsblArea:
    """``[dnsbl]`` and ``[listeners.NAME.dnsbl]``."""

    stage: Literal["connect", "mail_from", "rcpt_to"] = "connect"
    timeout: Duration = Duration("5s")
    threshold: Annotated[int, Check(lambda v: v >= 1, "an integer of at least 1")] = 1
    zones: list[Zone] = field(factory=list)
    default_text: str = "Client host [#IP#] blocked using #Zone#"
    on_listed: Listed = field(factory=Listed)
    on_error: Error = field(factory=Error)


@frozen
class Settings:
    """One listener's ``[dnsbl]``: the zones split by kind, their codes parsed."""

    area: DnsblArea
    allow: list[Zone]
    block: list[Zone]
    codes: dict[str, list]


def compile_settings(area: DnsblArea) -> Settings:
    return Settings(area, [z for z in area.zones if z.kind == "allow"],
                    [z for z in area.zones if z.kind == "block"],
                    {z.zone: [ipaddress.ip_network(c, strict=False) for c in z.listed]
                     for z in area.zones})


class DnsblPlugin(ClientCheck):
    """The ``dnsbl`` plugin: owns ``[dnsbl]``; looks up once per session, answers at
    its ``stage``."""

    area = "dnsbl"
    Area = DnsblArea
    compile = staticmethod(compile_settings)

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False  # DNS lookups for every client: an admin's choice
        priority: int = 30

    def _stage(self, stage: str, session: Any) -> Verdict | None:
        settings = self.settings.of(session)
        area = settings.area
        if stage != area.stage or not area.zones:
            return None
        found = session.checks.get(NAME)  # looked up once per session
        if found is None:
            found = session.checks[NAME] = self._look_up(session, settings)
        listed = bool(found.result)
        zone = found.get("zone", "") if listed else ""
        variables = {"IP": session.remote_ip, "Zone": zone,
                     "Result": found.result, "Explanation": found.explanation}
        if listed:
            variables["Explanation"] = found.explanation or area.default_text.replace(
                "#Zone#", zone).replace("#IP#", session.remote_ip)
            return verdict_of(area.on_listed, variables)
        if found.get("error"):
            return verdict_of(area.on_error, variables)
        return None

    def _look_up(self, session: Any, settings: Settings) -> CheckResult:
        """The result: the listing answer ("" when not listed), the TXT record as
        explanation; details ``zone``, ``score`` and ``error`` (a zone that did
        not answer)."""
        ip = session.remote_ip
        error = ""
        lookup = self.dns.budget(float(settings.area.timeout))
        for zone, answer, failed in _ask_all(lookup, ip, settings.allow, settings.codes):
            if answer:
                # RFC 8904's method: the one DNS list result Authentication-Results has
                session.auth_results.append(AuthResult(
                    "dnswl", "pass", {"dns.zone": zone.zone, "policy.ip": answer}))
                log.info("session %s: %s is allow-listed by %s (%s)", session.session_id,
                         ip, zone.zone, answer)
                return CheckResult("", allow_listed=True,
                                   details={"zone": zone.zone, "score": 0, "error": error})
            error = error or failed
        hits = []
        score = 0
        for zone, answer, failed in _ask_all(lookup, ip, settings.block, settings.codes):
            error = error or failed
            if answer:
                hits.append((zone, answer))
                score += zone.weight
        if not hits or score < settings.area.threshold:
            return CheckResult("", details={"zone": "", "score": score, "error": error})
        zone, answer = hits[0]
        try:
            text = " ".join(lookup.txt(reverse_name(ip, zone.zone)))
        except DnsTempError:
            text = ""
        log.info("session %s: %s is listed by %s (%s), score %d", session.session_id, ip,
                 ", ".join(z.zone for z, _ in hits), answer, score)
        return CheckResult(answer, text, details={"zone": zone.zone, "score": score,
                                                  "error": error})


def _ask_all(lookup: Lookup, ip: str, zones: list[Zone],
             codes: dict[str, list]) -> list[tuple[Zone, str, str]]:
    """(zone, answer that counts as listed or "", error text or "") for each zone, the
    zones asked at the same time (each in its own greenlet)."""
    if not zones:
        return []

    def ask(zone: Zone) -> tuple[Zone, str, str]:
        try:
            answers = [r.address for r in lookup.query(reverse_name(ip, zone.zone), "A")]
        except DnsTempError as exc:
            return zone, "", str(exc)
        for answer in answers:
            address = ipaddress.ip_address(answer)
            if any(address in net for net in codes[zone.zone]):
                return zone, answer, ""
        return zone, "", ""

    if len(zones) == 1:
        return [ask(zones[0])]
    import gevent

    jobs = [gevent.spawn(ask, zone) for zone in zones]
    gevent.joinall(jobs)
    return [job.get() for job in jobs]
