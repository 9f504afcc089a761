"""What one step of a SASL exchange yields: a challenge, success or failure.

A mechanism never talks SMTP; the failure carries the RFC 4954 reply the session
should give, so every mechanism answers the same case with the same code and a
client cannot tell a wrong password from an unknown user.
"""

from __future__ import annotations

from attrs import frozen


@frozen
class Challenge:
    """Send ``data`` to the client (the session base64-encodes it after ``334``)."""

    data: bytes


@frozen
class Success:
    """Authenticated. ``identity`` is who the session now acts as (the authorization
    identity when one was asked for and allowed, else ``authcid``); ``authcid`` is
    whose credentials were checked. ``data``, when not ``None``, is additional data
    with success (SCRAM's server-final message, DIGEST-MD5's rspauth): RFC 4954 sends
    it as a ``334`` challenge and expects an empty line before the ``235``."""

    identity: str
    authcid: str
    data: bytes | None = None


@frozen
class Failure:
    """The exchange failed: reply ``code enhanced text``. ``user`` (the name the
    client gave, if any) and ``reason`` are for the log line only, never for the
    client, which must not learn whether the user exists."""

    code: int
    enhanced: str
    text: str
    user: str | None = None
    reason: str = ""

    @classmethod
    def bad_credentials(cls, user: str | None, reason: str = "bad credentials") -> Failure:
        return cls(535, "5.7.8", "Authentication credentials invalid", user, reason)

    @classmethod
    def malformed(cls, reason: str, user: str | None = None) -> Failure:
        return cls(501, "5.5.2", "Malformed authentication exchange", user, reason)

    @classmethod
    def bad_base64(cls) -> Failure:
        return cls(501, "5.5.2", "Cannot decode base64 response", None, "bad base64")

    @classmethod
    def cancelled(cls, user: str | None = None) -> Failure:
        return cls(501, "5.7.0", "Authentication cancelled", user, "cancelled by client")

    @classmethod
    def too_weak(cls, user: str | None = None) -> Failure:
        return cls(534, "5.7.9", "Authentication mechanism is too weak", user, "too weak")

    @classmethod
    def temporary(cls, user: str | None = None, reason: str = "backend unavailable") -> Failure:
        return cls(454, "4.7.0", "Temporary authentication failure", user, reason)

    @property
    def reply(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


Step = Challenge | Success | Failure


class BackendUnavailable(Exception):
    """A credentials backend cannot answer now (file unreadable, LDAP down):
    the client gets ``454 4.7.0`` and may try again later."""


class MechanismTooWeak(Exception):
    """A backend refuses this mechanism for this user: ``534 5.7.9``. Raising it
    tells the client the user exists; backends that mind return ``None`` instead."""


class ExchangeOver(RuntimeError):
    """The caller stepped a mechanism that has finished or not started: a bug in
    the session, not something a client can cause."""
