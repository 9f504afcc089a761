"""Relay and recipients: who may send mail where.

The plugin owns ``[relay]`` (a listener may override keys in
``[listeners.NAME.relay]``). At RCPT TO:

- a recipient of a **local domain** (``local_domains``) is delivered here: with
  ``check_recipients`` it must be known (``recipients_file`` or another plugin's
  ``lookup_recipient``), else ``550 5.1.1``; aliases are expanded and each
  mailbox's folder set, so the spool envelope holds the final recipients. For a
  domain in ``require_auth_for_local`` the client must have authenticated (530).
- any other recipient is **relaying**, allowed as ``allow_relay`` says (see
  docs/configuration.md), else ``554 5.7.1 Relay access denied``.

``require_auth_match`` ties an authenticated user to the MAIL FROM (and, with
``auth_match_headers``, the From:/Sender: fields). VRFY/EXPN, when ``[smtp]``
turns them on, are answered from the same lookup. Too many refused recipients
per session is the ``flow`` plugin's ``[flow.bad_recipients]``, not repeated here.
"""

from __future__ import annotations

import logging
from email.utils import getaddresses
from typing import Annotated, Any, Literal

from attrs import Attribute, define, field, frozen

from appliance import Check, FilePath, PluginConfig, RecipientInfo, Verdict, hookimpl
from appliance.netlist import ENTRY_EXPECTED, ListFileError, NetList, is_entry, parse_texts
from appliance.netlist import read_file as read_networks

from .recipients import (
    DOMAIN_EXPECTED,
    RecipientsFileError,
    RecipientTable,
    domain_of,
    is_domain,
    read_domains,
    read_recipients,
)

log = logging.getLogger("smtp_appliance.relay")

DomainText = Annotated[str, Check(is_domain, DOMAIN_EXPECTED)]
EntryText = Annotated[str, Check(is_entry, ENTRY_EXPECTED)]
MAX_ALIAS_DEPTH = 8
LOOKUP_FAILED = Verdict.tmpreject("Recipient lookup unavailable, try again later", 451, "4.3.0")


def _checked_by(reader: Any) -> Any:
    """A validator that reads the file now, so check-config and a reload report a
    bad line (file and line) instead of the first RCPT finding it."""

    def check(instance: Any, attribute: Attribute, value: str) -> None:
        if value:
            try:
                reader(value)
            except ValueError as exc:
                raise ValueError(str(exc), attribute) from None

    return check


@frozen(kw_only=True)
class RelayArea:
    """``[relay]`` and ``[listeners.NAME.relay]``."""

    local_domains: list[DomainText] = field(factory=list)
    local_domains_file: FilePath = field(default=FilePath(""),
                                         validator=_checked_by(read_domains))
    recipients_file: FilePath = field(default=FilePath(""),
                                      validator=_checked_by(read_recipients))
    check_recipients: bool = True
    allow_relay: Literal["nobody", "local-users", "local-domains", "anyone"] = "local-domains"
    relay_networks: list[EntryText] = field(factory=lambda: ["127.0.0.0/8", "::1/128"])
    relay_networks_file: FilePath = field(default=FilePath(""),
                                          validator=_checked_by(read_networks))
    relay_authenticated: bool = True
    require_auth_for_local: list[DomainText] = field(factory=list)
    require_auth_match: Literal["none", "address", "domain"] = "none"
    auth_match_headers: bool = False


@define
class Policy:
    """One listener's compiled ``[relay]``: domains and networks as sets."""

    area: RelayArea
    local_domains: frozenset[str] = frozenset()
    networks: NetList = field(factory=NetList)
    table: RecipientTable = field(factory=RecipientTable)
    require_auth: frozenset[str] = frozenset()
    broken: str = ""  # a file went bad after validation: 451 until the next reload

    @classmethod
    def compile(cls, area: RelayArea, where: str) -> Policy:
        try:
            domains = {d.lower() for d in area.local_domains}
            if area.local_domains_file:
                domains.update(read_domains(area.local_domains_file))
            networks = parse_texts(area.relay_networks, f"{where}.relay_networks")
            if area.relay_networks_file:
                networks += read_networks(area.relay_networks_file)
            table = read_recipients(area.recipients_file) if area.recipients_file else None
        except (RecipientsFileError, ListFileError, ValueError) as exc:
            log.error("relay_files_unavailable", extra={"fields": {"error": str(exc)}})
            return cls(area, broken=str(exc))
        return cls(area, frozenset(domains), NetList(networks), table or RecipientTable(),
                   frozenset(d.lower() for d in area.require_auth_for_local))


def _record(transaction: Any, address: str, local_domain: bool, local: bool) -> None:
    """What was found about the recipient being accepted, for the plugins after this
    one (rules' ``rcpt_domain_is_local``, ``rcpt_is_local``): the last recipient's."""
    transaction.checks.record("relay", "local" if local_domain else "relay",
                              recipient=address, local_domain=local_domain, local=local)


class LookupUnavailable(Exception):
    """A lookup_recipient plugin raised: answer 451, never guess."""


class RelayPlugin:
    """Built-in plugin ``relay``: local recipients, relay permission, auth match."""

    area = "relay"
    Area = RelayArea

    @frozen(kw_only=True)
    class Config(PluginConfig):
        # After flow (100): its E3 limit ([flow.bad_recipients]) must still close a
        # session whose recipients this plugin keeps refusing.
        priority: int = 150

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.policies: dict[str, Policy] = {}
        self.fallback = Policy(RelayArea())
        self.hooks: Any = None

    @hookimpl
    def on_configure(self, config: Any, hooks: Any) -> None:
        self.hooks = hooks
        compiled: dict[int, Policy] = {}

        def policy(area: RelayArea, where: str) -> Policy:
            if id(area) not in compiled:
                compiled[id(area)] = Policy.compile(area, where)
            return compiled[id(area)]

        global_area = config.areas.get("relay") or RelayArea()
        self.fallback = policy(global_area, "relay")
        self.policies = {
            name: policy(lc.areas.get("relay") or global_area, f"listeners.{name}.relay")
            for name, lc in config.listeners.items()
        }

    def _policy(self, session: Any) -> Policy:
        return self.policies.get(session.listener, self.fallback)

    # --- the built-in recipient source ---------------------------------------------

    @hookimpl
    def lookup_recipient(self, session: Any, address: str) -> RecipientInfo | None:
        return self._policy(session).table.lookup(address)

    def _lookup(self, session: Any, tx: Any, address: str) -> RecipientInfo | None:
        try:
            info, _ = self.hooks.first("lookup_recipient", session=session, transaction=tx,
                                       address=address)
        except Exception as exc:
            log.exception("recipient_lookup_failed", extra={"fields": {
                "session": session.session_id, "address": address}})
            raise LookupUnavailable(str(exc)) from exc
        return info

    def _mailboxes(self, session: Any, tx: Any, info: RecipientInfo,
                   depth: int = 0) -> list[RecipientInfo]:
        """The mailboxes an entry stands for: itself, or its alias members expanded."""
        if not info.is_alias:
            return [info]
        if depth >= MAX_ALIAS_DEPTH:
            log.warning("alias_too_deep", extra={"fields": {"alias": info.address}})
            return []
        out: list[RecipientInfo] = []
        for member in info.members:
            found = self._lookup(session, tx, member)
            if found is None:
                log.warning("alias_member_unknown", extra={"fields": {
                    "alias": info.address, "member": member}})
                continue
            for box in self._mailboxes(session, tx, found, depth + 1):
                if box not in out:
                    out.append(box)
        return out

    def _find(self, session: Any, tx: Any, policy: Policy, address: str) -> RecipientInfo | None:
        """The address's entry, else its domain's catch-all target."""
        info = self._lookup(session, tx, address)
        if info is None:
            target = policy.table.catch_all.get(domain_of(address))
            if target is not None:
                info = self._lookup(session, tx, target)
        return info

    # --- RCPT TO ----------------------------------------------------------------------

    @hookimpl
    def on_rcpt_to(self, session: Any, transaction: Any, recipient: Any) -> Verdict | None:
        policy = self._policy(session)
        if policy.broken:
            return Verdict.tmpreject("Recipient settings unavailable, try again later",
                                     451, "4.3.0")
        address, domain = recipient.address, recipient.domain.lower()
        if not domain and address.lower() == "postmaster":
            return None  # RFC 5321 4.5.1: always accepted, whoever asks
        if domain not in policy.local_domains:
            if self._may_relay(session, policy):
                _record(transaction, address, local_domain=False, local=False)
                return None
            return Verdict.reject(f"<{address}>: Relay access denied", 554, "5.7.1")
        if domain in policy.require_auth and not session.auth_user:
            return Verdict.reject(f"<{address}>: Authentication required for delivery to"
                                  f" {domain}", 530, "5.7.0")
        if not policy.area.check_recipients:
            _record(transaction, address, local_domain=True, local=True)
            return None
        try:
            info = self._find(session, transaction, policy, address)
            boxes = self._mailboxes(session, transaction, info) if info else []
        except LookupUnavailable:
            return LOOKUP_FAILED
        if not boxes:
            return Verdict.reject(f"<{address}>: Recipient address rejected: User unknown",
                                  550, "5.1.1")
        have = {(r.address.lower(), r.folder) for r in transaction.recipients}
        boxes = [b for b in boxes if (b.address.lower(), b.folder) not in have]
        if not boxes:  # all of them are recipients already: deliver once
            transaction.discard_recipient()
            return None
        _record(transaction, address, local_domain=True, local=True)
        first, *rest = boxes
        recipient.address, recipient.folder = first.address, first.folder
        for box in rest:
            transaction.add_recipient(box.address, box.folder)
        return None

    def _may_relay(self, session: Any, policy: Policy) -> bool:
        mode = policy.area.allow_relay
        if mode == "anyone":
            return True
        if mode == "nobody":
            return False
        if session.auth_user and policy.area.relay_authenticated:
            return True
        return mode == "local-domains" and session.remote_ip in policy.networks

    # --- require auth match ----------------------------------------------------

    @hookimpl
    def on_mail_from(self, session: Any, transaction: Any) -> Verdict | None:
        mode = self._policy(session).area.require_auth_match
        user = session.auth_user
        if not user or mode == "none" or _owns(user, transaction.mail_from, mode):
            return None
        return Verdict.reject(f"<{transaction.mail_from}>: Sender address not owned by"
                              f" user {user}", 550, "5.7.1")

    @hookimpl
    def on_headers_received(self, session: Any, headers: Any) -> Verdict | None:
        area = self._policy(session).area
        user = session.auth_user
        if not user or area.require_auth_match == "none" or not area.auth_match_headers:
            return None
        senders = [a for _, a in getaddresses(headers.get_all("From")) if a]
        agents = [a for _, a in getaddresses(headers.get_all("Sender")) if a]
        if area.require_auth_match == "address":
            ok = any(_owns(user, a, "address") for a in senders + agents)
        else:
            ok = bool(senders) and all(_owns(user, a, "domain") for a in senders + agents)
        if ok:
            return None
        return Verdict.reject(f"From:/Sender: header not owned by user {user}", 550, "5.7.1")

    # --- VRFY / EXPN --------------------------------------------------------------

    @hookimpl
    def on_vrfy(self, session: Any, address: str) -> Verdict | None:
        return self._answer(session, address, expand=False)

    @hookimpl
    def on_expn(self, session: Any, name: str) -> Verdict | None:
        return self._answer(session, name, expand=True)

    def _answer(self, session: Any, argument: str, expand: bool) -> Verdict | None:
        policy = self._policy(session)
        if policy.broken or not policy.area.check_recipients:
            return None
        text = argument.strip()
        if "<" in text and text.endswith(">"):
            text = text[text.rindex("<") + 1:-1].strip()
        if "@" in text:
            if domain_of(text) not in policy.local_domains:
                return None  # not ours to say: 252 / 502
            candidates = [text]
        else:
            candidates = [f"{text}@{d}" for d in sorted(policy.local_domains)]
        try:
            found = [i for i in (self._lookup(session, None, c) for c in candidates) if i]
            if len(found) > 1:
                names = ", ".join(f"<{i.address}>" for i in found)
                return Verdict.reject(f"User ambiguous: {names}", 553, "5.1.4")
            if not found:
                if "@" in text and domain_of(text) in policy.table.catch_all:
                    return None  # a catch-all takes it, but say nothing more
                return Verdict.reject(f"<{text}>: User unknown", 550, "5.1.1")
            info = found[0]
            if not expand:
                return Verdict.accept(f"<{info.address}>")
            boxes = self._mailboxes(session, None, info)
        except LookupUnavailable:
            return LOOKUP_FAILED
        if not boxes:
            return Verdict.reject(f"<{text}>: User unknown", 550, "5.1.1")
        return Verdict.accept("\n".join(f"<{b.address}>" for b in boxes))


def _owns(user: str, address: str, mode: str) -> bool:
    """Does the authenticated ``user`` (an address) own ``address``?"""
    if "@" not in user:
        return False
    if mode == "address":
        return address.lower() == user.lower()
    return "@" in address and domain_of(address) == domain_of(user)
