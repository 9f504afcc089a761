"""The variables a rule reads and sets: Axigen's policy variables under our names.

Each has the events at which it exists and those at which a rule may set it (the
seed's read/write rules, docs/rules.md has the table). The names are the
contexts' own (``remote_ip`` is ``session.remote_ip``), so a rule reads like a
plugin. A name used at an event where it does not exist, or set where it is
read-only, is refused when the configuration is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field, frozen

EVENTS = ("connect", "ehlo", "auth", "mail_from", "rcpt_to", "headers_received", "message",
          "disconnect")
ALL = EVENTS
AFTER_EHLO = EVENTS[1:]
ENVELOPE = ("mail_from", "rcpt_to", "headers_received", "message")
BEFORE_DATA = ("connect", "ehlo", "auth", "mail_from", "rcpt_to")
RCPT = ("rcpt_to",)
DATA = ("headers_received", "message")
DELIVERY_CHOICES = ("all", "none", "auth")


@define(slots=True)
class RuleState:
    """What rules keep for a session: values methods produced (``header_value``,
    filter results) and the delivery permissions rules set."""

    values: dict[str, Any] = field(factory=dict)
    filters: dict[str, dict[str, str]] = field(factory=dict)
    remote_delivery: str = ""  # "": as [relay] says
    local_delivery: str = ""


@define(slots=True)
class Env:
    """One evaluation: the event, the contexts it has, and the session's rule state."""

    event: str
    session: Any
    state: RuleState
    transaction: Any = None
    recipient: Any = None
    headers: Any = None
    message: Any = None
    hostname: str = ""  # EHLO/HELO's argument, at ehlo
    extended: bool = False
    username: str = ""  # at auth
    mechanism: str = ""
    dns: Any = None  # the appliance's resolver, for the check methods
    #: The header fields by lower-case name, built at the first header() of the
    #: event's rules and dropped by the actions that change the header.
    index: dict[str, list[str]] | None = None

    def header_values(self, name: str) -> list[str]:
        if self.headers is None:
            return []
        if self.index is None:
            index: dict[str, list[str]] = {}
            for field_name, value in self.headers:  # unfolded, as Headers.get_all gives
                index.setdefault(field_name.lower(), []).append(
                    value.replace("\r\n", "").strip() if "\r\n" in value else value.strip())
            self.index = index
        return self.index.get(name.lower(), [])


@frozen
class Variable:
    name: str
    seed: str  # Axigen's name
    events: tuple[str, ...]
    get: Callable[[Env], Any]
    writable: tuple[str, ...] = ()
    set: Callable[[Env, Any], None] | None = None
    kind: type | tuple[type, ...] = str
    choices: tuple[str, ...] = ()
    meaning: str = ""


def _tls_version(env: Env) -> float:
    tls = env.session.tls
    if tls is None:
        return 0
    try:
        return float(tls.protocol.removeprefix("TLSv"))
    except ValueError:
        return 0


def _check(where: str, name: str, key: str = "result", default: Any = "") -> Callable:
    def get(env: Env) -> Any:
        if where == "session":
            checks = env.session.checks
        elif env.transaction is None:
            return default
        else:
            checks = env.transaction.checks
        value = checks.value(name, key, default)
        return default if value is None else value

    return get


def _relay(key: str) -> Callable[[Env], bool]:
    """What the relay plugin found about the current recipient (it runs before rules)."""

    def get(env: Env) -> bool:
        return bool(env.transaction.checks.value("relay", key, False))

    return get


def _set_session(name: str) -> Callable[[Env, Any], None]:
    return lambda env, value: setattr(env.session, name, value)


def _set_rcpt(name: str) -> Callable[[Env, Any], None]:
    return lambda env, value: setattr(env.recipient, name, value)


def _set_state(name: str) -> Callable[[Env, Any], None]:
    return lambda env, value: setattr(env.state, name, value)


def _set_spf(env: Env, value: Any) -> None:
    env.transaction.checks.record("spf", str(value), "set by a rule")


def _delay(env: Env) -> str:
    when = env.transaction.delay_until
    return when.isoformat() if when else ""


V = Variable
TABLE: tuple[Variable, ...] = (
    V("listener", "", ALL, lambda e: e.session.listener,
      meaning="the listener's name"),
    V("local_ip", "smtpIp", ALL, lambda e: e.session.local_ip),
    V("local_port", "smtpPort", ALL, lambda e: e.session.local_port, kind=int),
    V("remote_ip", "remoteSmtpIp", ALL, lambda e: e.session.remote_ip),
    V("remote_port", "remoteSmtpPort", ALL, lambda e: e.session.remote_port, kind=int),
    V("tls", "isSSLConnection", ALL, lambda e: e.session.tls is not None, kind=bool),
    V("tls_protocol", "", ALL, lambda e: e.session.tls.protocol if e.session.tls else "",
      meaning='"TLSv1.3", "TLSv1.2"; "" without TLS'),
    V("tls_version", "", ALL, _tls_version, kind=float,
      meaning="1.3, 1.2; 0 without TLS"),
    V("helo_name", "ehloHost", AFTER_EHLO,
      lambda e: e.hostname if e.event == "ehlo" else e.session.helo_name),
    V("esmtp", "isESMTP", AFTER_EHLO,
      lambda e: e.extended if e.event == "ehlo" else e.session.esmtp, kind=bool),
    V("auth_user", "authUser", ALL,
      lambda e: e.username if e.event == "auth" else e.session.auth_user),
    V("auth_mechanism", "", ALL,
      lambda e: e.mechanism if e.event == "auth" else e.session.auth_mechanism),
    V("message_count", "mailCount", ALL, lambda e: e.session.message_count, kind=int),
    V("total_size", "totalMailSize", ALL, lambda e: e.session.total_size, kind=int),
    V("max_message_size", "maxDataSize", ALL, lambda e: e.session.max_message_size,
      BEFORE_DATA, _set_session("max_message_size"), int, meaning="in bytes"),
    V("max_recipients", "maxRcptCount", ALL, lambda e: e.session.max_recipients,
      BEFORE_DATA, _set_session("max_recipients"), int),
    V("max_received_headers", "maxReceivedHeaders", ALL,
      lambda e: e.session.max_received_headers, BEFORE_DATA,
      _set_session("max_received_headers"), int),
    V("remote_delivery", "remoteDelivery", ALL, lambda e: e.state.remote_delivery,
      BEFORE_DATA, _set_state("remote_delivery"), str, DELIVERY_CHOICES),
    V("local_delivery", "localDelivery", ALL, lambda e: e.state.local_delivery,
      BEFORE_DATA, _set_state("local_delivery"), str, DELIVERY_CHOICES),
    V("dnsbl_zone", "DNSBLServer", ALL, _check("session", "dnsbl", "zone")),
    V("dnsbl_result", "DNSBLResult", ALL, _check("session", "dnsbl")),
    V("dnsbl_explanation", "DNSBLExplanation", ALL,
      _check("session", "dnsbl", "explanation")),
    V("spf_result", "SPFResult", ENVELOPE, _check("transaction", "spf"),
      ("mail_from", "rcpt_to"), _set_spf, str,
      ("None", "Neutral", "Pass", "Fail", "SoftFail", "TempError", "PermError")),
    V("sender_mx_result", "SenderMXCheckResult", ENVELOPE,
      _check("transaction", "sender-mx")),
    V("geoip_country", "GeoIPResult", ALL, _check("session", "geoip", "country")),
    V("geoip_banned", "IsGeoIPBanned", ALL, _check("session", "geoip", "banned", False),
      kind=bool),
    V("mail_from", "mailFrom", ENVELOPE, lambda e: e.transaction.mail_from),
    V("mail_from_local_part", "mailFromLocalPart", ENVELOPE,
      lambda e: e.transaction.mail_from_local_part),
    V("mail_from_domain", "mailFromDomain", ENVELOPE,
      lambda e: e.transaction.mail_from_domain),
    V("mail_from_auth", "mailFromAuthUser", ENVELOPE,
      lambda e: e.transaction.mail_from_auth or ""),
    V("mail_from_size", "mailFromSize", ENVELOPE,
      lambda e: e.transaction.mail_from_size or 0, kind=int),
    V("rcpt_count", "rcptCount", ENVELOPE, lambda e: e.transaction.rcpt_count, kind=int),
    V("rcpt", "currentRcpt", RCPT, lambda e: e.recipient.address, RCPT, _set_rcpt("address")),
    V("rcpt_local_part", "currentRcptLocalPart", RCPT, lambda e: e.recipient.local_part),
    V("rcpt_domain", "", RCPT, lambda e: e.recipient.domain),
    V("rcpt_folder", "currentRcptFolder", RCPT, lambda e: e.recipient.folder, RCPT,
      _set_rcpt("folder")),
    V("rcpt_relay_host", "currentRcptRelayHost", RCPT, lambda e: e.recipient.relay_host,
      RCPT, _set_rcpt("relay_host")),
    V("rcpt_domain_is_local", "isRcptDomainLocal", RCPT, _relay("local_domain"), kind=bool),
    V("rcpt_is_local", "isRcptLocal", RCPT, _relay("local"), kind=bool),
    V("relaying", "", RCPT, lambda e: not _relay("local_domain")(e), kind=bool,
      meaning="the recipient is not of a local domain"),
    V("overquota", "isOverquota", RCPT, lambda e: e.recipient.overquota, kind=bool),
    V("overquota_action", "overquotaAction", RCPT, lambda e: e.recipient.overquota_action,
      RCPT, _set_rcpt("overquota_action"), str, ("reject", "accept")),
    V("delay_delivery", "delayDelivery", ENVELOPE, _delay, ("rcpt_to", "headers_received",
      "message"), lambda e, v: e.transaction.delay_delivery(str(v)), str),
    V("quarantine", "", ENVELOPE, lambda e: e.transaction.quarantine_reason or "",
      meaning="why the message is held, if a rule or a milter quarantined it"),
    V("rfc_break", "RFCBreak", ALL, lambda e: [], kind=list,
      meaning="always empty: no header refolding or body line-end repair to allow"),
    V("header_value", "HeaderValue", DATA, lambda e: e.state.values.get("header_value", ""),
      meaning="what the last read_header found"),
    V("header_exists", "existsHeader", DATA,
      lambda e: e.state.values.get("header_exists", False), kind=bool,
      meaning="what the last check_header_exists found"),
    V("add_filter_result", "addFilterResult", ALL,
      lambda e: e.state.values.get("add_filter_result", "")),
    V("add_filter_explanation", "addFilterExplanation", ALL,
      lambda e: e.state.values.get("add_filter_explanation", "")),
)
BY_NAME = {v.name: v for v in TABLE}


def _dynamic(name: str, event: str) -> Callable[[Env], Any] | None:
    """``checks.NAME.KEY`` (a check's result) and ``filter.NAME.result|action|
    explanation`` (an executed milter's)."""
    parts = name.split(".")
    if parts[0] == "checks" and len(parts) in (2, 3):
        check, key = parts[1], parts[2] if len(parts) == 3 else "result"

        def get(env: Env) -> Any:
            value = env.session.checks.value(check, key)
            if value is None and env.transaction is not None:
                value = env.transaction.checks.value(check, key)
            return "" if value is None else value

        return get
    if parts[0] == "filter" and len(parts) == 3 and parts[2] in (
            "result", "action", "explanation"):
        default = "neutral" if parts[2] == "result" else ""
        return lambda env: env.state.filters.get(parts[1], {}).get(parts[2], default)
    return None


def getter(name: str, event: str) -> Callable[[Env], Any]:
    """The getter of ``name`` at ``event``; ValueError naming what is wrong."""
    var = BY_NAME.get(name)
    if var is None:
        found = _dynamic(name, event)
        if found is not None:
            return found
        raise ValueError(f"unknown variable {name!r} (docs/rules.md lists them; "
                         f"checks.NAME.KEY and filter.NAME.result are also known)")
    if event not in var.events:
        raise ValueError(f"variable {name!r} does not exist at event {event!r} "
                         f"(it exists at: {', '.join(var.events)})")
    return var.get


def setter(name: str, event: str) -> Variable:
    """The variable ``name`` if a rule at ``event`` may set it; ValueError otherwise."""
    var = BY_NAME.get(name)
    if var is None:
        getter(name, event)  # the unknown-name message
        raise ValueError(f"variable {name!r} is read-only")
    if var.set is None:
        raise ValueError(f"variable {name!r} is read-only")
    if event not in var.writable:
        raise ValueError(f"variable {name!r} can be set only at events "
                         f"{', '.join(var.writable)} (the rule's event is {event!r})")
    return var
