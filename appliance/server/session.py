"""One SMTP session: owns the socket and the timeouts, drives the protocol engine,
dispatches its events and answers plugins' verdicts. One greenlet per session.

The greeting (``greeting.py``), MAIL and RCPT (``envelope.py``), the AUTH exchange
(``auth.py``), DATA/BDAT and queueing (``data.py``), TLS (``tls.py``), the waits
and their timeouts (``waits.py``) and the error limits (``errors.py``) are parts
the session owns or delegates to."""

from __future__ import annotations

import socket
import ssl
import time
from typing import TYPE_CHECKING

from appliance import logs
from appliance.hooks.verdict import Action, Verdict
from appliance.mail.context import SessionContext, Transaction, core_set
from appliance.protocol import (
    NEED_DATA,
    Auth,
    AuthResponse,
    BadCommand,
    Bdat,
    ConnectionClosed,
    Data,
    DataChunk,
    DataEnd,
    Expn,
    Helo,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    SMTPConnection,
    StartTLS,
    Vrfy,
    Xclient,
    Xforward,
)
from appliance.server import envelope, greeting, tls, transcript, xclient
from appliance.server.auth import Authenticator
from appliance.server.data import DataPhase
from appliance.server.errors import ErrorLimits
from appliance.server.replies import (
    BYE,
    NO_STARTTLS,
    SHUTTING_DOWN,
    TIMEOUT,
    TLS_REQUIRED,
    Closing,
    Shutdown,
    refuses,
    reply_of,
)
from appliance.server.waits import READ_SIZE, Waits
from appliance.spool import new_queue_id

if TYPE_CHECKING:
    from appliance.server.proxied import Arrival
    from appliance.server.runtime import ListenerRuntime, Runtime
    from appliance.server.stress import Stress

class Session:
    def __init__(self, runtime: Runtime, lr: ListenerRuntime, sock: socket.socket,
                 arrival: Arrival, stress: Stress) -> None:
        self.runtime = runtime
        self.lr = lr
        self.listener = lr.config
        self.limits = lr.config.limits
        self.sock = sock
        # Replies are small and each one is awaited by the client: no Nagle delay.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = runtime.plugins
        # Behind a proxy, the client it relays stands for the session everywhere.
        self.arrival = arrival
        self.ctx = self._context(new_queue_id(), arrival.client, arrival.server)
        talker = arrival.client[0]
        self.xclient_allowed = talker in lr.xclient_hosts
        self.xforward_allowed = talker in lr.xforward_hosts
        self.forwarded: dict[str, str] = {}  # XFORWARD attributes of the next message
        self.conn = SMTPConnection(
            tls_active=False,
            bare_linefeed=self.listener.smtp.bare_linefeed,
            max_text_line=int(self.limits.max_message_line_length) or None,
        )
        self.tx: Transaction | None = None
        self.data = DataPhase(self)
        self.auth = Authenticator(self)
        self.busy = False  # in DATA/BDAT or committing: finish before a shutdown
        self.closing = False
        self._out: list[bytes] = []
        self.stress = stress
        self.waits = Waits(self.limits, stress)
        self.errors = ErrorLimits(self)
        self.log = logs.SessionLog(self.ctx.session_id)
        self._command: object = None  # the event being answered
        self._trace_mark = 0  # the decision trace's length when it came
        self.proposed: Transaction | None = None  # a MAIL FROM being decided on
        self.overshoot = 0  # RCPTs over max_recipients, see [limits] recipient_overshoot

    def _context(self, session_id: str, client: tuple, server: tuple) -> SessionContext:
        return SessionContext(
            session_id=session_id,
            listener=self.lr.name,
            local_ip=server[0],
            local_port=server[1],
            remote_ip=client[0],
            remote_port=client[1],
            hostname=self.runtime.hostname,
            connected_at=time.time(),
            max_message_size=int(self.limits.max_message_size),
            max_recipients=self.limits.max_recipients,
            max_received_headers=self.limits.max_received_headers,
        )

    def restart(self, client: tuple, server: tuple, helo: str, esmtp: bool,
                login: str) -> None:
        """XCLIENT: the session ends for the plugins and starts anew for ``client``
        (``xclient.py``); the caller greets again."""
        self.drop_transaction()
        self.host.notify("on_disconnect", session=self.ctx)
        ctx = self._context(self.ctx.session_id, client, server)
        core_set(ctx, "tls", self.ctx.tls)
        core_set(ctx, "helo_name", helo)
        core_set(ctx, "esmtp", esmtp)
        core_set(ctx, "auth_user", login)
        self.ctx = ctx
        self.log.connect(ctx)

    # --- I/O -------------------------------------------------------------------------

    def send(self, reply: Reply) -> None:
        self._out.append(self.conn.send(reply))
        if self.log.transcript:
            self.log.event("response", **transcript.reply(reply))
        if reply.code >= 400:
            self._log_refusal(reply)

    def _log_refusal(self, reply: Reply) -> None:
        """One line per refusal, naming the command and the transaction it refused
        (the one being proposed at MAIL, the recipient being refused at RCPT)."""
        event, tx = self._command, self.proposed or self.tx
        if isinstance(event, Rcpt):
            rcpt_to = [event.address]
        else:
            rcpt_to = [r.address for r in tx.recipients] if tx is not None else []
        reader = self.data.reader
        size = tx.size if tx is not None and tx.size else reader.received if reader else 0
        self.log.reply(reply, self.ctx, tx, _verb(event, self.data.verb), rcpt_to, size,
                       self._decided_by())

    def _decided_by(self) -> str:
        """The plugin whose verdict this command's refusal is: the last entry of the
        decision trace if this command added it and it refused; else "" (the
        server's own refusal: syntax, limits, TLS required ...)."""
        trace = self.ctx.trace
        if len(trace) > self._trace_mark:
            last = trace[-1]
            if last.action in ("reject", "tmpreject", "abort") and last.mode == "enforce":
                return last.plugin
        return ""

    def flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self.sock.sendall(data)

    def _recv(self) -> bytes:
        if self.ctx.stress is not self.stress.active:
            core_set(self.ctx, "stress", self.stress.active)
        self.sock.settimeout(self.waits.start_read(self.busy))
        try:
            while True:
                try:
                    data = self.sock.recv(READ_SIZE)
                    break
                except Shutdown:
                    self.closing = True
                    if not self.busy:
                        raise
                except OSError:
                    if self.waits.cut_short:
                        raise TimeoutError from None
                    raise
        finally:
            self.waits.reading = False
        if self.waits.cut_short:
            raise TimeoutError
        return data

    def begin_data(self) -> None:
        """DATA or the first BDAT of a message: ``message_timeout`` starts."""
        self.busy = True
        self.waits.begin_data()

    def overdue(self, now: float) -> bool:
        """Waiting in a read for longer than stress allows (for the stress watcher)."""
        return self.waits.overdue(now, self.busy)

    def cut(self) -> None:
        """End the current wait as a timeout (the stress watcher)."""
        self.waits.cut(self.sock)

    # --- lifecycle ---------------------------------------------------------------------

    def run(self) -> None:
        self.log.connect(self.ctx)
        if self.arrival.header is not None:
            self.log.proxied(self.arrival)
        try:
            if self.listener.tls_mode == "implicit" and not self._handshake():
                return
            greeting.greet(self)
            self._loop()
        except Closing:
            self._flush_quietly()
            tls.goodbye(self.sock)
        except TimeoutError:
            self.log.event("timeout", limit=self.waits.limit,
                           state=str(self.conn.state))
            self._last_words(TIMEOUT)
        except Shutdown:
            self._last_words(SHUTTING_DOWN)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            self.log.event("lost", error=f"{type(exc).__name__}: {exc}")
        finally:
            self.drop_transaction()
            self.host.notify("on_disconnect", session=self.ctx)
            self.log.disconnect(self.ctx)
            try:
                self.sock.close()
            except OSError:
                pass

    def _last_words(self, reply: Reply) -> None:
        self.send(reply)
        self._flush_quietly()

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except (OSError, ValueError):
            pass

    def _loop(self) -> None:
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                self.flush()
                if self.closing and not self.busy:
                    raise Shutdown
                self.conn.receive_data(self._recv())
                continue
            self.waits.next_command()
            self._command, self.proposed = event, None
            self._trace_mark = len(self.ctx.trace)
            if self.log.transcript and (line := transcript.command(event)) is not None:
                self.log.event("command", line=line)
            if not self._waits_for_tls(event):
                _HANDLERS[type(event)](self, event)
            if self.conn.closed:  # we answered 421 (or 221): nothing more to read
                self.flush()
                raise Closing

    def _waits_for_tls(self, event: object) -> bool:
        """``[tls] required``: a command that needs TLS, before STARTTLS, gets
        ``530 5.7.0`` (as Postfix's smtpd_tls_security_level = encrypt). True if refused."""
        if (self.ctx.tls is None and self.listener.tls.required
                and isinstance(event, _NEEDS_TLS)):
            self.refuse(TLS_REQUIRED)  # an error, counted like any refusal
            return True
        return False

    def _handshake(self) -> bool:
        """TLS handshake (implicit TLS, or after STARTTLS). False: give up quietly."""
        self.sock.settimeout(float(self.listener.tls.handshake_timeout))
        try:
            sock = tls.handshake(self.sock, self.lr.ssl_context)
        except (ssl.SSLError, OSError, ValueError) as exc:
            self.log.event("tls_failed", client=self.ctx.remote_ip,
                           error=f"{type(exc).__name__}: {exc}")
            return False
        self.sock = sock
        info = tls.describe(sock)
        core_set(self.ctx, "tls", info)
        self.log.event("tls", protocol=info.protocol, cipher=info.cipher)
        return True

    # --- commands ----------------------------------------------------------------------

    def on_helo(self, ev: Helo) -> None:
        verdict, _ = self.host.decide("ehlo", self.ctx, hostname=ev.hostname,
                                      extended=ev.extended)
        if self.refused(verdict):
            return
        self.drop_transaction()
        core_set(self.ctx, "helo_name", ev.hostname)
        core_set(self.ctx, "esmtp", ev.extended)
        greeting = f"{self.ctx.hostname} Hello {ev.hostname} [{self.ctx.remote_ip}]"
        if not ev.extended:
            self.send(Reply(250, None, greeting))
            return
        lines = [greeting, "PIPELINING", f"SIZE {self.ctx.max_message_size}", "8BITMIME",
                 "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"]
        if self._starttls_offered():
            lines.append("STARTTLS")
        offered = self.auth.offered()
        if offered:
            lines.append("AUTH " + " ".join(offered))
        if self.listener.smtp.vrfy:
            lines.append("VRFY")
        lines += xclient.advertised(self)
        self.send(Reply(250, None, lines))

    def on_mail(self, ev: Mail) -> None:
        envelope.mail_from(self, ev)

    def on_rcpt(self, ev: Rcpt) -> None:
        envelope.rcpt_to(self, ev)

    def on_data(self, ev: Data) -> None:
        self.data.on_data(ev)

    def on_bdat(self, ev: Bdat) -> None:
        self.data.on_bdat(ev)

    def on_chunk(self, ev: DataChunk) -> None:
        self.data.on_chunk(ev)

    def on_data_end(self, ev: DataEnd) -> None:
        self.data.on_end(ev)

    def drop_transaction(self) -> None:
        """The transaction is over (answered, RSET, new EHLO, STARTTLS, closed)."""
        self.data.reset()
        self.tx = None
        self.busy = False
        self.waits.end_data()
        self.forwarded.clear()

    def on_rset(self, ev: Rset) -> None:
        self.drop_transaction()
        self.send(Reply(250, "2.0.0", "Ok"))

    def on_noop(self, ev: Noop) -> None:
        self.send(Reply(250, "2.0.0", "Ok"))

    def on_quit(self, ev: Quit) -> None:
        self.send(BYE)
        self.flush()
        raise Closing

    def on_help(self, ev: Help) -> None:
        self.send(Reply(214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT"
                                      " HELP VRFY EXPN STARTTLS AUTH"))

    def on_vrfy(self, ev: Vrfy) -> None:
        if self.listener.smtp.vrfy and self._lookup_answered("vrfy", address=ev.argument):
            return
        self.send(Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt"
                                      " delivery"))

    def on_expn(self, ev: Expn) -> None:
        if self.listener.smtp.expn and self._lookup_answered("expn", name=ev.argument):
            return
        self.refuse(Reply(502, "5.5.1", "EXPN not available"))

    def _lookup_answered(self, event: str, **kwargs: str) -> bool:
        """VRFY/EXPN when on: a plugin's accept(text) is a 250, a refusal its reply."""
        verdict, _ = self.host.decide(event, self.ctx, **kwargs)
        if verdict is not None and verdict.action is Action.ACCEPT and verdict.text:
            self.send(Reply(250, "2.1.5", verdict.text.split("\n")))
            return True
        return self.refused(verdict)

    def _starttls_offered(self) -> bool:
        """The listener has STARTTLS, not yet used, and no rule took it away."""
        return (self.listener.tls_mode == "starttls" and self.ctx.tls is None
                and self.ctx.starttls_allowed)

    def on_starttls(self, ev: StartTLS) -> None:
        if not self._starttls_offered():
            self.refuse(NO_STARTTLS)
            return
        self.send(Reply(220, "2.0.0", "Ready to start TLS"))
        self.flush()
        if not self._handshake():
            raise Closing
        discarded = self.conn.start_tls()
        if discarded:
            self.log.event("starttls_injection", discarded_bytes=discarded)
        self.drop_transaction()
        core_set(self.ctx, "helo_name", "")
        core_set(self.ctx, "esmtp", False)
        core_set(self.ctx, "auth_user", "")
        core_set(self.ctx, "auth_mechanism", "")

    def on_auth(self, ev: Auth) -> None:
        self.auth.start(ev)

    def on_auth_response(self, ev: AuthResponse) -> None:
        self.auth.respond(ev)

    def on_xclient(self, ev: Xclient) -> None:
        xclient.on_xclient(self, ev)

    def on_xforward(self, ev: Xforward) -> None:
        xclient.on_xforward(self, ev)

    def on_bad(self, ev: BadCommand) -> None:
        if ev.verb == "AUTH":
            self.auth.abandon()
        self.send(ev.reply)
        self.errors.error()

    def on_closed(self, ev: ConnectionClosed) -> None:
        if self.busy:
            self.log.event("lost_in_data", queue_id=self.tx.queue_id if self.tx else "")
        raise Closing

    # --- verdicts --------------------------------------------------------------------

    def refused(self, verdict: Verdict | None, counts: bool = True) -> bool:
        """Answer a refusing verdict; True if the command was refused. It counts as
        an error (``max_bad_commands``) unless ``counts`` is False (a refused
        recipient, counted as such)."""
        if verdict is None or not refuses(verdict):
            return False
        self.answer(verdict)
        if counts:
            self.errors.error()
        return True

    def refuse(self, reply: Reply) -> None:
        """Refuse a command with the server's own reply: an error too."""
        self.send(reply)
        self.errors.error()

    def answer(self, verdict: Verdict) -> None:
        if not verdict.reply:
            raise Closing  # Verdict.close(): drop the connection, say nothing
        self.send(reply_of(verdict))
        if verdict.action is Action.ABORT:
            self.flush()
            raise Closing


#: With ``[tls] required``, refused before TLS; EHLO/HELO, STARTTLS, NOOP, RSET and
#: QUIT are served, BDAT (like RCPT and DATA) cannot come before MAIL anyway.
#: docs/configuration.md, ``[tls]``.
_NEEDS_TLS = (Mail, Rcpt, Data, Auth, Vrfy, Expn, Help)


def _verb(event: object, data_verb: str) -> str:
    """The command an event stands for, as the client wrote it."""
    if isinstance(event, Helo):
        return "EHLO" if event.extended else "HELO"
    if isinstance(event, BadCommand):
        return event.verb or "?"
    if isinstance(event, DataChunk | DataEnd):
        return data_verb
    if isinstance(event, AuthResponse):
        return "AUTH"
    return type(event).__name__.upper() if event is not None else "CONNECT"


_HANDLERS = {
    Helo: Session.on_helo,
    Mail: Session.on_mail,
    Rcpt: Session.on_rcpt,
    Data: Session.on_data,
    Bdat: Session.on_bdat,
    DataChunk: Session.on_chunk,
    DataEnd: Session.on_data_end,
    Rset: Session.on_rset,
    Noop: Session.on_noop,
    Quit: Session.on_quit,
    Help: Session.on_help,
    Vrfy: Session.on_vrfy,
    Expn: Session.on_expn,
    StartTLS: Session.on_starttls,
    Auth: Session.on_auth,
    AuthResponse: Session.on_auth_response,
    Xclient: Session.on_xclient,
    Xforward: Session.on_xforward,
    BadCommand: Session.on_bad,
    ConnectionClosed: Session.on_closed,
}
