"""A session's error limits (docs/configuration.md: ``[limits] max_bad_commands``,
``[flow.bad_recipients]``): the error that reaches a limit is followed at once by
``421 4.7.0`` and the close, without waiting for another command, as Postfix's
smtpd_hard_error_limit (which counts every 4xx/5xx reply to a command)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from appliance import logs
from appliance.mail.context import SessionContext, core_set
from appliance.protocol import Reply
from appliance.server.replies import TOO_MANY_ERRORS, Closing


class Counted(Protocol):
    """What the error limits use of their session."""

    ctx: SessionContext
    limits: Any
    log: logs.SessionLog

    def send(self, reply: Reply) -> None: ...
    def flush(self) -> None: ...


class ErrorLimits:
    def __init__(self, session: Counted) -> None:
        self.session = session

    def error(self) -> None:
        """One more error: a bad command, or a command refused."""
        session, ctx = self.session, self.session.ctx
        core_set(ctx, "bad_commands", ctx.bad_commands + 1)
        limit = session.limits.max_bad_commands
        if ctx.bad_commands >= limit:
            self._close(TOO_MANY_ERRORS, bad_commands=ctx.bad_commands, limit=limit)

    def bad_recipient(self) -> None:
        """A refused recipient; the limit ``max_bad_recipients`` is set by a plugin
        (the flow plugin's ``[flow.bad_recipients]``)."""
        ctx = self.session.ctx
        core_set(ctx, "bad_recipients", ctx.bad_recipients + 1)
        limit = ctx.max_bad_recipients
        if limit and ctx.bad_recipients >= limit:
            self._close(Reply(421, "4.7.0", f"Too many bad recipients (limit {limit}),"
                                            " closing connection"),
                        bad_recipients=ctx.bad_recipients, limit=limit)

    def _close(self, reply: Reply, **fields: int) -> None:
        session = self.session
        session.log.event("too_many_errors", logging.WARNING, client=session.ctx.remote_ip,
                          **fields)
        session.send(reply)
        session.flush()
        raise Closing
