"""OAUTHBEARER (RFC 7628) and Google's XOAUTH2: the client presents a bearer token.

The appliance cannot judge a token itself: ``SASLOptions.verify_token`` (later a
hook) says which identity it proves. A refused token is answered, as RFC 7628
requires, with a JSON error challenge; the client's dummy reply then gets 535.
"""

from __future__ import annotations

import json
import re

from appliance.sasl.mechanism import Malformed, Mechanism, NotAuthorized, text
from appliance.sasl.steps import Challenge, Failure, Step, Success

_KEY = re.compile(r"[A-Za-z]+")
_BEARER = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)


def _pairs(fields: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep or not _KEY.fullmatch(key) or key in out:
            raise Malformed("expected key=value pairs")
        out[key] = value
    return out


class _BearerMechanism(Mechanism):
    uses_backend = False  # the verify_token callback checks the token
    def __init__(self, options) -> None:
        super().__init__(options)
        self._refused: Failure | None = None

    def _respond(self, data: bytes) -> Step:
        if self._refused is not None:  # the dummy reply to our error challenge
            return self._refused
        user, token = self._parse(data)
        self.user = user
        identity = None
        if self.options.verify_token is not None:
            identity = self.options.verify_token(user, token)
        try:
            if identity is None:
                raise NotAuthorized("token refused")
            acting = self._authorize(identity, user) if user else identity
        except NotAuthorized as exc:
            self._refused = Failure.bad_credentials(user, str(exc))
            return Challenge(self._error())
        return Success(identity=acting, authcid=identity)

    def _parse(self, data: bytes) -> tuple[str | None, str]:
        raise NotImplementedError

    def _error(self) -> bytes:
        raise NotImplementedError

    @staticmethod
    def _token(auth: str | None) -> str:
        m = _BEARER.fullmatch(auth or "")
        if not m:
            raise Malformed("expected auth=Bearer <token>")
        return m.group(1)


class OAuthBearer(_BearerMechanism):
    """``gs2-header ^A host=... ^A port=... ^A auth=Bearer token ^A ^A``."""

    name = "OAUTHBEARER"

    def _parse(self, data: bytes) -> tuple[str | None, str]:
        message = text(data, "OAUTHBEARER message")
        if not message.endswith("\x01\x01"):
            raise Malformed("expected a message ending in two ^A")
        header, *fields = message[:-2].split("\x01")
        flag, sep, rest = header.partition(",")
        authz, sep2, tail = rest.partition(",")
        if not sep or not sep2 or tail or flag not in ("n", "y"):
            raise Malformed("expected gs2-header n,[a=user],")
        if authz and not authz.startswith("a="):
            raise Malformed("bad authzid")
        user = authz[2:].replace("=2C", ",").replace("=3D", "=") or None
        return user, self._token(_pairs(fields).get("auth"))

    def _error(self) -> bytes:
        error = {"status": "invalid_token", "schemes": "bearer"}
        if self.options.oauth_scope:
            error["scope"] = self.options.oauth_scope
        if self.options.oauth_configuration:
            error["openid-configuration"] = self.options.oauth_configuration
        return json.dumps(error, separators=(",", ":")).encode()


class XOAuth2(_BearerMechanism):
    """Google's ``user=... ^A auth=Bearer token ^A ^A``."""

    name = "XOAUTH2"

    def _parse(self, data: bytes) -> tuple[str | None, str]:
        message = text(data, "XOAUTH2 message")
        if not message.endswith("\x01\x01"):
            raise Malformed("expected a message ending in two ^A")
        pairs = _pairs(message[:-2].split("\x01"))
        if not pairs.get("user"):
            raise Malformed("expected user=")
        return pairs["user"], self._token(pairs.get("auth"))

    def _error(self) -> bytes:
        error = {"status": "401", "schemes": "bearer"}
        if self.options.oauth_scope:
            error["scope"] = self.options.oauth_scope
        return json.dumps(error, separators=(",", ":")).encode()
