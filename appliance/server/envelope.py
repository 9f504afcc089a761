"""MAIL FROM and RCPT TO: the envelope of a transaction, with the core's limits
(messages per session, AUTH required, SIZE, recipients and their overshoot) before
the plugins decide (docs/configuration.md, ``[limits]``, ``[auth]``)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from appliance import logs
from appliance.hooks.host import PluginHost
from appliance.hooks.verdict import Action, Verdict
from appliance.mail.context import Recipient, SessionContext, Transaction
from appliance.protocol import Mail, Rcpt, Reply
from appliance.server.errors import ErrorLimits
from appliance.server.replies import AUTH_REQUIRED, TOO_MANY_MESSAGES, TOO_MANY_RCPTS, Closing
from appliance.spool import new_queue_id


class Enveloped(Protocol):
    """What MAIL and RCPT use of their session."""

    listener: Any
    limits: Any
    ctx: SessionContext
    host: PluginHost
    log: logs.SessionLog
    errors: ErrorLimits
    tx: Transaction | None
    proposed: Transaction | None  # a MAIL FROM being decided on
    overshoot: int  # RCPTs over max_recipients, see [limits] recipient_overshoot

    def send(self, reply: Reply) -> None: ...
    def refuse(self, reply: Reply) -> None: ...
    def refused(self, verdict: Verdict | None, counts: bool = True) -> bool: ...


def mail_from(session: Enveloped, ev: Mail) -> None:
    ctx, limits = session.ctx, session.limits
    max_msgs = limits.max_messages_per_session
    if max_msgs and ctx.message_count >= max_msgs:
        session.send(TOO_MANY_MESSAGES)
        raise Closing
    if session.listener.auth.required and not ctx.auth_user:
        session.refuse(AUTH_REQUIRED)
        return
    params = dict(ev.params)
    if "AUTH" in params and not ctx.auth_user:
        params["AUTH"] = "<>"  # RFC 4954 5: not vouched for by an authenticated client
    size = params.get("SIZE")
    if size is not None and size > ctx.max_message_size:
        session.refuse(Reply(552, "5.3.4", "Message size exceeds fixed maximum message size"))
        return
    tx = Transaction(queue_id=new_queue_id(), mail_from=ev.address, mail_params=params)
    session.proposed = tx
    verdict, _ = session.host.decide("mail_from", ctx, tx)
    if session.refused(verdict):
        return
    session.tx = tx
    session.log.event("mail", logging.DEBUG, queue_id=tx.queue_id, mail_from=f"<{ev.address}>")
    session.send(Reply(250, "2.1.0", "Ok"))


def rcpt_to(session: Enveloped, ev: Rcpt) -> None:
    tx = session.tx
    assert tx is not None
    if len(tx.recipients) >= session.ctx.max_recipients:
        session.overshoot += 1
        if session.overshoot <= session.limits.recipient_overshoot:
            session.send(TOO_MANY_RCPTS)  # a client sending the rest later (RFC 5321 4.5.3.1.8)
        else:
            session.refuse(TOO_MANY_RCPTS)
        return
    rcpt = Recipient(ev.address, dict(ev.params))
    tx.begin_recipient(rcpt)
    try:
        verdict, _ = session.host.decide("rcpt_to", session.ctx, tx, recipient=rcpt)
        if session.refused(verdict, counts=False):
            session.errors.bad_recipient()
            return
        tx.accept_recipient(deliver=verdict is None or verdict.action is not Action.DISCARD)
    finally:
        tx.end_recipient()
    session.send(Reply(250, "2.1.5", "Ok"))
