"""One SMTP session: owns the socket and the timeouts, drives the protocol engine,
dispatches its events and answers plugins' verdicts. One greenlet per session.

The AUTH exchange (``auth.py``), DATA/BDAT and queueing (``data.py``) and TLS
(``tls.py``) are parts the session owns and delegates to."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import time
from typing import TYPE_CHECKING

from appliance import logs
from appliance.hooks.verdict import Action, Verdict
from appliance.mail.context import Recipient, SessionContext, Transaction, core_set
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
)
from appliance.server import received, tls
from appliance.server.auth import Authenticator
from appliance.server.data import DataPhase
from appliance.server.replies import (
    AUTH_REQUIRED,
    BYE,
    NO_STARTTLS,
    SHUTTING_DOWN,
    TIMEOUT,
    TLS_REQUIRED,
    TOO_MANY_ERRORS,
    TOO_MANY_MESSAGES,
    TOO_MANY_RCPTS,
    Closing,
    Shutdown,
    refuses,
    reply_of,
)
from appliance.spool import new_queue_id

if TYPE_CHECKING:
    from appliance.server.runtime import ListenerRuntime, Runtime
    from appliance.server.stress import Stress

READ_SIZE = 65536


class Session:
    def __init__(self, runtime: Runtime, lr: ListenerRuntime, sock: socket.socket,
                 address: tuple, stress: Stress) -> None:
        self.runtime = runtime
        self.lr = lr
        self.listener = lr.config
        self.limits = lr.config.limits
        self.sock = sock
        # Replies are small and each one is awaited by the client: no Nagle delay.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = runtime.plugins
        local = sock.getsockname()
        self.ctx = SessionContext(
            session_id=new_queue_id(),
            listener=lr.name,
            local_ip=local[0],
            local_port=local[1],
            remote_ip=address[0],
            remote_port=address[1],
            hostname=runtime.hostname,
            connected_at=time.time(),
            max_message_size=int(self.limits.max_message_size),
            max_recipients=self.limits.max_recipients,
            max_received_headers=self.limits.max_received_headers,
        )
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
        self._deadline = time.monotonic() + float(self.limits.session_timeout)
        self._data_deadline: float | None = None  # message_timeout, from DATA or BDAT on
        self._bound = ""  # the limit the current read waits under, for the timeout line
        self.stress = stress
        self._waiting_since: float | None = None  # when the wait for this command began
        self._reading = False
        self._cut = False  # the stress watcher ended the wait
        self.log = logs.SessionLog(self.ctx.session_id)
        self._command: object = None  # the event being answered
        self._proposed: Transaction | None = None  # a MAIL FROM being decided on
        self._overshoot = 0  # RCPTs over max_recipients, see [limits] recipient_overshoot

    # --- I/O -------------------------------------------------------------------------

    def send(self, reply: Reply) -> None:
        self._out.append(self.conn.send(reply))
        if reply.code >= 400:
            self._log_refusal(reply)

    def _log_refusal(self, reply: Reply) -> None:
        """One line per refusal, naming the command and the transaction it refused
        (the one being proposed at MAIL, the recipient being refused at RCPT)."""
        event, tx = self._command, self._proposed or self.tx
        if isinstance(event, Rcpt):
            rcpt_to = [event.address]
        else:
            rcpt_to = [r.address for r in tx.recipients] if tx is not None else []
        reader = self.data.reader
        size = tx.size if tx is not None and tx.size else reader.received if reader else 0
        self.log.reply(reply, self.ctx, tx, _verb(event, self.data.verb), rcpt_to, size)

    def flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self.sock.sendall(data)

    def _recv(self) -> bytes:
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        if self.ctx.stress is not self.stress.active:
            core_set(self.ctx, "stress", self.stress.active)
        wait, self._bound = self._wait_allowed(now)
        if wait <= 0:
            raise TimeoutError
        self.sock.settimeout(wait)
        self._reading = True
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
                    if self._cut:
                        raise TimeoutError from None
                    raise
        finally:
            self._reading = False
        if self._cut:
            raise TimeoutError
        return data

    def _wait_allowed(self, now: float) -> tuple[float, str]:
        """How long this read may wait, and the setting that says so: the rest of
        ``session_timeout``; ``command_timeout`` per read (in DATA/BDAT:
        ``data_timeout``, and the rest of ``message_timeout`` for the whole data of
        the message, so that a client trickling it line by line is cut too); under
        stress (``stress.py``) at most the stress timeout counted from the start of
        the wait for this command, so a client that trickles a command byte by byte
        is cut too."""
        waits = [(self._deadline - now, "session_timeout")]
        if self.busy:
            waits.append((float(self.limits.data_timeout), "data_timeout"))
            if self._data_deadline is not None:
                waits.append((self._data_deadline - now, "message_timeout"))
        else:
            waits.append((float(self.limits.command_timeout), "command_timeout"))
        if self.stress.active:
            waits.append((self._waiting_since + self.stress.timeout(self.busy) - now, "stress"))
        return min(waits)

    def begin_data(self) -> None:
        """DATA or the first BDAT of a message: ``message_timeout`` starts."""
        self.busy = True
        self._data_deadline = time.monotonic() + float(self.limits.message_timeout)

    def overdue(self, now: float) -> bool:
        """Waiting in a read for longer than stress allows (for the watcher)."""
        return (self._reading and self._waiting_since is not None
                and now - self._waiting_since >= self.stress.timeout(self.busy))

    def cut(self) -> None:
        """End the current wait as a timeout: shut the socket's read side (through a
        duplicate descriptor, which leaves a TLS layer intact for the 421)."""
        self._cut = True
        try:
            with socket.socket(fileno=os.dup(self.sock.fileno())) as dup:
                dup.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    # --- lifecycle ---------------------------------------------------------------------

    def run(self) -> None:
        self.log.connect(self.ctx)
        try:
            if self.listener.tls_mode == "implicit" and not self._handshake():
                return
            self._greet()
            self._loop()
        except Closing:
            self._flush_quietly()
            tls.goodbye(self.sock)
        except TimeoutError:
            self.log.event("timeout", limit="stress" if self._cut else self._bound,
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

    def _greet(self) -> None:
        verdict, _ = self.host.decide("connect", self.ctx)
        if verdict is not None and refuses(verdict):
            self._refuse_greeting(verdict)
            return
        if self.ctx.greeting_delay > 0 and self._talks_first():
            core_set(self.ctx, "pregreet", True)
            self.log.event("pregreet", buffered=self.conn.buffered)
            verdict, _ = self.host.decide("pregreet", self.ctx)
            if verdict is not None and refuses(verdict):
                self._refuse_greeting(verdict, close=True)
                return
        banner = self.listener.banner or self.runtime.config.server.banner
        self.send(Reply(220, None, received.expand_banner(banner, self.ctx)))

    def _refuse_greeting(self, verdict: Verdict, close: bool = False) -> None:
        """A refusing verdict instead of the banner: 554 (the client may only QUIT,
        unless ``close``), or 421 and close."""
        if not verdict.reply:
            raise Closing  # Verdict.close(): no banner at all
        code, enhanced, text = verdict.reply_parts()
        if verdict.action is Action.REJECT:
            # RFC 5321 3.1: a 554 greeting; the client may still QUIT.
            self.send(Reply(554, enhanced, f"{self.ctx.hostname} {text}"))
            if not close:
                return
        else:
            self.send(Reply(421, enhanced, f"{self.ctx.hostname} {text}"))
        self.flush()
        raise Closing

    def _talks_first(self) -> bool:
        """Hold the banner back for ``greeting_delay`` (a plugin set it at connect);
        True if the client sent something meanwhile (postscreen's "pregreet"). What
        it sent is kept and read as commands if the session goes on."""
        delay = min(float(self.ctx.greeting_delay), float(self.limits.command_timeout))
        self.sock.settimeout(delay)
        try:
            data = self.sock.recv(READ_SIZE)
        except TimeoutError:
            return False
        self.conn.receive_data(data)
        return bool(data)

    def _loop(self) -> None:
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                self.flush()
                if self.closing and not self.busy:
                    raise Shutdown
                self.conn.receive_data(self._recv())
                continue
            self._waiting_since = None  # the next read waits for the next command
            self._command, self._proposed = event, None
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
        if self.listener.tls_mode == "starttls" and self.ctx.tls is None:
            lines.append("STARTTLS")
        offered = self.auth.offered()
        if offered:
            lines.append("AUTH " + " ".join(offered))
        if self.listener.smtp.vrfy:
            lines.append("VRFY")
        self.send(Reply(250, None, lines))

    def on_mail(self, ev: Mail) -> None:
        max_msgs = self.limits.max_messages_per_session
        if max_msgs and self.ctx.message_count >= max_msgs:
            self.send(TOO_MANY_MESSAGES)
            raise Closing
        if self.listener.auth.required and not self.ctx.auth_user:
            self.refuse(AUTH_REQUIRED)
            return
        params = dict(ev.params)
        if "AUTH" in params and not self.ctx.auth_user:
            params["AUTH"] = "<>"  # RFC 4954 5: not vouched for by an authenticated client
        size = params.get("SIZE")
        if size is not None and size > self.ctx.max_message_size:
            self.refuse(Reply(552, "5.3.4", "Message size exceeds fixed maximum message size"))
            return
        tx = Transaction(queue_id=new_queue_id(), mail_from=ev.address, mail_params=params)
        self._proposed = tx
        verdict, _ = self.host.decide("mail_from", self.ctx, tx)
        if self.refused(verdict):
            return
        self.tx = tx
        self.log.event("mail", logging.DEBUG, queue_id=tx.queue_id,
                       mail_from=f"<{ev.address}>")
        self.send(Reply(250, "2.1.0", "Ok"))

    def on_rcpt(self, ev: Rcpt) -> None:
        tx = self.tx
        assert tx is not None
        if len(tx.recipients) >= self.ctx.max_recipients:
            self._overshoot += 1
            if self._overshoot <= self.limits.recipient_overshoot:
                self.send(TOO_MANY_RCPTS)  # a client sending the rest later (RFC 5321 4.5.3.1.8)
            else:
                self.refuse(TOO_MANY_RCPTS)
            return
        rcpt = Recipient(ev.address, dict(ev.params))
        tx.begin_recipient(rcpt)
        try:
            verdict, _ = self.host.decide("rcpt_to", self.ctx, tx, recipient=rcpt)
            if self.refused(verdict, counts=False):
                self._count_bad_recipient()
                return
            tx.accept_recipient(deliver=verdict is None or verdict.action is not Action.DISCARD)
        finally:
            tx.end_recipient()
        self.send(Reply(250, "2.1.5", "Ok"))

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
        self._data_deadline = None

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

    def on_starttls(self, ev: StartTLS) -> None:
        if self.listener.tls_mode != "starttls":
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

    def on_bad(self, ev: BadCommand) -> None:
        if ev.verb == "AUTH":
            self.auth.abandon()
        self.send(ev.reply)
        self._count_error()

    def _count_error(self) -> None:
        """One more error in this session (a bad command, or a command refused):
        the one that reaches ``max_bad_commands`` is followed at once by 421 and
        the close (Postfix's smtpd_hard_error_limit, which counts every 4xx/5xx
        reply to a command), without waiting for another command."""
        core_set(self.ctx, "bad_commands", self.ctx.bad_commands + 1)
        if self.ctx.bad_commands >= self.limits.max_bad_commands:
            self._too_many(TOO_MANY_ERRORS, bad_commands=self.ctx.bad_commands,
                           limit=self.limits.max_bad_commands)

    def _count_bad_recipient(self) -> None:
        """A refused recipient; the one that reaches ``max_bad_recipients`` (set by
        the flow plugin) ends the session likewise."""
        ctx = self.ctx
        core_set(ctx, "bad_recipients", ctx.bad_recipients + 1)
        if ctx.max_bad_recipients and ctx.bad_recipients >= ctx.max_bad_recipients:
            self._too_many(Reply(421, "4.7.0", f"Too many bad recipients (limit"
                                               f" {ctx.max_bad_recipients}), closing connection"),
                           bad_recipients=ctx.bad_recipients, limit=ctx.max_bad_recipients)

    def _too_many(self, reply: Reply, **fields: int) -> None:
        self.log.event("too_many_errors", logging.WARNING, client=self.ctx.remote_ip, **fields)
        self.send(reply)
        self.flush()
        raise Closing

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
            self._count_error()
        return True

    def refuse(self, reply: Reply) -> None:
        """Refuse a command with the server's own reply: an error too."""
        self.send(reply)
        self._count_error()

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
    BadCommand: Session.on_bad,
    ConnectionClosed: Session.on_closed,
}
