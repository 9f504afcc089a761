"""What the DNS sender checks (spf, dnsbl, sender-mx, reverse-dns) share: their
plugin skeleton (:class:`SenderCheck`, :class:`ClientCheck`), the checks themselves
where rules call them too (:func:`spf_check`, :func:`sender_mx`), and what each does
with its results: a small table per result
(``[spf.on_fail]``) with the config vocabulary every area uses: ``action``
(accept | continue | reject | tmpreject | discard | abort) and an optional
``code``, ``enhanced_code`` and ``text``.

Each result's table has its own defaults (``on_fail`` of spf rejects with 550 5.7.23),
so an admin who writes only ``text`` keeps the documented action and codes: the
classes are made by :func:`action_table` with those defaults spelled out.

Texts may use the check's variables: ``#IP#``, ``#Domain#``, ``#Sender#``,
``#Result#``, ``#Explanation#`` (the domain's SPF explanation, the DNSBL's TXT
record), ``#Zone#``, ``#Name#`` (the client's reverse name).
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import attrs
import spf

from appliance import Action, Verdict, hookimpl
from appliance.config import Check
from appliance.dns import DnsTempError, Lookup
from appliance.hooks.plugin import PerListener, per_listener

ActionName = Literal["accept", "continue", "reject", "tmpreject", "discard", "abort"]
_CODE = Check(lambda v: v == 0 or 200 <= v <= 599, "an SMTP reply code from 200 to 599 (0 = "
                                                   "the action's default)")
_ENHANCED = Check(lambda v: v == "" or re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", v) is not None,
                  'an enhanced status code such as "5.7.1" (RFC 3463)')


def action_table(name: str, action: str, code: int = 0, enhanced_code: str = "",
                 text: str = "") -> type:
    """A frozen attrs class for one result's table, with these defaults."""
    return attrs.make_class(name, {
        "action": attrs.field(type=ActionName, default=action),
        "code": attrs.field(type=Annotated[int, _CODE], default=code),
        "enhanced_code": attrs.field(type=Annotated[str, _ENHANCED], default=enhanced_code),
        "text": attrs.field(type=str, default=text),
    }, frozen=True, kw_only=True)


def expand(text: str, variables: dict[str, str]) -> str:
    for key, value in variables.items():
        text = text.replace(f"#{key}#", value)
    return " ".join(text.split())  # one line: no CR/LF from a DNS TXT record


def verdict_of(table: Any, variables: dict[str, str], default_text: str = "") -> Verdict | None:
    """The verdict a result's table asks for; None for ``continue``."""
    if table.action == "continue":
        return None
    action = Action(table.action)
    text = expand(table.text or default_text, variables) or None
    if action in (Action.ACCEPT, Action.DISCARD):
        return Verdict(action, text=text)
    defaults = {Action.REJECT: (550, "5.7.1"), Action.TMPREJECT: (451, "4.7.1"),
                Action.ABORT: (421, "4.7.0")}[action]
    return Verdict(action, table.code or defaults[0], table.enhanced_code or defaults[1], text)


@attrs.frozen
class ResultTables:
    """One listener's area, with its result tables by the check's result name."""

    area: Any
    tables: dict[str, Any]


class SenderCheck:
    """What the DNS sender checks share: their area (``area``, ``Area``) compiled
    for each listener by ``compile``, and the appliance's resolver, both handed over
    by ``on_configure``."""

    area: str
    Area: type
    compile: Callable[[Any], Any]  # a staticmethod in each check

    def __init__(self, config: Any) -> None:
        self.config = config
        self.dns: Any = None
        self.settings: PerListener[Any] = PerListener(self.compile(self.Area()))

    @hookimpl
    def on_configure(self, config: Any, dns: Any) -> None:
        self.dns = dns
        self.settings = per_listener(config, self.area, self.Area, self.compile)


class ClientCheck(SenderCheck):
    """A check about the client (the same for the whole session), answered at the
    area's ``stage``: connect, mail_from or rcpt_to, by ``_stage``."""

    def _stage(self, stage: str, session: Any) -> Verdict | None:
        raise NotImplementedError

    @hookimpl
    def on_connect(self, session: Any) -> Verdict | None:
        return self._stage("connect", session)

    @hookimpl
    def on_mail_from(self, session: Any) -> Verdict | None:
        return self._stage("mail_from", session)

    @hookimpl
    def on_rcpt_to(self, session: Any) -> Verdict | None:
        return self._stage("rcpt_to", session)


# --- the checks themselves, for their plugins and for rules --------------------------

#: pyspf's result -> Axigen's SPFResult
SEED_NAMES = {"pass": "Pass", "fail": "Fail", "softfail": "SoftFail", "neutral": "Neutral",
              "none": "None", "temperror": "TempError", "permerror": "PermError"}

# pyspf looks DNS up through its module-level DNSLookup; during a check it uses
# the Lookup of that check (a context variable: each session greenlet has its own).
_current: contextvars.ContextVar[Lookup | None] = contextvars.ContextVar("spf_lookup",
                                                                         default=None)
_pyspf_lookup = spf.DNSLookup


def _dns_lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> list:
    lookup = _current.get()
    if lookup is None:
        return _pyspf_lookup(name, qtype, strict, timeout)
    try:
        records = lookup.query(name, qtype)
    except DnsTempError as exc:
        raise spf.TempError(f"DNS {exc}") from exc
    key = (name, qtype)
    if qtype in ("A", "AAAA"):
        return [(key, r.address) for r in records]
    if qtype == "MX":
        return [(key, (r.preference, r.exchange)) for r in records]
    if qtype == "PTR":
        return [(key, r.target.to_text(True)) for r in records]
    if qtype in ("TXT", "SPF"):
        return [(key, r.strings) for r in records]
    return []


spf.DNSLookup = _dns_lookup


def spf_check(lookup: Lookup, ip: str, sender: str, helo: str, receiver: str,
              seconds: float) -> tuple[str, str]:
    """(pyspf result, explanation or error text) for one identity."""
    token = _current.set(lookup)
    try:
        query = spf.query(i=ip, s=sender, h=helo, receiver=receiver, querytime=seconds)
        result, _code, text = query.check()
    finally:
        _current.reset(token)
    return result, text


def sender_mx(lookup: Lookup, domain: str) -> tuple[str, str]:
    """("Pass" | "Fail" | "Error", why) for a sender domain."""
    if domain.startswith("[") and domain.endswith("]"):
        return "Pass", "address literal"
    try:
        exchanges = lookup.mx(domain)
        if exchanges:
            if all(host == "." for _, host in exchanges):
                return "Fail", "null MX"
            return "Pass", "MX " + exchanges[0][1]
        if lookup.addresses(domain):
            return "Pass", "no MX, has an address"
    except DnsTempError as exc:
        return "Error", str(exc)
    return "Fail", "no MX and no address"
