"""The AUTH command of one session (RFC 4954; docs/auth.md): the mechanisms it
offers, the exchange in progress, and the plugins asked once per session for
credentials or mechanisms of their own."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from appliance import logs, sasl
from appliance.config import Listener
from appliance.hooks.host import PluginHost
from appliance.hooks.plugin import run_blocking
from appliance.hooks.verdict import Verdict
from appliance.mail.context import SessionContext, core_set
from appliance.protocol import Auth, AuthResponse, Reply
from appliance.server.replies import (
    AUTH_NEEDS_TLS,
    AUTH_SUCCEEDED,
    NO_AUTH,
    TOO_MANY_AUTH_FAILURES,
    UNKNOWN_MECHANISM,
    Closing,
)

_NOT_ASKED: Any = False  # a plugin's answer not asked for yet (None is an answer)


class Conversation(Protocol):
    """What AUTH uses of its session."""

    ctx: SessionContext
    host: PluginHost
    listener: Listener
    log: logs.SessionLog

    def send(self, reply: Reply) -> None: ...
    def flush(self) -> None: ...
    def refused(self, verdict: Verdict | None) -> bool: ...


class Authenticator:
    """One per session: its state lives as long as the session (the plugins'
    answers) or the exchange (a multi-step mechanism)."""

    def __init__(self, session: Conversation) -> None:
        self.session = session
        self.exchange: sasl.AuthExchange | None = None  # an AUTH exchange in progress
        self._backend: sasl.CredentialsBackend | None = _NOT_ASKED
        self._provided: dict[str, sasl.MechanismFactory] | None = _NOT_ASKED
        self._stored: Collection[str] | None = _NOT_ASKED

    def start(self, ev: Auth) -> None:
        """The AUTH command: refuse a mechanism not offered now, or begin its exchange."""
        session = self.session
        name, auth = ev.mechanism, session.listener.auth
        if name not in self.offered():
            if self._provided_mechanisms() is None and self._credentials() is None:
                session.send(NO_AUTH)
            elif session.ctx.tls is None and name in auth.mechanisms:
                session.send(AUTH_NEEDS_TLS)
            else:
                session.send(UNKNOWN_MECHANISM)
            return
        provided = self._provided_mechanisms()
        backend = (sasl.CredentialsBackend() if provided is not None else self._credentials()
                   or sasl.CredentialsBackend())  # GSSAPI alone needs no backend
        options = sasl.SASLOptions(
            backend=sasl.ThreadedBackend(backend, run_blocking),
            hostname=session.ctx.hostname, realm=auth.realm, verify_token=self._verify_token,
            gssapi_keytab=str(auth.gssapi_keytab))
        mechanism = provided[name](options) if provided is not None else sasl.create(name, options)
        self.exchange = sasl.AuthExchange(mechanism)
        self._step(name, lambda: self.exchange.start(ev.initial_response))

    def respond(self, ev: AuthResponse) -> None:
        """A client's line during the exchange (an answer to a 334 challenge)."""
        if self.exchange is None:
            self.session.send(Reply(501, "5.5.2", "Unexpected authentication data"))
            return
        self._step(self.exchange.mechanism.name, lambda: self.exchange.line(ev.line))

    def abandon(self) -> None:
        """The engine ended the exchange (an over-long line)."""
        self.exchange = None

    def _step(self, name: str, step: Callable[[], sasl.AuthReply]) -> None:
        session, ctx = self.session, self.session.ctx
        exchange = self.exchange
        try:
            reply = step()
        except Exception:  # noqa: BLE001 - a credentials or token plugin failed: 454, not a crash
            session.log.exception("auth_backend_failed", mechanism=name)
            self.exchange = None
            session.send(Reply(454, "4.7.0", "Temporary authentication failure"))
            return
        if not exchange.done:  # a 334 challenge
            session.send(Reply(reply.code, reply.enhanced, reply.text))
            return
        self.exchange = None
        result = exchange.result
        if isinstance(result, sasl.Success):
            verdict, _ = session.host.decide("auth", ctx, mechanism=name,
                                             username=result.identity)
            if session.refused(verdict):
                return
            core_set(ctx, "auth_user", result.identity)
            core_set(ctx, "auth_mechanism", name)
            session.log.event("auth", user=result.identity, mechanism=name)
            session.send(AUTH_SUCCEEDED)
            return
        core_set(ctx, "auth_failures", ctx.auth_failures + 1)
        session.log.event("auth_failed", logging.WARNING, client=ctx.remote_ip,
                          user=result.user or "", mechanism=name, reason=result.reason,
                          failures=ctx.auth_failures)
        if result.code == 535:  # a guess: make the next one wait
            time.sleep(float(session.listener.auth.failure_delay))
        if ctx.auth_failures >= session.listener.auth.max_failures:
            session.send(TOO_MANY_AUTH_FAILURES)
            session.flush()
            raise Closing
        session.send(Reply(result.code, result.enhanced, result.text))

    def offered(self) -> list[str]:
        """The mechanisms to offer now: [auth] for this TLS state, if there are
        credentials, and of those that need a stored secret only the ones the store
        holds (a client that picks another fails and burns one of its tries); of
        those, the ones the session allows (``auth_allowed``, set by rules)."""
        allowed = self.session.ctx.auth_allowed
        names = self._offered()
        return names if allowed is None else [n for n in names if n in allowed]

    def _offered(self) -> list[str]:
        auth = self.session.listener.auth
        if self.session.ctx.tls is not None:
            names = auth.mechanisms
        else:  # [tls] required refuses AUTH before TLS: offer nothing then
            names = [] if self.session.listener.tls.required else auth.plaintext_mechanisms
        if names and self._provided_mechanisms() is not None:
            return [n for n in names if n in self._provided]
        # GSSAPI checks tickets against the keytab, not a credentials backend
        gssapi = ["GSSAPI"] if ("GSSAPI" in names and auth.gssapi_keytab
                                and "GSSAPI" in sasl.MECHANISMS) else []
        if not names or self._credentials() is None:
            return gssapi
        oauth = self.session.host.implements("verify_oauth_token")
        stored = self._stored_secrets()
        return [n for n in names if n != "GSSAPI" or gssapi
                if oauth or n not in ("XOAUTH2", "OAUTHBEARER")
                if stored is None or n in stored or not _uses_backend(n)]

    def _credentials(self) -> sasl.CredentialsBackend | None:
        """The ``auth_backend`` hook's answer, asked once per session."""
        if self._backend is _NOT_ASKED:
            try:
                self._backend, _ = self.session.host.first("auth_backend",
                                                            session=self.session.ctx)
            except Exception:  # noqa: BLE001 - a broken backend plugin means no AUTH
                self.session.log.exception("auth_backend_failed")
                self._backend = None
        return self._backend

    def _stored_secrets(self) -> Collection[str] | None:
        """The mechanisms the credentials store holds secrets for (None: it cannot
        tell), asked once per session (in the thread pool: the store may block)."""
        if self._stored is _NOT_ASKED:
            try:
                self._stored = sasl.ThreadedBackend(self._credentials(),
                                                    run_blocking).mechanisms()
            except sasl.BackendUnavailable:
                self._stored = None  # offer them all: AUTH answers 454, the client retries
            except Exception:  # noqa: BLE001 - a broken backend plugin: as if it could not tell
                self.session.log.exception("auth_backend_failed")
                self._stored = None
        return self._stored

    def _provided_mechanisms(self) -> dict[str, sasl.MechanismFactory] | None:
        """The ``auth_mechanisms`` hook's answer (a plugin relaying SASL to e.g.
        Dovecot), asked once per session; it replaces the built-in mechanisms."""
        if self._provided is _NOT_ASKED:
            try:
                self._provided, _ = self.session.host.first("auth_mechanisms",
                                                             session=self.session.ctx)
            except Exception:  # noqa: BLE001 - a broken plugin means no AUTH from it
                self.session.log.exception("auth_mechanisms_failed")
                self._provided = None
        return self._provided

    def _verify_token(self, user: str | None, token: str) -> str | None:
        identity, _ = self.session.host.first("verify_oauth_token", session=self.session.ctx,
                                              user=user, token=token)
        return identity


def _uses_backend(name: str) -> bool:
    mechanism = sasl.MECHANISMS.get(name)
    return mechanism is not None and mechanism.uses_backend
