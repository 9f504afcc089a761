"""DMARC at the end of data (RFC 7489): the From: domain's policy, evaluated with
the SPF and DKIM results of the message (``transaction.checks``; DKIM is verified
here, by :mod:`appliance.dkim` with the ``[dkim]`` settings, when the dkim plugin
did not run), reported in Authentication-Results and in
``transaction.checks["dmarc"]``, and applied per ``[dmarc]``: by default
``p=reject`` is refused with 550 5.7.1 and ``p=quarantine`` held in the quarantine.

The plugin owns the ``[dmarc]`` area (per listener in ``[listeners.NAME.dmarc]``).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from attrs import frozen

from appliance import (
    Action,
    AuthResult,
    Check,
    Duration,
    PerListener,
    PluginConfig,
    Verdict,
    hookimpl,
    per_listener,
)
from appliance.dkim import DkimArea, verify_message

from .policy import Outcome, evaluate

log = logging.getLogger("smtp_appliance.dmarc")

Disposition = Literal["reject", "tmpreject", "quarantine", "header", "continue"]


def _is_header(text: str) -> bool:
    name, colon, value = text.partition(":")
    return bool(colon and name and value.strip()) and all(
        33 <= ord(c) <= 126 and c != ":" for c in name) and "\n" not in value


@frozen(kw_only=True)
class DmarcArea:
    """``[dmarc]`` and ``[listeners.NAME.dmarc]``."""

    timeout: Duration = Duration("5s")
    on_reject: Disposition = "reject"
    on_quarantine: Disposition = "quarantine"
    on_temperror: Literal["tmpreject", "continue"] = "continue"
    reject_text: str = "Rejected by the DMARC policy of #Domain#"
    quarantine_header: Annotated[str, Check(_is_header, 'a header field such as '
                                            '"X-Spam-Flag: YES"')] = "X-Spam-Flag: YES"
    skip_authenticated: bool = True
    mode: Literal["enforce", "monitor"] = "enforce"


class DmarcPlugin:
    """Built-in plugin ``dmarc``: owns ``[dmarc]``; decides at ``on_message``."""

    area = "dmarc"
    Area = DmarcArea

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False  # refuses mail: an admin's choice
        priority: int = 70  # after dkim (60)

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.areas: PerListener[DmarcArea] = PerListener(DmarcArea())
        self.dkim_areas: PerListener[DkimArea] = PerListener(DkimArea())
        self.dns: Any = None

    @hookimpl
    def on_configure(self, config: Any, dns: Any) -> None:
        self.dns = dns
        self.areas = per_listener(config, self.area, DmarcArea, lambda area: area)
        self.dkim_areas = per_listener(config, "dkim", DkimArea, lambda area: area)

    @hookimpl
    def on_message(self, session: Any, transaction: Any, message: Any) -> Verdict | None:
        area, dkim_area = self.areas.of(session), self.dkim_areas.of(session)
        if area.skip_authenticated and session.auth_user:
            return None
        found = verify_message(session, transaction, message, dkim_area, self.dns)
        dkim = [(s["result"], s["domain"]) for s in found.get("signatures", [])]
        if self.dns is None:
            outcome = Outcome("temperror", reason="no resolver")
        else:
            outcome = evaluate(message.headers.get_all("From"), _spf(session, transaction),
                               dkim, self.dns.budget(float(area.timeout)))
        transaction.auth_results.append(AuthResult(
            "dmarc", outcome.result, outcome.properties, reason=outcome.reason,
            comment=f"p={outcome.policy} dis={outcome.disposition}"
            if outcome.result in ("pass", "fail") else ""))
        transaction.checks.record("dmarc", outcome.result, outcome.reason,
                                  domain=outcome.domain, policy=outcome.policy,
                                  disposition=outcome.disposition)
        return self._apply(session, transaction, message, area, outcome)

    def _apply(self, session: Any, transaction: Any, message: Any, area: DmarcArea,
               outcome: Outcome) -> Verdict | None:
        if outcome.result == "temperror":
            choice = area.on_temperror
        elif outcome.result == "fail":
            choice = {"reject": area.on_reject, "quarantine": area.on_quarantine}.get(
                outcome.disposition, "continue")
        else:
            return None
        monitor = area.mode == "monitor" or self.config.mode == "monitor"
        fields = {"session": session.session_id, "queue_id": transaction.queue_id,
                  "domain": outcome.domain, "result": outcome.result,
                  "policy": outcome.policy, "disposition": outcome.disposition,
                  "action": choice}
        quiet = outcome.result == "fail" and outcome.disposition == "none"  # p=none: reports
        log.log(logging.DEBUG if quiet else logging.INFO,
                "dmarc_would_act" if monitor and choice != "continue" else
                f"dmarc_{outcome.result}", extra={"fields": fields})
        if choice == "continue":
            return None
        verdict = self._verdict(choice, area, outcome)
        if monitor:
            # [dmarc] mode is per listener: the host traces what it would have done
            # (quarantine and header are no reply: a continue naming them).
            return (verdict or Verdict(Action.CONTINUE, text=choice)).as_monitor()
        if choice == "quarantine":
            transaction.quarantine(f"DMARC policy {outcome.policy} of {outcome.domain}")
        elif choice == "header":
            name, _, value = area.quarantine_header.partition(":")
            message.headers.add(name.strip(), value.strip())
        return verdict

    @staticmethod
    def _verdict(choice: str, area: DmarcArea, outcome: Outcome) -> Verdict | None:
        if choice == "reject":
            return Verdict.reject(area.reject_text.replace("#Domain#", outcome.domain),
                                  550, "5.7.1")
        if choice == "tmpreject":
            return Verdict.tmpreject("DMARC policy temporarily unavailable, try again later"
                                     if outcome.result == "temperror" else
                                     area.reject_text.replace("#Domain#", outcome.domain),
                                     451, "4.7.1")
        return None


def _spf(session: Any, transaction: Any) -> tuple[str, str]:
    """(result, domain) of the SPF check of this message: the MAIL FROM domain, or
    the HELO name for the null sender. From the spf plugin's result, else from an
    SPF result another plugin reported for Authentication-Results only."""
    spf = transaction.checks.get("spf")
    if spf is not None:
        return spf.result.lower(), spf.get("domain") or (
            transaction.mail_from_domain or session.helo_name)
    for r in transaction.auth_results:
        if getattr(r, "method", "") == "spf":
            identity = r.properties.get("smtp.mailfrom") or r.properties.get("smtp.helo", "")
            return r.result.lower(), identity.rpartition("@")[2]
    return "none", ""
