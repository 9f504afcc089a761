"""The shape every mechanism shares: a server-side state machine, no I/O.

``start(initial_response)`` then ``respond(data)`` until the step is not a
``Challenge``. Data is raw (already base64-decoded); the session or
``AuthExchange`` does the wire encoding.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import ClassVar

from attrs import field, frozen

from appliance.sasl.backend import CredentialsBackend
from appliance.sasl.steps import (
    BackendUnavailable,
    Challenge,
    ExchangeOver,
    Failure,
    MechanismTooWeak,
    Step,
)

# (authcid, authzid) -> may the user whose credentials were checked act as authzid?
Authorize = Callable[[str, str], bool]
# (user the client named or None, bearer token) -> the identity the token proves, or None
VerifyToken = Callable[[str | None, str], str | None]

# Per process: seeds the made-up SCRAM salt of users that do not exist, so that the
# same unknown name gets the same salt each time (a changing salt would tell).
_DUMMY_SECRET = os.urandom(32)


@frozen(kw_only=True)
class SASLOptions:
    """What the session knows that mechanisms need."""

    backend: CredentialsBackend
    hostname: str
    realm: str = ""  # DIGEST-MD5 realm; "" = hostname
    authorize: Authorize | None = None  # None: an authzid must equal the authcid
    verify_token: VerifyToken | None = None  # XOAUTH2 / OAUTHBEARER
    oauth_scope: str = ""  # in the RFC 7628 error challenge
    oauth_configuration: str = ""  # openid-configuration URL in that challenge
    digest_uri_service: str = "smtp"  # DIGEST-MD5 digest-uri service type
    gssapi_keytab: str = ""  # GSSAPI acceptor keytab; "" = the Kerberos default
    gssapi_service: str = "smtp"  # GSSAPI service principal: service/hostname
    random_bytes: Callable[[int], bytes] = os.urandom
    dummy_secret: bytes = field(default=_DUMMY_SECRET, repr=False)

    @property
    def digest_realm(self) -> str:
        return self.realm or self.hostname


class Malformed(Exception):
    """The client's data breaks the mechanism's syntax or sequence: 501 5.5.2."""


class NotAuthorized(Exception):
    """Valid credentials, but not for the authorization identity asked for."""


class Mechanism:
    """Base class: state tracking and the mapping of errors to failures."""

    name: ClassVar[str]
    plaintext: ClassVar[bool] = False  # the password itself crosses the wire
    client_first: ClassVar[bool] = True  # may the AUTH command carry an initial response
    uses_backend: ClassVar[bool] = True  # checked against a CredentialsBackend's secrets

    def __init__(self, options: SASLOptions) -> None:
        self.options = options
        self.user: str | None = None  # the name the client gave, for log lines
        self._state = "new"

    @property
    def done(self) -> bool:
        return self._state == "done"

    def start(self, initial_response: bytes | None) -> Step:
        """Begin; ``initial_response`` is the AUTH command's decoded second argument
        (``b""`` for ``=``) or ``None`` when absent."""
        if self._state != "new":
            raise ExchangeOver(f"{self.name}: start() called twice")
        self._state = "running"
        if initial_response is None:
            return self._run(self._first_challenge)
        if not self.client_first:
            return self._finish(Failure.malformed(f"{self.name} takes no initial response"))
        return self._run(self._respond, initial_response)

    def respond(self, data: bytes) -> Step:
        """The client's (decoded) answer to the last challenge."""
        if self._state != "running":
            raise ExchangeOver(f"{self.name}: respond() while {self._state}")
        return self._run(self._respond, data)

    # --- for subclasses -------------------------------------------------------

    def _first_challenge(self) -> Step:
        return Challenge(b"")

    def _respond(self, data: bytes) -> Step:
        raise NotImplementedError

    @property
    def secret(self) -> str:
        """What the backend stores for this mechanism, as the log names it."""
        return f"{self.name} secret"

    def _no_secret(self, user: str) -> Failure:
        """The backend had no secret for ``user``: the reply of a wrong password,
        and a log reason that tells an unknown user from a known one without it."""
        known = self.options.backend.has_user(user)
        reason = ("unknown user" if known is False
                  else f"no {self.secret} stored for this user" if known
                  else f"unknown user or no {self.secret} stored")
        return Failure.bad_credentials(user, reason)

    def _authorize(self, authcid: str, authzid: str) -> str:
        """The identity to act as; raises NotAuthorized."""
        if not authzid or authzid == authcid:
            return authcid
        allow = self.options.authorize
        if allow is not None and allow(authcid, authzid):
            return authzid
        raise NotAuthorized(f"{authcid!r} may not act as {authzid!r}")

    # --- machinery ------------------------------------------------------------

    def _run(self, fn: Callable[..., Step], *args: bytes) -> Step:
        try:
            step = fn(*args)
        except Malformed as exc:
            step = Failure.malformed(str(exc), self.user)
        except NotAuthorized as exc:
            step = Failure.bad_credentials(self.user, str(exc))
        except BackendUnavailable as exc:
            step = Failure.temporary(self.user, str(exc) or "backend unavailable")
        except MechanismTooWeak:
            step = Failure.too_weak(self.user)
        return self._finish(step)

    def _finish(self, step: Step) -> Step:
        if not isinstance(step, Challenge):
            self._state = "done"
        return step


# What the ``auth_mechanisms`` hook maps a mechanism name to: a fresh mechanism per AUTH.
MechanismFactory = Callable[[SASLOptions], Mechanism]


def text(data: bytes, what: str) -> str:
    """UTF-8 text from the client, or Malformed."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed(f"{what} is not UTF-8") from None
