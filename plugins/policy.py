"""Postfix policy delegation (``check_policy_service``): the built-in ``policy`` plugin.

Owns ``[policy]``: a list of policy servers (postgrey, policyd-spf, postfwd...),
each asked at the SMTP stages it lists with the attributes Postfix sends, its
``action=`` mapped to a verdict as Postfix maps it. A server that is down, hangs
or answers garbage gets its ``default_action`` within its ``timeout``; the
session goes on. Servers are asked in the order listed; the first final answer
(OK, REJECT, DEFER...) decides, DUNNO and non-final ones (PREPEND, HOLD, WARN...)
ask the next.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Annotated, Any, Literal

from attrs import define, field, frozen

from appliance import (
    Action,
    Check,
    Duration,
    PerListener,
    PluginConfig,
    Verdict,
    hookimpl,
    per_listener,
)
from appliance.clients import (
    FilterResult,
    PolicyAction,
    PolicyClient,
    PolicyUnavailable,
    is_socket,
    parse_action,
    parse_header,
    split_enhanced,
)

log = logging.getLogger("smtp_appliance.policy")

Stage = Literal["connect", "ehlo", "mail", "rcpt", "data", "end_of_data"]
#: When a server is down, hangs or answers garbage (Postfix's
#: smtpd_policy_service_default_action): 451 4.3.0, no opinion, or 550 5.3.0.
DefaultAction = Literal["tmpreject", "continue", "reject"]



_ADDRESS = Check(is_socket, '"inet:host:port", "inet:[::1]:port" or "unix:/path"')
_POSITIVE = Check(lambda value: value > 0, "a duration longer than 0s")
_NAME = Check(lambda value: bool(value.strip()), "a name that is not empty")


@frozen(kw_only=True)
class PolicyServer:
    """One ``[[policy.servers]]`` entry."""

    name: Annotated[str, _NAME]
    address: Annotated[str, _ADDRESS]
    stages: list[Stage] = field(factory=lambda: ["rcpt"])
    timeout: Annotated[Duration, _POSITIVE] = Duration("10s")
    default_action: DefaultAction = "tmpreject"
    max_idle: Annotated[Duration, _POSITIVE] = Duration("300s")
    max_ttl: Annotated[Duration, _POSITIVE] = Duration("1000s")
    policy_context: str = ""
    #: Asked only in sessions where a rule added it (add_filter, execute_filters).
    on_demand: bool = False


@frozen(kw_only=True)
class PolicyArea:
    """``[policy]`` and ``[listeners.NAME.policy]``."""

    servers: list[PolicyServer] = field(factory=list)


#: Postfix's protocol_state per stage (EHLO/HELO is chosen at the command).
STATES = {"connect": "CONNECT", "mail": "MAIL", "rcpt": "RCPT", "data": "DATA",
          "end_of_data": "END-OF-MESSAGE"}

UNAVAILABLE = {
    "tmpreject": Verdict.tmpreject("Policy server unavailable, try again later", 451, "4.3.0"),
    "reject": Verdict.reject("Policy server unavailable", 550, "5.3.0"),
    "continue": None,
}


@define
class Pending:
    """What non-final actions asked for, applied when the message is there."""

    headers: list[tuple[str, str]] = field(factory=list)  # PREPEND, in arrival order
    hold: str | None = None
    discard: str | None = None
    redirect: str | None = None
    bcc: list[str] = field(factory=list)


@define
class SessionState:
    """Per session, in ``session.stash["policy"]``."""

    transactions: int = 0
    queue_id: str = ""  # the transaction ``message`` is about
    connection: Pending = field(factory=Pending)  # connect/EHLO answers: every message
    message: Pending = field(factory=Pending)  # answers about the current message
    #: On-demand servers rules added to this session.
    added: set[str] = field(factory=set)
    #: (server, stage, queue id, recipient) a rule asked already: not asked again.
    asked: set[tuple[str, str, str, str]] = field(factory=set)

    def pending(self, transaction: Any) -> Pending:
        """Where answers about ``transaction`` go; a new transaction starts afresh."""
        if transaction is None:
            return self.connection
        if transaction.queue_id != self.queue_id:
            self.queue_id = transaction.queue_id
            self.transactions += 1
            self.message = Pending()
        return self.message


def _client_key(server: PolicyServer) -> tuple:
    return (server.address, server.timeout, server.max_idle, server.max_ttl)


class PolicyPlugin:
    """Built-in plugin ``policy``: asks Postfix policy servers."""

    area = "policy"
    Area = PolicyArea

    @frozen(kw_only=True)
    class Config(PluginConfig):
        # After relay (150): like check_policy_service after reject_unauth_destination,
        # a server's OK must not let a relay attempt through.
        priority: int = 200

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.monitor = config.mode == "monitor"
        self.servers: PerListener[list[PolicyServer]] = PerListener([])
        self.clients: dict[tuple, PolicyClient] = {}

    @hookimpl
    def on_configure(self, config: Any) -> None:
        self.servers = per_listener(config, "policy", PolicyArea, lambda area: list(area.servers))
        for servers in [self.servers.fallback, *self.servers.listeners.values()]:
            for server in servers:
                if _client_key(server) not in self.clients:
                    self.clients[_client_key(server)] = PolicyClient(
                        server.address, float(server.timeout), float(server.max_idle),
                        float(server.max_ttl))

    # --- hooks ---------------------------------------------------------------------

    @hookimpl
    def on_connect(self, session: Any) -> Verdict | None:
        if self.servers.of(session):
            session.stash[RULES_KEY] = RuleFilters(self, session)
        return self._ask("connect", session)

    @hookimpl
    def on_ehlo(self, session: Any, hostname: str, extended: bool) -> Verdict | None:
        return self._ask("ehlo", session, helo=hostname, extended=extended)

    @hookimpl
    def on_mail_from(self, session: Any, transaction: Any) -> Verdict | None:
        return self._ask("mail", session, transaction, size=transaction.mail_from_size)

    @hookimpl
    def on_rcpt_to(self, session: Any, transaction: Any, recipient: Any) -> Verdict | None:
        return self._ask("rcpt", session, transaction, recipient=recipient.address,
                         size=transaction.mail_from_size)

    @hookimpl
    def on_data_start(self, session: Any, transaction: Any) -> Verdict | None:
        return self._ask("data", session, transaction, size=transaction.mail_from_size)

    @hookimpl
    def on_headers_received(self, session: Any, transaction: Any, headers: Any) -> None:
        if "policy" not in session.stash:
            return  # no server was asked in this session: nothing to apply
        state = self._state(session)
        pending = state.pending(transaction)
        for name, value in reversed(state.connection.headers + pending.headers):
            headers.add(name, value, prepend=True)

    @hookimpl
    def on_message(self, session: Any, transaction: Any, message: Any) -> Verdict | None:
        if "policy" not in session.stash and not self._servers(session, "end_of_data"):
            return None
        state = self._state(session)
        pending = state.pending(transaction)
        done = len(pending.headers)
        verdict = self._ask("end_of_data", session, transaction, size=message.size)
        for name, value in reversed(pending.headers[done:]):
            message.headers.add(name, value, prepend=True)
        if verdict is not None and verdict.action is not Action.ACCEPT:
            return verdict
        for each in (state.connection, pending):
            if each.discard is not None:
                return Verdict.discard(each.discard)
        for each in (state.connection, pending):
            if each.redirect is not None:  # Postfix: every recipient replaced by this one
                for rcpt in list(transaction.recipients):
                    transaction.remove_recipient(rcpt.address)
                transaction.add_recipient(each.redirect)
            for address in each.bcc:
                transaction.add_recipient(address)
            if each.hold is not None:
                transaction.quarantine(each.hold)
        return verdict

    # --- asking ----------------------------------------------------------------------

    def _servers(self, session: Any, stage: str) -> list[PolicyServer]:
        state = session.stash.get("policy")
        added = state.added if state is not None else ()
        return [s for s in self.servers.of(session)
                if stage in s.stages and (not s.on_demand or s.name in added)]

    def _state(self, session: Any) -> SessionState:
        state = session.stash.get("policy")
        if state is None:
            state = session.stash["policy"] = SessionState()
        return state

    def _ask(self, stage: str, session: Any, transaction: Any = None, *, helo: str | None = None,
             extended: bool = False, recipient: str | None = None,
             size: int | None = None) -> Verdict | None:
        servers = self._servers(session, stage)
        if not servers:
            return None
        state = self._state(session)
        pending = state.pending(transaction)
        attributes = request_attributes(
            stage, session, transaction, instance=f"{session.session_id}.{state.transactions}",
            helo=helo, extended=extended, recipient=recipient, size=size)
        for server in servers:
            if _asked_key(server, stage, transaction, recipient) in state.asked:
                continue  # a rule asked it at this very command
            attributes["policy_context"] = server.policy_context
            verdict = self._ask_one(server, stage, session, attributes, pending)
            if verdict is not None:
                return verdict
        return None

    def _ask_one(self, server: PolicyServer, stage: str, session: Any,
                 attributes: dict[str, object], pending: Pending) -> Verdict | None:
        try:
            reply = self.clients[_client_key(server)].ask(attributes)
        except PolicyUnavailable as exc:
            log.warning("policy_server_unavailable", extra={"fields": {
                "session": session.session_id, "server": server.name, "stage": stage,
                "error": str(exc), "default_action": server.default_action}})
            return UNAVAILABLE[server.default_action]
        action = parse_action(reply["action"])
        verdict, effect = to_verdict(action, stage)
        if effect == "unknown":
            log.warning("policy_bad_action", extra={"fields": {
                "session": session.session_id, "server": server.name, "stage": stage,
                "action": reply["action"][:200], "default_action": server.default_action}})
            return UNAVAILABLE[server.default_action]
        if effect:
            self._note(effect, action, server, session, stage, pending)
        if self.monitor and verdict is not None and verdict.action is Action.ACCEPT:
            return None  # monitor: an OK must not skip the plugins after this one
        return verdict

    def _note(self, effect: str, action: PolicyAction, server: PolicyServer, session: Any,
              stage: str, pending: Pending) -> None:
        """A non-final action: log it, and remember what it asks for the message."""
        log.info(f"policy_{effect}", extra={"fields": {
            "session": session.session_id, "server": server.name, "stage": stage,
            "text": action.text, **({"mode": "monitor"} if self.monitor else {})}})
        if self.monitor or effect in ("warn", "ignored"):
            return
        if effect == "prepend":
            pending.headers.append(parse_header(action.text))
        elif effect == "hold":
            pending.hold = action.text or f"held by policy server {server.name}"
        elif effect == "discard":
            pending.discard = action.text or f"discarded by policy server {server.name}"
        elif effect == "redirect":
            pending.redirect = action.text
        elif effect == "bcc":
            pending.bcc.append(action.text)


RULES_KEY = "filters.policy"
#: A rule's stage (as milters name them) -> the policy stage.
_RULE_STAGES = {"connect": "connect", "helo": "ehlo", "mail": "mail", "rcpt": "rcpt",
                "message": "end_of_data"}


def _asked_key(server: PolicyServer, stage: str, transaction: Any,
               recipient: str | None) -> tuple[str, str, str, str]:
    return (server.name, stage, transaction.queue_id if transaction is not None else "",
            recipient or "")


class RuleFilters:
    """The session's policy servers for rules (Axigen's addFilter and
    executeFilters), in ``session.stash["filters.policy"]`` (docs/plugins.md,
    "Filters from rules"): ``add(name)``, ``execute(pattern, stage, ...)``."""

    def __init__(self, plugin: PolicyPlugin, session: Any) -> None:
        self.plugin, self.session = plugin, session

    def names(self) -> list[str]:
        return [s.name for s in self.plugin.servers.of(self.session)]

    def add(self, name: str) -> bool:
        if name not in self.names():
            return False
        self.plugin._state(self.session).added.add(name)
        return True

    def execute(self, pattern: str, stage: str, session: Any, transaction: Any = None,
                recipient: Any = None, message: Any = None, hostname: str = ""
                ) -> FilterResult:
        """Ask now, at ``stage`` (connect, helo, mail, rcpt, message), the servers
        whose name matches the shell pattern; they stay added for the session, and
        the plugin does not ask them again at this command."""
        policy_stage = _RULE_STAGES[stage]
        servers = [s for s in self.plugin.servers.of(session)
                   if fnmatch.fnmatchcase(s.name, pattern)]
        if not servers:
            return FilterResult(None)
        state = self.plugin._state(session)
        pending = state.pending(transaction)
        address = recipient.address if recipient is not None else None
        size = message.size if message is not None else (
            transaction.mail_from_size if transaction is not None else None)
        attributes = request_attributes(
            policy_stage, session, transaction,
            instance=f"{session.session_id}.{state.transactions}",
            helo=hostname or session.helo_name, extended=session.esmtp or stage == "helo",
            recipient=address, size=size)
        for server in servers:
            state.added.add(server.name)
            state.asked.add(_asked_key(server, policy_stage, transaction, address))
            attributes["policy_context"] = server.policy_context
            verdict = self.plugin._ask_one(server, policy_stage, session, attributes, pending)
            if verdict is not None:
                return FilterResult(verdict, server.name)
        return FilterResult(None)


def to_verdict(action: PolicyAction, stage: str) -> tuple[Verdict | None, str]:
    """(verdict, side effect) for an action as Postfix's smtpd applies it.

    The side effect names what the plugin must remember for the message
    (``prepend``, ``hold``, ``discard``, ``redirect``, ``bcc``) or log (``warn``,
    ``ignored``); ``unknown`` means the server's default action applies.
    """
    kind, text = action.kind, action.text
    if kind == "OK":
        return Verdict.accept(), ""
    if kind == "DUNNO":
        return None, ""
    if kind in ("REJECT", "DEFER", "DEFER_IF_PERMIT"):
        temporary = kind != "REJECT"
        enhanced, rest = split_enhanced(text)
        if enhanced is not None and enhanced[0] != ("4" if temporary else "5"):
            enhanced = None
        if temporary:
            return Verdict.tmpreject(rest or "Try again later", 450, enhanced or "4.7.1"), ""
        return Verdict.reject(rest or "Access denied", 554, enhanced or "5.7.1"), ""
    if kind == "CODE":
        return _coded(action), ""
    if kind == "DEFER_IF_REJECT":
        # Postfix defers only if a later restriction rejects; here later plugins
        # answer on their own, so this is logged and otherwise a DUNNO.
        return None, "warn"
    if kind == "PREPEND":
        return (None, "prepend") if parse_header(text) else (None, "unknown")
    if kind == "DISCARD" and stage == "end_of_data":
        return Verdict.discard(text or None), ""
    if kind in ("HOLD", "DISCARD", "REDIRECT", "BCC"):
        return None, kind.lower()
    if kind in ("WARN", "INFO"):
        return None, "warn"
    if kind == "FILTER":
        return None, "ignored"  # there is no content filter transport to hand it to
    return None, "unknown"


def _coded(action: PolicyAction) -> Verdict:
    code = action.code or 550
    temporary = code < 500
    enhanced = action.enhanced or ("4.7.1" if temporary else "5.7.1")
    text = action.text or ("Try again later" if temporary else "Access denied")
    if code in (421, 521):  # Postfix: reply, then disconnect
        return Verdict(Action.ABORT, code, enhanced, text)
    if temporary:
        return Verdict.tmpreject(text, code, enhanced)
    return Verdict.reject(text, code, enhanced)


def request_attributes(stage: str, session: Any, transaction: Any, *, instance: str,
                       helo: str | None = None, extended: bool = False,
                       recipient: str | None = None, size: int | None = None,
                       ) -> dict[str, object]:
    """The attributes Postfix's smtpd sends (SMTPD_POLICY_README), in its order."""
    tls = session.tls
    if stage == "ehlo":
        state, esmtp, helo_name = ("EHLO" if extended else "HELO"), extended, helo or ""
    else:
        state, esmtp, helo_name = STATES[stage], session.esmtp, session.helo_name
    recipients = transaction.recipients if transaction is not None else []
    late = stage in ("data", "end_of_data")
    if recipient is None and late and len(recipients) == 1:
        recipient = recipients[0].address
    sasl_sender = transaction.mail_from_auth if transaction is not None else None
    reverse = session.reverse_name or "unknown"
    return {
        "request": "smtpd_access_policy",
        "protocol_state": state,
        "protocol_name": "ESMTP" if esmtp else "SMTP",
        "helo_name": helo_name,
        "queue_id": transaction.queue_id if transaction is not None else "",
        "sender": transaction.mail_from if transaction is not None else "",
        "recipient": recipient or "",
        "recipient_count": len(recipients) if late else 0,
        "client_address": session.remote_ip,
        "client_name": reverse,
        "reverse_client_name": reverse,
        "instance": instance,
        "sasl_method": session.auth_mechanism,
        "sasl_username": session.auth_user,
        "sasl_sender": "" if sasl_sender in (None, "<>") else sasl_sender,
        "size": size or 0,
        "ccert_subject": tls.peer_subject if tls else "",
        "ccert_issuer": "",
        "ccert_fingerprint": "",
        "ccert_pubkey_fingerprint": "",
        "encryption_protocol": tls.protocol if tls else "",
        "encryption_cipher": tls.cipher if tls else "",
        "encryption_keysize": tls.bits if tls else 0,
        "etrn_domain": "",
        "stress": "",
        "client_port": session.remote_port,
        "policy_context": "",
        "server_address": session.local_ip,
        "server_port": session.local_port,
    }
