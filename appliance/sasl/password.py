"""PLAIN (RFC 4616) and LOGIN: the client sends the password itself, so both are
offered only over TLS, and the backend checks it against a slow hash."""

from __future__ import annotations

from appliance.sasl.mechanism import Malformed, Mechanism, text
from appliance.sasl.steps import Challenge, Failure, Step, Success


class _PasswordMechanism(Mechanism):
    plaintext = True
    secret = "password hash"

    def _check(self, authcid: str, password: str, authzid: str = "") -> Step:
        # Empty names and passwords go through the backend too (it verifies a
        # dummy hash for unknown users), so every failure costs the same time.
        self.user = authcid
        ok = self.options.backend.verify_password(authcid, password)
        if ok is None:
            return self._no_secret(authcid)
        if ok is not True:
            return Failure.bad_credentials(authcid, "wrong password")
        return Success(identity=self._authorize(authcid, authzid), authcid=authcid)


class Plain(_PasswordMechanism):
    """``[authzid] NUL authcid NUL password`` in one message."""

    name = "PLAIN"

    def _respond(self, data: bytes) -> Step:
        parts = data.split(b"\0")
        if len(parts) != 3:
            raise Malformed("expected authzid NUL authcid NUL password")
        authzid, authcid, password = (text(p, "PLAIN message") for p in parts)
        return self._check(authcid, password, authzid)


class Login(_PasswordMechanism):
    """The de-facto LOGIN mechanism (draft-murchison-sasl-login): ``Username:`` and
    ``Password:`` challenges. Some clients send the user name as initial response."""

    name = "LOGIN"

    def __init__(self, options) -> None:
        super().__init__(options)
        self._username: str | None = None

    def _first_challenge(self) -> Step:
        return Challenge(b"Username:")

    def _respond(self, data: bytes) -> Step:
        if self._username is None:
            self._username = self.user = text(data, "user name")
            return Challenge(b"Password:")
        return self._check(self._username, text(data, "password"))
