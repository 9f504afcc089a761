"""Sender MX check (Axigen's checkSenderMX): can mail be returned to
the MAIL FROM domain? Pass: it has an MX, or no MX but an address (the implicit
MX of RFC 5321 5.1); Fail: neither, or a null MX ("MX 0 .", RFC 7505: the domain
receives no mail); Neutral: the null sender <> (a bounce); Error: DNS did not
answer. The result goes to ``transaction.checks["sender-mx"]`` (Axigen's
SenderMXCheckResult; with the ``domain`` and why, as ``explanation``).

The plugin (named ``sender-mx``) owns the ``[sender_mx]`` area; a listener may
override any key in ``[listeners.NAME.sender_mx]``. ``[plugins.sender-mx]`` has only
``enabled`` (false), ``priority`` and ``mode``.
"""

from __future__ import annotations

import logging
from typing import Any

from attrs import field, frozen

from appliance import Duration, PluginConfig, Verdict, hookimpl
from appliance.checks import ResultTables, SenderCheck, action_table, sender_mx, verdict_of

log = logging.getLogger("smtp_appliance.sender_mx")

Pass = action_table("SenderMxPass", "continue")
Fail = action_table("SenderMxFail", "reject", 550, "5.1.8",
                    "Sender address rejected: #Domain# accepts no mail (#Explanation#)")
Neutral = action_table("SenderMxNeutral", "continue")
Error = action_table("SenderMxError", "tmpreject", 451, "4.1.8",
                     "Sender address rejected: cannot check #Domain# now, try again later")


@frozen(kw_only=True)
class SenderMxArea:
    """``[sender_mx]`` and ``[listeners.NAME.sender_mx]``."""

    timeout: Duration = Duration("5s")
    exempt_authenticated: bool = True
    exempt_allow_listed: bool = True
    on_pass: Pass = field(factory=Pass)
    on_fail: Fail = field(factory=Fail)
    on_neutral: Neutral = field(factory=Neutral)
    on_error: Error = field(factory=Error)


def compile_settings(area: SenderMxArea) -> ResultTables:
    return ResultTables(area, {"Pass": area.on_pass, "Fail": area.on_fail,
                               "Neutral": area.on_neutral, "Error": area.on_error})


class SenderMxPlugin(SenderCheck):
    """The ``sender-mx`` plugin: owns ``[sender_mx]``; checks at ``on_mail_from``."""

    area = "sender_mx"
    Area = SenderMxArea
    compile = staticmethod(compile_settings)

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False  # DNS lookups for every sender: an admin's choice
        priority: int = 55

    @hookimpl
    def on_mail_from(self, session: Any, transaction: Any) -> Verdict | None:
        settings = self.settings.of(session)
        c = settings.area
        if (c.exempt_authenticated and session.auth_user) or (
                c.exempt_allow_listed and session.checks.allow_listed):
            return None
        domain = transaction.mail_from_domain
        if not transaction.mail_from:
            result, why = "Neutral", "null sender"
        else:
            result, why = sender_mx(self.dns.budget(float(c.timeout)), domain)
        transaction.checks.record("sender-mx", result, why, domain=domain)
        if result in ("Fail", "Error"):
            log.info("session %s: sender MX of %s: %s (%s)", session.session_id, domain,
                     result, why)
        table = settings.tables[result]
        variables = {"IP": session.remote_ip, "Domain": domain,
                     "Sender": transaction.mail_from, "Result": result, "Explanation": why}
        return verdict_of(table, variables)
