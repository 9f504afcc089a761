"""SPF (RFC 7208; Axigen's checkSPF): is the client allowed to send
for the MAIL FROM domain, or for its HELO name when the sender is null (<>)?

pyspf evaluates the policy; its DNS lookups go through the appliance's resolver
(cache, ``[dns]`` nameservers) under this check's ``timeout``. The result goes to
``transaction.checks["spf"]`` (None, Neutral, Pass, Fail, SoftFail, TempError,
PermError; with the ``domain`` checked and the ``explanation``), is recorded for
Authentication-Results and Received-SPF, and its table (``[spf.on_fail]``...)
says what to answer: by default Fail is refused with 550 5.7.23 and the domain's
explanation, TempError with 451 4.7.24.

The plugin owns the ``[spf]`` area; a listener may override any key in
``[listeners.NAME.spf]`` (the public port may refuse SoftFail, say).
``[plugins.spf]`` has only ``enabled`` (false), ``priority`` and ``mode``.
"""

from __future__ import annotations

import logging
from typing import Any

from attrs import field, frozen

from appliance import AuthResult, Duration, PluginConfig, Verdict, hookimpl
from appliance.checks import SEED_NAMES, ResultTables, SenderCheck, action_table, verdict_of
from appliance.checks import spf_check as check

log = logging.getLogger("smtp_appliance.spf")

Pass = action_table("SpfPass", "continue")
Fail = action_table("SpfFail", "reject", 550, "5.7.23", "#Explanation#")
SoftFail = action_table("SpfSoftFail", "continue")
Neutral = action_table("SpfNeutral", "continue")
NoPolicy = action_table("SpfNone", "continue")
TempError = action_table("SpfTempError", "tmpreject", 451, "4.7.24",
                         "SPF: temporary DNS error for #Domain#, try again later")
PermError = action_table("SpfPermError", "continue", 550, "5.7.24",
                         "SPF: the policy of #Domain# is broken: #Explanation#")


@frozen(kw_only=True)
class SpfArea:
    """``[spf]`` and ``[listeners.NAME.spf]``."""

    timeout: Duration = Duration("10s")
    helo_for_null_sender: bool = True
    exempt_authenticated: bool = True
    exempt_allow_listed: bool = True
    on_pass: Pass = field(factory=Pass)
    on_fail: Fail = field(factory=Fail)
    on_softfail: SoftFail = field(factory=SoftFail)
    on_neutral: Neutral = field(factory=Neutral)
    on_none: NoPolicy = field(factory=NoPolicy)
    on_temperror: TempError = field(factory=TempError)
    on_permerror: PermError = field(factory=PermError)


def _is_domain(name: str) -> bool:
    """A name SPF can be asked about (RFC 7208 4.3): dotted, not an address literal."""
    return "." in name.strip(".") and not name.startswith("[") and not name.replace(
        ".", "").isdigit()


def compile_settings(area: SpfArea) -> ResultTables:
    return ResultTables(area, {result: getattr(area, f"on_{result}") for result in SEED_NAMES})


class SpfPlugin(SenderCheck):
    """The ``spf`` plugin: owns ``[spf]``; checks at ``on_mail_from``."""

    area = "spf"
    Area = SpfArea
    compile = staticmethod(compile_settings)

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False  # DNS lookups for every sender: an admin's choice
        priority: int = 50

    @hookimpl
    def on_mail_from(self, session: Any, transaction: Any) -> Verdict | None:
        settings = self.settings.of(session)
        c = settings.area
        if (c.exempt_authenticated and session.auth_user) or (
                c.exempt_allow_listed and session.checks.allow_listed):
            return None
        if transaction.mail_from:
            sender, domain = transaction.mail_from, transaction.mail_from_domain
            prop = ("smtp.mailfrom", sender)
        elif c.helo_for_null_sender and session.helo_name:
            domain = session.helo_name
            sender, prop = f"postmaster@{domain}", ("smtp.helo", domain)
        else:
            return None
        if _is_domain(domain):
            result, text = check(self.dns.budget(float(c.timeout)), session.remote_ip, sender,
                                 session.helo_name, session.hostname, float(c.timeout))
        else:  # an address literal, a bare word: there is no policy to ask for
            result, text = "none", ""
        found = transaction.checks.record("spf", SEED_NAMES.get(result, result), text,
                                          domain=domain)
        comment = f"{session.hostname}: {text}" if text else ""
        reason = text if result in ("fail", "temperror", "permerror") else ""
        transaction.auth_results.append(AuthResult("spf", result, dict([prop]), reason=reason,
                                                   comment=comment if not reason else ""))
        if result in ("temperror", "permerror"):
            log.info("session %s: spf %s for %s: %s", session.session_id, result, domain, text)
        variables = {"IP": session.remote_ip, "Domain": domain, "Sender": sender,
                     "Result": found.result, "Explanation": text}
        return verdict_of(settings.tables[result], variables)
