"""DNSBL and DNSWL (FEATURES S2, the seeds' checkDNSBL): is the client listed in a
DNS block list or allow list (RFC 5782)? IPv4 clients are looked up reversed
(``2.0.0.127.zone``), IPv6 ones as 32 reversed nibbles.

Allow-list zones (``kind = "allow"``) are asked first: a hit sets
``session.allow_listed`` (flow control, SPF, sender MX and reverse DNS then skip
the client unless told otherwise) and the block lists are not asked. Block-list
hits add up their zones' ``weight``; at ``threshold`` the client is listed:
``session.dnsbl_result`` is the answer (the seeds' DNSBLResult, "" when not
listed), ``session.dnsbl_explanation`` the zone's TXT record, and ``on_listed``
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

from attrs import define, field, frozen

from appliance import AuthResult, Check, Duration, PluginConfig, Verdict
from appliance.checks import ClientCheck, action_table, verdict_of
from appliance.dns import DnsTempError, Lookup, reverse_name

log = logging.getLogger("smtp_appliance.dnsbl")
STASH = "dnsbl"


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


@define
class Outcome:
    """What the lookups found for one session (``session.stash["dnsbl"]``)."""

    listed: bool = False
    error: str = ""
    zone: str = ""
    answer: str = ""
    text: str = ""
    score: int = 0


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
        outcome = session.stash.get(STASH)
        if outcome is None:
            outcome = session.stash[STASH] = self._look_up(session, settings)
        variables = {"IP": session.remote_ip, "Zone": outcome.zone,
                     "Result": outcome.answer, "Explanation": outcome.text}
        if outcome.listed:
            variables["Explanation"] = outcome.text or area.default_text.replace(
                "#Zone#", outcome.zone).replace("#IP#", session.remote_ip)
            return verdict_of(area.on_listed, variables)
        if outcome.error:
            return verdict_of(area.on_error, variables)
        return None

    def _look_up(self, session: Any, settings: Settings) -> Outcome:
        ip = session.remote_ip
        outcome = Outcome()
        session.dnsbl_result = ""
        lookup = self.dns.budget(float(settings.area.timeout))
        for zone, answer, error in _ask_all(lookup, ip, settings.allow, settings.codes):
            if answer:
                session.allow_listed = True
                # RFC 8904's method: the one DNS list result Authentication-Results has
                session.auth_results.append(AuthResult(
                    "dnswl", "pass", {"dns.zone": zone.zone, "policy.ip": answer}))
                log.info("session %s: %s is allow-listed by %s (%s)", session.session_id,
                         ip, zone.zone, answer)
                return outcome
            outcome.error = outcome.error or error
        hits = []
        for zone, answer, error in _ask_all(lookup, ip, settings.block, settings.codes):
            outcome.error = outcome.error or error
            if answer:
                hits.append((zone, answer))
                outcome.score += zone.weight
        if hits and outcome.score >= settings.area.threshold:
            zone, answer = hits[0]
            outcome.listed, outcome.zone, outcome.answer = True, zone.zone, answer
            try:
                outcome.text = " ".join(lookup.txt(reverse_name(ip, zone.zone)))
            except DnsTempError:
                outcome.text = ""
            session.dnsbl_result = answer
            session.dnsbl_explanation = outcome.text
            log.info("session %s: %s is listed by %s (%s), score %d", session.session_id, ip,
                     ", ".join(z.zone for z, _ in hits), answer, outcome.score)
        return outcome


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
