"""Reverse DNS of the client: has its address a PTR name, and does
that name resolve back to the address (forward-confirmed, FCrDNS; RFC 8601's
"iprev")?

Checked once per session at ``stage``. ``session.checks["reverse-dns"]`` has the
result (pass, none, fail, temperror) and the ``name``: the confirmed one (or, not
confirmed, the first PTR name; None without one), which our Received field shows.
The result goes to Authentication-Results as ``iprev``; ``on_none``,
``on_not_confirmed`` and ``on_error`` say what to answer (by default nothing: the
check only records).

The plugin (named ``reverse-dns``) owns the ``[reverse_dns]`` area; a listener may
override any key in ``[listeners.NAME.reverse_dns]``. ``[plugins.reverse-dns]`` has
only ``enabled`` (false), ``priority`` and ``mode``.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from attrs import field, frozen

from appliance import AuthResult, CheckResult, Duration, PluginConfig, Verdict
from appliance.checks import ClientCheck, ResultTables, action_table, verdict_of
from appliance.dns import DnsTempError, Lookup

log = logging.getLogger("smtp_appliance.reverse_dns")
NAME = "reverse-dns"
MAX_NAMES = 10  # PTR names tried for a forward match (RFC 8601 3: a bounded number)

NoName = action_table("ReverseDnsNone", "continue", 550, "5.7.25",
                      "Client host [#IP#] has no reverse DNS name")
NotConfirmed = action_table("ReverseDnsNotConfirmed", "continue", 550, "5.7.25",
                            "Reverse DNS name #Name# of [#IP#] does not resolve back to it")
Error = action_table("ReverseDnsError", "continue", 451, "4.7.25",
                     "Reverse DNS lookup of [#IP#] failed, try again later")


@frozen(kw_only=True)
class ReverseDnsArea:
    """``[reverse_dns]`` and ``[listeners.NAME.reverse_dns]``."""

    stage: Literal["connect", "mail_from", "rcpt_to"] = "connect"
    timeout: Duration = Duration("5s")
    exempt_allow_listed: bool = True
    on_none: NoName = field(factory=NoName)
    on_not_confirmed: NotConfirmed = field(factory=NotConfirmed)
    on_error: Error = field(factory=Error)


def fcrdns(lookup: Lookup, ip: str) -> tuple[str, str]:
    """("pass" | "none" | "fail" | "temperror", the name): pass = a PTR name whose
    addresses include ``ip``; fail = PTR names, none of them confirmed."""
    try:
        names = lookup.ptr(ip)
    except DnsTempError:
        return "temperror", ""
    if not names:
        return "none", ""
    v6 = ":" in ip
    for name in names[:MAX_NAMES]:
        try:
            addresses = [r.address for r in lookup.query(name, "AAAA" if v6 else "A")]
        except DnsTempError:
            return "temperror", names[0]
        if any(_same(a, ip) for a in addresses):
            return "pass", name
    return "fail", names[0]


def _same(a: str, b: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(a) == ipaddress.ip_address(b)


def compile_settings(area: ReverseDnsArea) -> ResultTables:
    return ResultTables(area, {"none": area.on_none, "fail": area.on_not_confirmed,
                               "temperror": area.on_error})


class ReverseDnsPlugin(ClientCheck):
    """The ``reverse-dns`` plugin: owns ``[reverse_dns]``; checks once per session at
    its ``stage``."""

    area = "reverse_dns"
    Area = ReverseDnsArea
    compile = staticmethod(compile_settings)

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False  # DNS lookups for every client: an admin's choice
        priority: int = 40

    def _stage(self, stage: str, session: Any) -> Verdict | None:
        settings = self.settings.of(session)
        area = settings.area
        if stage != area.stage:
            return None
        found = session.checks.get(NAME)  # looked up once per session
        if found is None:
            found = session.checks[NAME] = self._check(session, area)
        if area.exempt_allow_listed and session.checks.allow_listed:
            return None  # looked up all the same: Received and iprev show the name
        variables = {"IP": session.remote_ip, "Name": found.get("name") or "",
                     "Result": found.result}
        table = settings.tables.get(found.result)
        return verdict_of(table, variables) if table is not None else None

    def _check(self, session: Any, area: ReverseDnsArea) -> CheckResult:
        ip = session.remote_ip
        result, name = fcrdns(self.dns.budget(float(area.timeout)), ip)
        # RFC 8601 2.7.3: iprev's result is pass, fail (none found too) or temperror
        session.auth_results.append(AuthResult(
            "iprev", "fail" if result == "none" else result, {"policy.iprev": ip},
            comment=name or ("no PTR" if result == "none" else "")))
        if result != "pass":
            log.info("session %s: reverse DNS of %s: %s %s", session.session_id, ip, result,
                     name)
        return CheckResult(result, details={"name": name or None})
