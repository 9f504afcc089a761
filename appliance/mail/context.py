"""Session and transaction contexts: Axigen's policy variables.

Plugins read these and may change the writable ones; later plugins see the change.
Fields the core owns (remote IP, HELO name, auth user, counters, mail from…) are
read-only for plugins: assigning raises ``attrs.exceptions.FrozenAttributeError``.
The core updates them through :func:`core_set`.
"""

from __future__ import annotations

import datetime as dt
import re
from email.utils import parsedate_to_datetime
from typing import Any

from attrs import asdict, define, field, frozen, setters

from appliance.mail.checkresults import Checks
from appliance.mail.headers import Headers

_RO = {"on_setattr": setters.frozen}


def core_set(obj: Any, name: str, value: Any) -> None:
    """Set a read-only field; only the core calls this."""
    object.__setattr__(obj, name, value)


@define(slots=True)
class TLSInfo:
    protocol: str = ""
    cipher: str = ""
    bits: int = 0
    sni: str = ""
    peer_subject: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@define(slots=True)
class TraceEntry:
    """One line of the decision trace: who decided what, at which event."""

    event: str
    plugin: str
    action: str
    code: int | None = None
    enhanced: str | None = None
    text: str | None = None
    mode: str = "enforce"
    #: The rule that decided, for a plugin made of rules (the ``rules`` plugin).
    rule: str = ""

    def as_dict(self) -> dict:
        """The envelope's form; ``rule`` only when a rule decided."""
        entry = asdict(self)
        if not self.rule:
            del entry["rule"]
        return entry

    def __str__(self) -> str:
        who = f"{self.plugin}:{self.rule}" if self.rule else self.plugin
        parts = [self.event, who, self.action]
        if self.code:
            parts.append(f"{self.code} {self.enhanced or ''}".strip())
        if self.text:
            parts.append(repr(self.text))
        if self.mode != "enforce":
            parts.append(f"({self.mode})")
        return " ".join(parts)


@define(slots=True)
class SessionContext:
    """One per connection. Names follow Axigen's policy variables (smtpIp → local_ip, …)."""

    session_id: str = field(**_RO)
    listener: str = field(**_RO)
    local_ip: str = field(**_RO)
    local_port: int = field(**_RO)
    remote_ip: str = field(**_RO)
    remote_port: int = field(**_RO)
    hostname: str = field(default="", **_RO)  # our own name, as in the banner
    tls: TLSInfo | None = field(default=None, **_RO)
    helo_name: str = field(default="", **_RO)
    esmtp: bool = field(default=False, **_RO)
    auth_user: str = field(default="", **_RO)
    auth_mechanism: str = field(default="", **_RO)
    message_count: int = field(default=0, **_RO)  # mailCount: messages accepted
    total_size: int = field(default=0, **_RO)  # totalMailSize
    bad_commands: int = field(default=0, **_RO)
    auth_failures: int = field(default=0, **_RO)
    bad_recipients: int = field(default=0, **_RO)
    connected_at: float = field(default=0.0, **_RO)
    #: The client sent data before the banner while the session held it back
    #: for ``greeting_delay`` (postscreen's "pregreet").
    pregreet: bool = field(default=False, **_RO)
    #: The server is under stress (near ``server.max_sessions``): shorter
    #: timeouts are in force; a plugin may skip costly checks. Kept current.
    stress: bool = field(default=False, **_RO)
    # Limits in force for this session; plugins may change them.
    max_message_size: int = 0
    max_recipients: int = 0
    max_received_headers: int = 0
    #: Refused recipients after which the session ends (``421 4.7.0`` right after
    #: the refusal that reaches it); set by flow's ``[flow.bad_recipients]``. 0 = none.
    max_bad_recipients: int = 0
    #: Seconds to hold the banner back, watching for a client that talks first;
    #: set by a plugin at on_connect (flow's pregreet check). 0 = greet at once.
    greeting_delay: float = 0.0
    #: The AUTH mechanisms this connection may offer, among those ``[auth]`` offers:
    #: None = all of them, empty = no AUTH (Axigen's per-connection authentication
    #: rules). Read when EHLO is answered and when AUTH is given.
    auth_allowed: frozenset[str] | None = None
    #: Offer and accept STARTTLS on this connection (when its listener has it).
    starttls_allowed: bool = True
    #: Free space for plugins, one key per plugin name by convention.
    stash: dict[str, Any] = field(factory=dict)
    #: What the checks found about the client, by check name (dnsbl, geoip...).
    checks: Checks = field(factory=Checks, **_RO)
    trace: list[TraceEntry] = field(factory=list, **_RO)
    #: Results about the connection (iprev) for Authentication-Results:
    #: append ``appliance.mail.authresults.AuthResult``s; reported in every message.
    auth_results: list[Any] = field(factory=list, **_RO)

    @property
    def is_tls(self) -> bool:
        """isSSLConnection"""
        return self.tls is not None

    @property
    def reverse_name(self) -> str | None:
        """The client's name as the ``reverse-dns`` check found it (confirmed, or the
        first PTR name), None when it did not run or found none: the one place the
        core reads that check (Received, milter macros, decision lines)."""
        return self.checks.value("reverse-dns", "name")


@define(slots=True)
class Recipient:
    """One envelope recipient; plugins may rewrite it at RCPT time."""

    address: str
    params: dict[str, Any] = field(factory=dict)
    folder: str = "INBOX"  # currentRcptFolder
    relay_host: str = ""  # currentRcptRelayHost
    overquota: bool = False  # isOverquota: the local mailbox is over its quota (read-only)
    overquota_action: str = "reject"  # overquotaAction: "reject" (552 5.2.2) or "accept"

    @property
    def local_part(self) -> str:
        return _split(self.address)[0]

    @property
    def domain(self) -> str:
        return _split(self.address)[1]

    def as_dict(self) -> dict:
        return {
            "address": self.address,
            "params": _jsonable(self.params),
            "folder": self.folder,
            "relay_host": self.relay_host,
        }


@frozen
class RecipientInfo:
    """What the ``lookup_recipient`` hook found for an address: a mailbox (its
    canonical address and the folder to deliver to) or, when ``members`` is not
    empty, an alias that expands to those addresses (each looked up in turn)."""

    address: str
    folder: str = "INBOX"
    members: tuple[str, ...] = field(default=(), converter=tuple)

    @property
    def is_alias(self) -> bool:
        return bool(self.members)


def _split(address: str) -> tuple[str, str]:
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (address, "")


def parse_esmtp_params(params: dict[str, Any] | str | None) -> dict[str, Any]:
    """ESMTP parameters as a dict: ``"NOTIFY=NEVER RET=HDRS XVERP"`` gives
    ``{"NOTIFY": "NEVER", "RET": "HDRS", "XVERP": True}`` (keywords upper-cased)."""
    if params is None:
        return {}
    if isinstance(params, dict):
        return dict(params)
    result: dict[str, Any] = {}
    for word in params.split():
        key, eq, value = word.partition("=")
        result[key.upper()] = value if eq else True
    return result


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


_RELATIVE = re.compile(r"\+(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?\Z")


def parse_delay(value: str, now: dt.datetime | None = None) -> dt.datetime:
    """Axigen's delayDelivery: an RFC 2822 date, or ``+[[NNh]NNm]NN[s]``."""
    now = now or dt.datetime.now(dt.UTC)
    m = _RELATIVE.match(value.strip())
    if m and any(m.groups()):
        h, mi, s = (int(g or 0) for g in m.groups())
        return now + dt.timedelta(hours=h, minutes=mi, seconds=s)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        when = None
    if when is None:
        raise ValueError(f"delay_delivery: expected an RFC 2822 date or +NhNmNs (got {value!r})")
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@define(slots=True)
class Transaction:
    """One per MAIL FROM … end of data: the envelope being built."""

    queue_id: str = field(**_RO)
    mail_from: str = field(**_RO)
    mail_params: dict[str, Any] = field(factory=dict, **_RO)
    recipients: list[Recipient] = field(factory=list, **_RO)
    #: Set during on_rcpt_to: the recipient being decided on (writable fields).
    current_rcpt: Recipient | None = field(default=None, **_RO)
    headers: Headers | None = field(default=None, **_RO)
    size: int = field(default=0, **_RO)
    received_at: dt.datetime | None = field(default=None, **_RO)
    delay_until: dt.datetime | None = field(default=None, **_RO)
    #: Why the message is held in quarantine (a milter or a rule said so), or None.
    quarantine_reason: str | None = field(default=None, **_RO)
    #: What the checks found about this message, by check name (spf, dkim...).
    checks: Checks = field(factory=Checks, **_RO)
    trace: list[TraceEntry] = field(factory=list, **_RO)
    #: Results about this message (spf, dkim, dmarc) for Authentication-Results:
    #: append ``appliance.mail.authresults.AuthResult``s.
    auth_results: list[Any] = field(factory=list, **_RO)
    _extra_rcpts: list[Recipient] = field(factory=list, alias="_extra_rcpts", **_RO)
    _discard_current: bool = field(default=False, alias="_discard_current", **_RO)

    @property
    def mail_from_local_part(self) -> str:
        return _split(self.mail_from)[0]

    @property
    def mail_from_domain(self) -> str:
        return _split(self.mail_from)[1]

    @property
    def mail_from_size(self) -> int | None:
        return self.mail_params.get("SIZE")

    @property
    def mail_from_auth(self) -> str | None:
        return self.mail_params.get("AUTH")

    @property
    def rcpt_count(self) -> int:
        return len(self.recipients)

    # --- recipient operations (Axigen's addRcpt, discardRcpt) ---------------------

    def add_recipient(self, address: str, folder: str = "INBOX", relay_host: str = "",
                      params: dict[str, Any] | str | None = None) -> Recipient:
        """addRcpt: add a recipient besides the ones the client gave, with optional
        ESMTP parameters (a dict, or ``"NOTIFY=NEVER ORCPT=rfc822;a@b"``). During
        ``on_rcpt_to`` it joins after the current one; at any other time (end of
        data: a milter's add recipient) it joins the envelope at once."""
        rcpt = Recipient(address, parse_esmtp_params(params), folder, relay_host)
        if self.current_rcpt is not None:
            self._extra_rcpts.append(rcpt)
        else:
            self.recipients.append(rcpt)
        return rcpt

    def discard_recipient(self) -> None:
        """discardRcpt: answer 250 to the current RCPT but do not deliver to it."""
        core_set(self, "_discard_current", True)

    def begin_recipient(self, rcpt: Recipient) -> None:
        """RCPT TO (the core): ``rcpt`` is being decided on; it is ``current_rcpt``,
        which ``add_recipient`` and ``discard_recipient`` refer to, until
        :meth:`end_recipient`."""
        core_set(self, "current_rcpt", rcpt)
        core_set(self, "_discard_current", False)

    def accept_recipient(self, deliver: bool = True) -> None:
        """RCPT TO accepted (the core): the current recipient joins the envelope,
        unless ``deliver`` is false (a discarding verdict) or a plugin discarded it,
        followed by the recipients plugins added meanwhile."""
        if deliver and not self._discard_current:
            self.recipients.append(self.current_rcpt)
        self.recipients.extend(self._extra_rcpts)
        self._extra_rcpts.clear()

    def end_recipient(self) -> None:
        """RCPT TO answered, accepted or not (the core): no recipient is current, and
        what plugins added for a refused one is dropped with it."""
        core_set(self, "current_rcpt", None)
        self._extra_rcpts.clear()

    def remove_recipient(self, address: str) -> bool:
        """Drop an already accepted recipient (end-of-data filters). The exact
        address is looked for first, then the same address in other case."""
        for same in (lambda a: a == address, lambda a: a.lower() == address.lower()):
            for i, r in enumerate(self.recipients):
                if same(r.address):
                    del self.recipients[i]
                    return True
        return False

    # --- envelope operations of content filters (milters, hooks) -------------------

    def change_sender(self, address: str, params: dict[str, Any] | str | None = None) -> None:
        """Replace the envelope sender (a milter's change sender). ``params``
        replaces the MAIL FROM ESMTP parameters (a dict, or ``"BODY=8BITMIME"``);
        ``None`` keeps the client's."""
        core_set(self, "mail_from", address)
        if params is not None:
            core_set(self, "mail_params", parse_esmtp_params(params))

    def quarantine(self, reason: str) -> None:
        """Hold the message in quarantine: it is stored with this reason in its
        envelope (``"quarantine"``; ``smtp-appliance queue list/show`` show it), so
        the stage that reads the spool holds it for an admin instead of passing it on."""
        core_set(self, "quarantine_reason", reason or "quarantined")

    def delay_delivery(self, value: str | dt.datetime) -> None:
        """delayDelivery: keep the message until this time (absolute or +NhNmNs)."""
        when = value if isinstance(value, dt.datetime) else parse_delay(value)
        core_set(self, "delay_until", when)
