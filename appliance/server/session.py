"""One SMTP session: owns the socket, the timeouts and the TLS upgrade, drives
the protocol engine and asks the plugins. One greenlet per session."""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from appliance import logs, sasl
from appliance.hooks.plugin import run_blocking
from appliance.hooks.verdict import Action, Verdict
from appliance.mail import authresults
from appliance.mail.context import Recipient, SessionContext, TLSInfo, Transaction, core_set
from appliance.mail.message import Message, MessageReader, storage_error
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
from appliance.server import received
from appliance.spool import new_queue_id

if TYPE_CHECKING:
    from appliance.server.runtime import ListenerRuntime, Runtime

READ_SIZE = 65536

OK = Reply(250, "2.0.0", "Ok")
BYE = Reply(221, "2.0.0", "Bye")
TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_MESSAGES = Reply(421, "4.7.0", "Too many messages in this session, closing connection")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "Too many recipients")
TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many hops (Received headers): mail loop?")
QUEUE_FAILED = Reply(451, "4.3.0", "Could not queue the message, try again later")
NO_AUTH = Reply(503, "5.5.1", "Authentication not enabled")
UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
AUTH_SUCCEEDED = Reply(235, "2.7.0", "Authentication successful")
TOO_MANY_AUTH_FAILURES = Reply(421, "4.7.0", "Too many authentication failures, closing connection")
NO_STARTTLS = Reply(502, "5.5.1", "STARTTLS not available here")


class Shutdown(Exception):
    """Raised into an idle session's greenlet when the server stops."""


class Closing(Exception):
    """The session is over (QUIT, 421, peer gone)."""


class Session:
    def __init__(self, runtime: Runtime, lr: ListenerRuntime, sock: socket.socket,
                 address: tuple) -> None:
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
        self.reader: MessageReader | None = None
        self.data_error: Reply | None = None
        self.discard = False  # a header-stage verdict said: accept and drop
        self.auth: sasl.AuthExchange | None = None  # an AUTH exchange in progress
        self._backend: sasl.CredentialsBackend | None | bool = False  # False: not asked yet
        self._provided: dict[str, sasl.MechanismFactory] | None | bool = False  # likewise
        self.busy = False  # in DATA/BDAT or committing: finish before a shutdown
        self.closing = False
        self._out: list[bytes] = []
        self._deadline = time.monotonic() + float(self.limits.session_timeout)
        self.log = logs.SessionLog(self.ctx.session_id)

    # --- I/O -------------------------------------------------------------------------

    def send(self, reply: Reply) -> None:
        self._out.append(self.conn.send(reply))
        if reply.code >= 400:
            self.log.reply(reply)

    def flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self.sock.sendall(data)

    def _recv(self) -> bytes:
        timeout = float(self.limits.data_timeout if self.busy else self.limits.command_timeout)
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(min(timeout, left))
        while True:
            try:
                return self.sock.recv(READ_SIZE)
            except Shutdown:
                self.closing = True
                if not self.busy:
                    raise

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
            self._tls_goodbye()
        except TimeoutError:
            self.log.event("timeout", state=str(self.conn.state))
            self._last_words(TIMEOUT)
        except Shutdown:
            self._last_words(SHUTTING_DOWN)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            self.log.event("lost", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._drop_transaction()
            self.host.notify("on_disconnect", session=self.ctx)
            self.log.disconnect(self.ctx)
            try:
                self.sock.close()
            except OSError:
                pass

    def _tls_goodbye(self) -> None:
        """Send TLS close_notify before closing (OpenSSL clients report a bare TCP
        close as a truncation attack); wait at most a second for the client's."""
        if isinstance(self.sock, ssl.SSLSocket):
            try:
                self.sock.settimeout(1.0)
                self.sock.unwrap()
            except (OSError, ValueError):
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
        if verdict is not None and _refuses(verdict):
            self._refuse_greeting(verdict)
            return
        if self.ctx.greeting_delay > 0 and self._talks_first():
            core_set(self.ctx, "pregreet", True)
            self.log.event("pregreet", buffered=self.conn.buffered)
            verdict, _ = self.host.decide("pregreet", self.ctx)
            if verdict is not None and _refuses(verdict):
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
            _HANDLERS[type(event)](self, event)
            if self.conn.closed:  # we answered 421 (or 221): nothing more to read
                self.flush()
                raise Closing

    def _handshake(self) -> bool:
        """TLS handshake (implicit TLS, or after STARTTLS). False: give up quietly."""
        context = self.lr.ssl_context
        self.sock.settimeout(float(self.listener.tls.handshake_timeout))
        try:
            tls = context.wrap_socket(self.sock, server_side=True,
                                      do_handshake_on_connect=False)
            tls.do_handshake()
        except (ssl.SSLError, OSError, ValueError) as exc:
            self.log.event("tls_failed", client=self.ctx.remote_ip,
                           error=f"{type(exc).__name__}: {exc}")
            return False
        self.sock = tls
        cipher = tls.cipher() or ("", "", 0)
        info = TLSInfo(protocol=tls.version() or "", cipher=cipher[0], bits=cipher[2] or 0,
                       sni=getattr(tls, "sni_name", "") or "")
        cert = tls.getpeercert()
        if cert:
            info.peer_subject = ", ".join("=".join(x) for rdn in cert.get("subject", ())
                                          for x in rdn)
        core_set(self.ctx, "tls", info)
        self.log.event("tls", protocol=info.protocol, cipher=info.cipher)
        return True

    # --- commands ----------------------------------------------------------------------

    def on_helo(self, ev: Helo) -> None:
        verdict, _ = self.host.decide("ehlo", self.ctx, hostname=ev.hostname,
                                      extended=ev.extended)
        if self._refused(verdict):
            return
        self._drop_transaction()
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
        offered = self._auth_offered()
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
            self.send(AUTH_REQUIRED)
            return
        params = dict(ev.params)
        if "AUTH" in params and not self.ctx.auth_user:
            params["AUTH"] = "<>"  # RFC 4954 5: not vouched for by an authenticated client
        size = params.get("SIZE")
        if size is not None and size > self.ctx.max_message_size:
            self.send(Reply(552, "5.3.4", "Message size exceeds fixed maximum message size"))
            return
        tx = Transaction(queue_id=new_queue_id(), mail_from=ev.address, mail_params=params)
        verdict, _ = self.host.decide("mail_from", self.ctx, tx)
        if self._refused(verdict):
            return
        self.tx = tx
        self.log.event("mail", logging.DEBUG, queue_id=tx.queue_id,
                       mail_from=f"<{ev.address}>")
        self.send(Reply(250, "2.1.0", "Ok"))

    def on_rcpt(self, ev: Rcpt) -> None:
        tx = self.tx
        assert tx is not None
        if len(tx.recipients) >= self.ctx.max_recipients:
            self.send(TOO_MANY_RCPTS)
            return
        rcpt = Recipient(ev.address, dict(ev.params))
        core_set(tx, "current_rcpt", rcpt)
        core_set(tx, "_discard_current", False)
        try:
            verdict, _ = self.host.decide("rcpt_to", self.ctx, tx, recipient=rcpt)
            if self._refused(verdict):
                core_set(self.ctx, "bad_recipients", self.ctx.bad_recipients + 1)
                return
            if not tx._discard_current and (verdict is None
                                             or verdict.action is not Action.DISCARD):
                tx.recipients.append(rcpt)
            tx.recipients.extend(tx._extra_rcpts)
            tx._extra_rcpts.clear()
        finally:
            core_set(tx, "current_rcpt", None)
        self.send(Reply(250, "2.1.5", "Ok"))

    def on_data(self, ev: Data) -> None:
        if self._start_data():
            self.send(Reply(354, None, "End data with <CR><LF>.<CR><LF>"))

    def on_bdat(self, ev: Bdat) -> None:
        if self.reader is None and self.data_error is None:
            self._start_data(bdat=True)

    def _start_data(self, bdat: bool = False) -> bool:
        verdict, _ = self.host.decide("data_start", self.ctx, self.tx)
        if verdict is not None and _refuses(verdict):
            reply = _reply_of(verdict)
            if bdat:  # the chunk is being read anyway; answer at its end
                self.data_error = reply
            else:
                self._answer(verdict)
            return False
        self.reader = MessageReader(str(self.runtime.spool.tmp), self.ctx.max_message_size,
                                    int(self.limits.max_header_size))
        self.busy = True
        return True

    def on_chunk(self, ev: DataChunk) -> None:
        if self.reader is None or self.data_error is not None:
            return
        headers = self.reader.feed(ev.data)
        if headers is not None:
            self._headers_stage()

    def _headers_stage(self) -> None:
        tx, reader = self.tx, self.reader
        headers = reader.headers
        if headers.count("Received") > self.ctx.max_received_headers:
            self.data_error = TOO_MANY_HOPS
            return
        core_set(tx, "headers", headers)
        received.add_received(headers, self.ctx, tx, self.listener.smtp.received_header)
        verdict, _ = self.host.decide("headers_received", self.ctx, tx, headers=headers)
        if verdict is not None and _refuses(verdict):
            self.data_error = _reply_of(verdict)
        elif verdict is not None and verdict.action is Action.DISCARD:
            self.discard = True

    def on_data_end(self, ev: DataEnd) -> None:
        reader = self.reader
        if ev.error is not None:
            self._finish_data(ev.error)
            return
        if ev.last and self.data_error is None and reader is not None and reader.error is None:
            if reader.finish() is not None:
                self._headers_stage()
        error = self.data_error or (reader.error if reader else None)
        if error is not None:  # a failed BDAT chunk ends the transaction (RFC 3030)
            self._finish_data(error)
        elif not ev.last:
            self.send(Reply(250, "2.0.0", f"{reader.received} octets received"))
        else:
            self._deliver()

    def _deliver(self) -> None:
        tx, reader = self.tx, self.reader
        message = Message(reader.headers, reader.body)
        core_set(tx, "size", message.size)
        verdict, _ = self.host.decide("message", self.ctx, tx, message=message)
        if verdict is not None and _refuses(verdict):
            self._finish_data(_reply_of(verdict))
            return
        authresults.add_fields(message.headers, self.ctx.hostname,
                               [*self.ctx.auth_results, *tx.auth_results],
                               {"client_ip": self.ctx.remote_ip, "envelope_from": tx.mail_from,
                                "helo": self.ctx.helo_name})
        core_set(tx, "size", message.size)
        discard = self.discard or (verdict is not None and verdict.action is Action.DISCARD)
        if discard or not tx.recipients:
            self.log.event("discarded", queue_id=tx.queue_id)
            self._count_message(tx)
            self._finish_data(Reply(250, "2.0.0", f"Ok: queued as {tx.queue_id}"))
            return
        try:
            queue_id, plugin = self.runtime.queue(self.ctx, tx, message)
        except OSError as exc:
            self.log.event("queue_failed", queue_id=tx.queue_id,
                           error=f"{type(exc).__name__}: {exc}")
            self._finish_data(storage_error(exc))
            return
        except Exception:  # noqa: BLE001 - a queue plugin's failure is a 451
            self.log.exception("queue_failed", queue_id=tx.queue_id)
            self._finish_data(QUEUE_FAILED)
            return
        if queue_id is None:
            self.log.event("queue_failed", queue_id=tx.queue_id, error="no queue plugin")
            self._finish_data(QUEUE_FAILED)
            return
        self._count_message(tx)
        self.log.queued(tx, queue_id, plugin)
        self._finish_data(Reply(250, "2.0.0", f"Ok: queued as {queue_id}"))

    def _count_message(self, tx: Transaction) -> None:
        core_set(self.ctx, "message_count", self.ctx.message_count + 1)
        core_set(self.ctx, "total_size", self.ctx.total_size + tx.size)

    def _finish_data(self, reply: Reply) -> None:
        self.send(reply)
        self._drop_transaction()

    def _drop_transaction(self) -> None:
        if self.reader is not None:
            self.reader.close()
        self.reader = None
        self.tx = None
        self.data_error = None
        self.discard = False
        self.busy = False

    def on_rset(self, ev: Rset) -> None:
        self._drop_transaction()
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
        self.send(Reply(502, "5.5.1", "EXPN not available"))

    def _lookup_answered(self, event: str, **kwargs: str) -> bool:
        """VRFY/EXPN when on: a plugin's accept(text) is a 250, a refusal its reply."""
        verdict, _ = self.host.decide(event, self.ctx, **kwargs)
        if verdict is not None and verdict.action is Action.ACCEPT and verdict.text:
            self.send(Reply(250, "2.1.5", verdict.text.split("\n")))
            return True
        return self._refused(verdict)

    def on_starttls(self, ev: StartTLS) -> None:
        if self.listener.tls_mode != "starttls":
            self.send(NO_STARTTLS)
            return
        self.send(Reply(220, "2.0.0", "Ready to start TLS"))
        self.flush()
        if not self._handshake():
            raise Closing
        discarded = self.conn.start_tls()
        if discarded:
            self.log.event("starttls_injection", discarded_bytes=discarded)
        self._drop_transaction()
        core_set(self.ctx, "helo_name", "")
        core_set(self.ctx, "esmtp", False)
        core_set(self.ctx, "auth_user", "")
        core_set(self.ctx, "auth_mechanism", "")

    # --- AUTH (RFC 4954; docs/auth.md) ---------------------------------------------------

    def on_auth(self, ev: Auth) -> None:
        name, auth = ev.mechanism, self.listener.auth
        if name not in self._auth_offered():
            if self._provided_mechanisms() is None and self._credentials() is None:
                self.send(NO_AUTH)
            elif self.ctx.tls is None and name in auth.mechanisms:
                self.send(AUTH_NEEDS_TLS)
            else:
                self.send(UNKNOWN_MECHANISM)
            return
        provided = self._provided_mechanisms()
        backend = (sasl.CredentialsBackend() if provided is not None else self._credentials()
                   or sasl.CredentialsBackend())  # GSSAPI alone needs no backend
        options = sasl.SASLOptions(
            backend=sasl.ThreadedBackend(backend, run_blocking),
            hostname=self.ctx.hostname, realm=auth.realm, verify_token=self._verify_token,
            gssapi_keytab=str(auth.gssapi_keytab))
        mechanism = provided[name](options) if provided is not None else sasl.create(name, options)
        self.auth = sasl.AuthExchange(mechanism)
        self._auth_step(name, lambda: self.auth.start(ev.initial_response))

    def on_auth_response(self, ev: AuthResponse) -> None:
        if self.auth is None:
            self.send(Reply(501, "5.5.2", "Unexpected authentication data"))
            return
        self._auth_step(self.auth.mechanism.name, lambda: self.auth.line(ev.line))

    def _auth_step(self, name: str, step: Callable[[], sasl.AuthReply]) -> None:
        exchange = self.auth
        try:
            reply = step()
        except Exception:  # noqa: BLE001 - a credentials or token plugin failed: 454, not a crash
            self.log.exception("auth_backend_failed", mechanism=name)
            self.auth = None
            self.send(Reply(454, "4.7.0", "Temporary authentication failure"))
            return
        if not exchange.done:  # a 334 challenge
            self.send(Reply(reply.code, reply.enhanced, reply.text))
            return
        self.auth = None
        result = exchange.result
        if isinstance(result, sasl.Success):
            verdict, _ = self.host.decide("auth", self.ctx, mechanism=name,
                                          username=result.identity)
            if self._refused(verdict):
                return
            core_set(self.ctx, "auth_user", result.identity)
            core_set(self.ctx, "auth_mechanism", name)
            self.log.event("auth", user=result.identity, mechanism=name)
            self.send(AUTH_SUCCEEDED)
            return
        core_set(self.ctx, "auth_failures", self.ctx.auth_failures + 1)
        self.log.event("auth_failed", logging.WARNING, client=self.ctx.remote_ip,
                       user=result.user or "", mechanism=name, reason=result.reason,
                       failures=self.ctx.auth_failures)
        if result.code == 535:  # a guess: make the next one wait
            time.sleep(float(self.listener.auth.failure_delay))
        if self.ctx.auth_failures >= self.listener.auth.max_failures:
            self.send(TOO_MANY_AUTH_FAILURES)
            self.flush()
            raise Closing
        self.send(Reply(result.code, result.enhanced, result.text))

    def _auth_offered(self) -> list[str]:
        """The mechanisms to offer now: [auth] for this TLS state, if there are credentials."""
        auth = self.listener.auth
        names = auth.mechanisms if self.ctx.tls is not None else auth.plaintext_mechanisms
        if names and self._provided_mechanisms() is not None:
            return [n for n in names if n in self._provided]
        # GSSAPI checks tickets against the keytab, not a credentials backend
        gssapi = ["GSSAPI"] if ("GSSAPI" in names and auth.gssapi_keytab
                                and "GSSAPI" in sasl.MECHANISMS) else []
        if not names or self._credentials() is None:
            return gssapi
        oauth = self.host.implements("verify_oauth_token")
        return [n for n in names if n != "GSSAPI" or gssapi
                if oauth or n not in ("XOAUTH2", "OAUTHBEARER")]

    def _credentials(self) -> sasl.CredentialsBackend | None:
        """The ``auth_backend`` hook's answer, asked once per session."""
        if self._backend is False:
            try:
                self._backend, _ = self.host.first("auth_backend", session=self.ctx)
            except Exception:  # noqa: BLE001 - a broken backend plugin means no AUTH
                self.log.exception("auth_backend_failed")
                self._backend = None
        return self._backend

    def _provided_mechanisms(self) -> dict[str, sasl.MechanismFactory] | None:
        """The ``auth_mechanisms`` hook's answer (a plugin relaying SASL to e.g.
        Dovecot), asked once per session; it replaces the built-in mechanisms."""
        if self._provided is False:
            try:
                self._provided, _ = self.host.first("auth_mechanisms", session=self.ctx)
            except Exception:  # noqa: BLE001 - a broken plugin means no AUTH from it
                self.log.exception("auth_mechanisms_failed")
                self._provided = None
        return self._provided

    def _verify_token(self, user: str | None, token: str) -> str | None:
        identity, _ = self.host.first("verify_oauth_token", session=self.ctx, user=user,
                                      token=token)
        return identity

    def on_bad(self, ev: BadCommand) -> None:
        if ev.verb == "AUTH":
            self.auth = None  # the engine ended the exchange (an over-long line)
        core_set(self.ctx, "bad_commands", self.ctx.bad_commands + 1)
        if self.ctx.bad_commands > self.limits.max_bad_commands:
            self.log.event("too_many_errors", bad_commands=self.ctx.bad_commands)
            self.send(TOO_MANY_ERRORS)
            self.flush()
            raise Closing
        self.send(ev.reply)

    def on_closed(self, ev: ConnectionClosed) -> None:
        if self.busy:
            self.log.event("lost_in_data", queue_id=self.tx.queue_id if self.tx else "")
        raise Closing

    # --- verdicts --------------------------------------------------------------------

    def _refused(self, verdict: Verdict | None) -> bool:
        """Answer a refusing verdict; True if the command was refused."""
        if verdict is None or not _refuses(verdict):
            return False
        self._answer(verdict)
        return True

    def _answer(self, verdict: Verdict) -> None:
        if not verdict.reply:
            raise Closing  # Verdict.close(): drop the connection, say nothing
        self.send(_reply_of(verdict))
        if verdict.action is Action.ABORT:
            self.flush()
            raise Closing


def _refuses(verdict: Verdict) -> bool:
    return verdict.action in (Action.REJECT, Action.TMPREJECT, Action.ABORT)


def _reply_of(verdict: Verdict) -> Reply:
    code, enhanced, text = verdict.reply_parts()
    return Reply(code, enhanced, text)


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
