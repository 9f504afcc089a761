"""GSSAPI (RFC 4752): Kerberos V5 through python-gssapi, checked against the
service key in a keytab, so no credentials backend and no password on the wire.

The context is accepted step by step; then the server offers no security layer
(only "none", max size 0) in a wrapped 4-byte message and the client answers,
wrapped, with its choice and an optional authorization identity.
"""

from __future__ import annotations

import gssapi
from gssapi.exceptions import GeneralError, GSSError

from appliance.sasl.mechanism import Malformed, Mechanism, SASLOptions, text
from appliance.sasl.steps import BackendUnavailable, Challenge, Failure, Step, Success

NO_SECURITY_LAYER = 1


def server_credentials(options: SASLOptions) -> gssapi.Credentials:
    """The acceptor credentials for ``service/hostname`` from the keytab."""
    name = gssapi.Name(f"{options.gssapi_service}@{options.hostname}",
                       gssapi.NameType.hostbased_service)
    store = {"keytab": options.gssapi_keytab} if options.gssapi_keytab else None
    return gssapi.Credentials(name=name, usage="accept", store=store)


class GSSAPI(Mechanism):
    """Server side of RFC 4752."""

    name = "GSSAPI"
    uses_backend = False  # the keytab checks the ticket

    def __init__(self, options: SASLOptions) -> None:
        super().__init__(options)
        self._ctx: gssapi.SecurityContext | None = None
        self._phase = "context"  # context -> token_sent -> layer

    def _respond(self, data: bytes) -> Step:
        if self._phase == "context":
            return self._accept(data)
        if self._phase == "token_sent":
            # after our last context token the client answers with nothing
            return self._offer_layer()
        return self._layer_answer(data)

    def _accept(self, token: bytes) -> Step:
        if not token:
            raise Malformed("empty GSSAPI token")
        if self._ctx is None:
            try:
                creds = server_credentials(self.options)
            except (GSSError, GeneralError, OSError) as exc:
                raise BackendUnavailable(f"GSSAPI acceptor credentials: {exc}") from None
            self._ctx = gssapi.SecurityContext(creds=creds, usage="accept")
        try:
            out = self._ctx.step(token)
            # python-gssapi keeps a failed step's error (and its error token) and
            # raises it on the next use of the context: check here, not later
            if not self._ctx.complete:
                return Challenge(out or b"")
            self.user = str(self._ctx.initiator_name)
        except (GSSError, GeneralError) as exc:
            return Failure.bad_credentials(None, f"GSSAPI: {exc}")
        if out:
            self._phase = "token_sent"
            return Challenge(out)
        return self._offer_layer()

    def _offer_layer(self) -> Step:
        self._phase = "layer"
        offer = bytes([NO_SECURITY_LAYER, 0, 0, 0])
        return Challenge(self._ctx.wrap(offer, encrypt=False).message)

    def _layer_answer(self, data: bytes) -> Step:
        try:
            message = self._ctx.unwrap(data).message
        except (GSSError, GeneralError) as exc:
            raise Malformed(f"GSSAPI security layer answer: {exc}") from None
        if len(message) < 4:
            raise Malformed("GSSAPI security layer answer shorter than 4 bytes")
        if message[0] != NO_SECURITY_LAYER:
            raise Malformed(f"GSSAPI: client chose security layer {message[0]}, only none offered")
        authcid = self.user.rsplit("@", 1)[0] if self.user else ""
        if not authcid:
            return Failure.bad_credentials(self.user, "GSSAPI: empty initiator name")
        authzid = text(message[4:], "authorization identity")
        return Success(identity=self._authorize(authcid, authzid), authcid=authcid)
