"""The milters of one SMTP session, in configured order: each event is sent to each
milter in turn, as Postfix does, and the first refusal decides. End-of-message
modifications of one milter are applied before the next one sees the message.

A milter that fails (down, timed out, closed, broke the protocol) is not asked
again in this session; its ``default_action`` answers for it: ``tempfail``
(4xx), ``reject`` (5xx) or ``accept`` (carry on as if it were not configured).
A failure at connect or HELO answers at MAIL FROM and every later command of a
transaction, as Postfix does: the client is greeted and its EHLO accepted, so it
sees the reason in a transaction, and the other milters and rules still decide.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from typing import Any

from attrs import define, frozen

from appliance.clients.milter import codec
from appliance.clients.milter.apply import apply_modifications, header_value_out
from appliance.clients.milter.client import MilterClient, MilterFailure, MilterSpec
from appliance.clients.milter.codec import Decision
from appliance.clients.milter.macros import DEFAULT_MACROS, macro_values
from appliance.hooks.verdict import Action, Verdict

log = logging.getLogger("appliance.clients.milter")

_ORDER = {"connect": 0, "helo": 1, "mail": 2, "rcpt": 3, "data": 4, "message": 5}
_SESSION_STAGES = ("connect", "helo")

TEMPFAIL_TEXT = "Service unavailable - try again later"
REJECT_TEXT = "Command rejected"


@frozen
class FilterResult:
    """What a rule learns from ``execute``: Axigen's filter result, action and
    explanation variables, and the verdict to return (None: carry on)."""

    verdict: Verdict | None
    milter: str = ""

    @property
    def action(self) -> str:
        return self.verdict.action.value if self.verdict else "continue"

    @property
    def explanation(self) -> str:
        return (self.verdict.text or "") if self.verdict else ""


@define
class _Link:
    spec: MilterSpec
    active: bool
    client: MilterClient | None = None
    failed: bool = False
    accepted: bool = False  # accept at connect/helo: left alone for the session
    connected: bool = False
    helo_sent: bool = False
    message: str | None = None  # queue id of the message in progress at the milter
    data_sent: bool = False
    accepted_message: str | None = None  # accept for this message
    last: tuple | None = None  # the last event sent: never twice


def _args(params: dict[str, Any]) -> list[str]:
    out = []
    for key, value in params.items():
        if value is True:
            out.append(key)
        elif isinstance(value, tuple | list):
            out.append(f"{key}={','.join(map(str, value))}")
        elif value is not None:
            out.append(f"{key}={value}")
    return out


def _stops(d: Decision | None) -> bool:
    return d is not None and d.action not in ("continue", "skip")


class MilterChain:
    """Per session: ``run(stage, …)`` at each event, ``close()`` at the end."""

    def __init__(self, specs: list[MilterSpec], budget: float, spill_dir: str) -> None:
        self.links = [_Link(spec, active=not spec.on_demand) for spec in specs]
        self.budget = budget
        self.spill_dir = spill_dir
        self.discard_all = False
        self.discard: str | None = None  # queue id of a message to discard

    # --- the API for rules (Axigen's addFilter / executeFilters) --------------------

    def names(self) -> list[str]:
        """The configured milters' names, in order."""
        return [link.spec.name for link in self.links]

    def add(self, name: str) -> bool:
        """addFilter: run this configured milter from now on in this session (it
        catches up with the steps it missed). False: no milter of that name."""
        found = False
        for link in self.links:
            if link.spec.name == name:
                link.active = found = True
        return found

    def execute(self, pattern: str, stage: str, session: Any, transaction: Any = None,
                recipient: Any = None, message: Any = None, hostname: str = ""
                ) -> FilterResult:
        """executeFilters: run now, at ``stage`` (connect, helo, mail, rcpt, data,
        message), the milters whose name matches the shell pattern ``pattern``; they
        stay added for the rest of the session."""
        links = [link for link in self.links if fnmatch.fnmatchcase(link.spec.name, pattern)]
        for link in links:
            link.active = True
        verdict, name = self._run(links, stage, session, transaction, recipient, message,
                                  hostname)
        return FilterResult(verdict, name)

    # --- events ------------------------------------------------------------------------

    def run(self, stage: str, session: Any, transaction: Any = None, recipient: Any = None,
            message: Any = None, hostname: str = "") -> Verdict | None:
        verdict, _ = self._run(self.links, stage, session, transaction, recipient, message,
                               hostname)
        return verdict

    def close(self) -> None:
        """End of the session: abort a message in progress, QUIT, close."""
        deadline = time.monotonic() + 1.0
        for link in self.links:
            client = link.client
            if client is None or client.sock is None:
                continue
            if link.message is not None:
                try:
                    client.abort(deadline)
                except MilterFailure:
                    continue
            client.quit()

    def _run(self, links: list[_Link], stage: str, session: Any, tx: Any, rcpt: Any,
             message: Any, hostname: str) -> tuple[Verdict | None, str]:
        deadline = time.monotonic() + self.budget
        message_stage = stage not in _SESSION_STAGES
        if message_stage and (self.discard_all or self.discard == tx.queue_id):
            return (Verdict.discard() if stage == "message" else None), ""
        for link in links:
            if not link.active or link.accepted:
                continue
            if message_stage and link.accepted_message == tx.queue_id:
                continue
            if message_stage:
                # The same message event never goes twice to a milter (a rule ran
                # it, then the plugin's hook comes); the recipient is kept so its id
                # stays unique. HELO may come again (after STARTTLS): it is sent.
                key = (stage, tx.queue_id, id(rcpt))
                if link.last is not None and link.last[0] == key:
                    continue
                link.last = (key, rcpt)
            if link.failed:
                verdict = self._default(link, stage)
            else:
                try:
                    decision = self._drive(link, stage, deadline, session, tx, rcpt,
                                           message, hostname)
                except MilterFailure as exc:
                    log.warning("session %s: milter %s failed at %s: %s; default action %s",
                                session.session_id, link.spec.name, stage, exc,
                                link.spec.default_action)
                    link.failed = True
                    if link.client is not None:
                        link.client.close()
                    verdict = self._default(link, stage)
                else:
                    verdict = self._verdict(link, stage, decision, session, tx)
            if verdict is not None:
                return verdict, link.spec.name
        if stage == "message" and self.discard == tx.queue_id:
            return Verdict.discard(), ""
        return None, ""

    # --- one milter, one event ---------------------------------------------------------

    def _macros(self, link: _Link, stage: str, session: Any, tx: Any = None,
                rcpt: Any = None) -> dict[str, str]:
        neg = link.client.neg
        names = (neg.macros.get(stage) if neg and stage in neg.macros
                 else link.spec.macros.get(stage, DEFAULT_MACROS[stage]))
        return macro_values(names, session, tx, rcpt, link.spec.macro_values)

    def _drive(self, link: _Link, stage: str, deadline: float, session: Any, tx: Any,
               rcpt: Any, message: Any, hostname: str) -> Decision | None:
        """Send ``stage`` to the milter, first catching up with the steps it has not
        seen (a milter added by a rule mid-session). A refusal while catching up
        answers for this event."""
        if link.client is None:
            link.client = MilterClient(link.spec)
            link.client.open(deadline)
        c = link.client
        neg = c.neg
        if not link.connected:
            link.connected = True
            d = None
            if neg.sends(codec.P_NOCONNECT):
                # the client's name, or its address in brackets as Sendmail sends it
                name = session.reverse_name or f"[{session.remote_ip}]"
                d = c.step("connect", codec.encode_connect(name, session.remote_ip,
                                                           session.remote_port),
                           codec.P_NR_CONN, self._macros(link, "connect", session), deadline)
            if stage == "connect" or _stops(d):
                return d
        if stage == "helo" or (not link.helo_sent and session.helo_name):
            link.helo_sent = True
            d = None
            if neg.sends(codec.P_NOHELO):
                d = c.step("helo", codec.encode_helo(hostname or session.helo_name),
                           codec.P_NR_HELO, self._macros(link, "helo", session), deadline)
            if stage == "helo" or _stops(d):
                return d
        if stage in _SESSION_STAGES:
            return None
        if link.message != tx.queue_id:
            if link.message is not None:
                c.abort(deadline)
            link.message, link.data_sent = tx.queue_id, False
            d = None
            if neg.sends(codec.P_NOMAIL):
                d = c.step("mail", codec.encode_mail(tx.mail_from, _args(tx.mail_params)),
                           codec.P_NR_MAIL, self._macros(link, "mail", session, tx), deadline)
            if stage == "mail" or _stops(d):
                return d
            if _ORDER[stage] >= _ORDER["rcpt"]:  # joined late: the recipients so far
                for r in tx.recipients:
                    d = self._rcpt(link, session, tx, r, deadline)
                    if d is not None and d.action in ("accept", "discard"):
                        return d
        if stage == "mail":
            return None
        if stage == "rcpt":
            return self._rcpt(link, session, tx, rcpt, deadline)
        if not link.data_sent:
            link.data_sent = True
            d = None
            if neg.sends(codec.P_NODATA):
                d = c.step("data", codec.encode_simple(codec.DATA), codec.P_NR_DATA,
                           self._macros(link, "data", session, tx), deadline)
            if stage == "data" or _stops(d):
                return d
        if stage == "data":
            return None
        return self._message(link, session, tx, message, deadline)

    def _rcpt(self, link: _Link, session: Any, tx: Any, rcpt: Any, deadline: float
              ) -> Decision | None:
        if not link.client.neg.sends(codec.P_NORCPT):
            return None
        return link.client.step("rcpt", codec.encode_rcpt(rcpt.address, _args(rcpt.params)),
                                codec.P_NR_RCPT,
                                self._macros(link, "rcpt", session, tx, rcpt), deadline)

    def _message(self, link: _Link, session: Any, tx: Any, message: Any, deadline: float
                 ) -> Decision | None:
        c = link.client
        neg = c.neg
        if neg.sends(codec.P_NOHDRS):
            for name, value in message.headers:
                d = c.step("header", codec.encode_header(name, header_value_out(value)),
                           codec.P_NR_HDR, {}, deadline)
                if _stops(d):
                    return d
        if neg.sends(codec.P_NOEOH):
            d = c.step("eoh", codec.encode_simple(codec.EOH), codec.P_NR_EOH,
                       self._macros(link, "eoh", session, tx), deadline)
            if _stops(d):
                return d
        if neg.sends(codec.P_NOBODY):
            with message.open_body() as body:
                d = c.send_body(body, deadline)
            if _stops(d):
                return d
        decision, mods = c.end_of_message(self._macros(link, "eom", session, tx), deadline)
        link.message = None  # the milter is done with it: no ABORT needed
        if decision.action in ("continue", "accept") and mods:
            allowed = [m for m in mods if neg.may(codec.required_action(m))]
            for m in mods:
                if m not in allowed:
                    log.warning("session %s: milter %s: %s not negotiated, ignored",
                                session.session_id, link.spec.name, m.kind)
            notes = apply_modifications(allowed, tx, message, self.spill_dir,
                                        f"session {session.session_id}: milter {link.spec.name}")
            if notes:
                log.info("session %s: milter %s: %s", session.session_id, link.spec.name,
                         "; ".join(notes))
        return decision

    # --- decisions ---------------------------------------------------------------------

    def _verdict(self, link: _Link, stage: str, d: Decision | None, session: Any, tx: Any
                 ) -> Verdict | None:
        if d is None or d.action in ("continue", "skip"):
            return None
        if d.action == "accept":
            if stage in _SESSION_STAGES:
                link.accepted = True
            else:
                link.accepted_message = tx.queue_id
            return None
        log.info("session %s: milter %s at %s: %s %s %s %s", session.session_id,
                 link.spec.name, stage, d.action, d.code or "", d.enhanced or "", d.text or "")
        if d.action == "discard":
            if stage in _SESSION_STAGES:
                self.discard_all = True
                return None
            self.discard = tx.queue_id
            return Verdict.discard() if stage == "message" else None
        if d.action == "reject":
            return Verdict.reject(d.text or REJECT_TEXT, d.code or 550, d.enhanced or "5.7.1")
        if d.code == 421:  # the milter's way to end the session, as Postfix honours it
            return Verdict(Action.ABORT, 421, d.enhanced or "4.7.0", d.text or TEMPFAIL_TEXT)
        return Verdict.tmpreject(d.text or TEMPFAIL_TEXT, d.code or 451, d.enhanced or "4.7.1")

    def _default(self, link: _Link, stage: str) -> Verdict | None:
        action = link.spec.default_action
        if action == "accept" or stage in _SESSION_STAGES:
            return None
        if action == "reject":
            return Verdict.reject(REJECT_TEXT, 550, "5.7.1")
        return Verdict.tmpreject(TEMPFAIL_TEXT, 451, "4.7.1")
