"""The greeting (RFC 5321 3.1): the connect verdict, the wait for a client that
talks first (postscreen's "pregreet"), then the banner or a refusal."""

from __future__ import annotations

import socket
from typing import Any, Protocol

from appliance import logs
from appliance.hooks.host import PluginHost
from appliance.hooks.verdict import Action, Verdict
from appliance.mail.context import SessionContext, core_set
from appliance.protocol import Reply, SMTPConnection
from appliance.server import received
from appliance.server.replies import Closing, refuses
from appliance.server.runtime import Runtime
from appliance.server.waits import READ_SIZE


class Greeted(Protocol):
    """What the greeting uses of its session."""

    runtime: Runtime
    listener: Any
    limits: Any
    ctx: SessionContext
    host: PluginHost
    conn: SMTPConnection
    sock: socket.socket
    log: logs.SessionLog

    def send(self, reply: Reply) -> None: ...
    def flush(self) -> None: ...


def greet(session: Greeted) -> None:
    """The banner, unless a plugin refuses the client at connect or, when it set
    ``greeting_delay``, after the client talked first."""
    ctx = session.ctx
    verdict, _ = session.host.decide("connect", ctx)
    if verdict is not None and refuses(verdict):
        _refuse(session, verdict)
        return
    if ctx.greeting_delay > 0 and _talks_first(session):
        core_set(ctx, "pregreet", True)
        session.log.event("pregreet", buffered=session.conn.buffered)
        verdict, _ = session.host.decide("pregreet", ctx)
        if verdict is not None and refuses(verdict):
            _refuse(session, verdict, close=True)
            return
    banner = session.listener.banner or session.runtime.config.server.banner
    session.send(Reply(220, None, received.expand_banner(banner, ctx)))


def _refuse(session: Greeted, verdict: Verdict, close: bool = False) -> None:
    """A refusing verdict instead of the banner: 554 (the client may only QUIT,
    unless ``close``), or 421 and close."""
    if not verdict.reply:
        raise Closing  # Verdict.close(): no banner at all
    code, enhanced, text = verdict.reply_parts()
    hostname = session.ctx.hostname
    if verdict.action is Action.REJECT:
        # RFC 5321 3.1: a 554 greeting; the client may still QUIT.
        session.send(Reply(554, enhanced, f"{hostname} {text}"))
        if not close:
            return
    else:
        session.send(Reply(421, enhanced, f"{hostname} {text}"))
    session.flush()
    raise Closing


def _talks_first(session: Greeted) -> bool:
    """Hold the banner back for ``greeting_delay`` (a plugin set it at connect);
    True if the client sent something meanwhile. What it sent is kept and read as
    commands if the session goes on."""
    delay = min(float(session.ctx.greeting_delay), float(session.limits.command_timeout))
    session.sock.settimeout(delay)
    try:
        data = session.sock.recv(READ_SIZE)
    except TimeoutError:
        return False
    session.conn.receive_data(data)
    return bool(data)
