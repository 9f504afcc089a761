"""SMTP AUTH checked by Dovecot, as Postfix's ``smtpd_sasl_type = dovecot`` (docs/auth.md)."""

from __future__ import annotations

from typing import Annotated

from attrs import frozen

from appliance import Check, Duration, PluginConfig, hookimpl
from appliance.clients import DovecotAuth, DovecotMechanism, is_socket, request_params
from appliance.sasl import SASLOptions

_SOCKET = Check(is_socket, '"unix:/path/to/socket" or "inet:host:port"')
_POSITIVE = Check(lambda value: value > 0, "a duration longer than 0s")


class DovecotAuthPlugin:
    """Answers the ``auth_mechanisms`` hook with the mechanisms Dovecot announces,
    each relaying the client's exchange to Dovecot's auth-client socket. Disabled
    by default; when enabled it replaces the users file for AUTH."""

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False
        priority: int = 500
        socket: Annotated[str, _SOCKET] = "unix:/run/dovecot/auth-client"
        # Longer than Dovecot's own penalty delay (up to 15 s for a client IP
        # that keeps failing), which would otherwise turn a 535 into a 454.
        timeout: Annotated[Duration, _POSITIVE] = Duration("30s")
        # Let Dovecot delay clients that recently failed (its auth penalty, by IP);
        # false sends "no-penalty" and leaves that to [auth] failure_delay and flow.
        penalty: bool = True

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        # One client per process and socket, kept across reloads.
        self.client = DovecotAuth.shared(config.socket, float(config.timeout))

    @hookimpl
    def auth_mechanisms(self, session) -> dict | None:
        announced = self.client.mechanisms()
        if announced is None:
            # Dovecot never reached: offer what [auth] allows, so that clients
            # get 454 4.7.0 (try later) rather than no AUTH at all.
            names = _ALL_NAMES
        else:
            names = [n for n, flags in announced.items() if "private" not in flags]
        return {name: self._factory(session, name) for name in names}

    def _factory(self, session, name: str):
        def make(options: SASLOptions) -> DovecotMechanism:
            tls = session.tls  # read at AUTH time: after STARTTLS
            params = request_params(
                local_ip=session.local_ip, remote_ip=session.remote_ip,
                local_port=session.local_port, remote_port=session.remote_port,
                secured=tls is not None, local_name=tls.sni if tls else "",
                penalty=self.config.penalty)
            return DovecotMechanism(options, client=self.client, name=name, params=params)
        return make


_ALL_NAMES = ("PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-256", "XOAUTH2",
              "OAUTHBEARER")
