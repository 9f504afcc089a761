"""CRAM-MD5 (RFC 2195): the client answers HMAC-MD5(password, challenge)."""

from __future__ import annotations

import hmac
import os
import re
import time

from appliance.sasl.keys import CramMD5Key
from appliance.sasl.mechanism import Malformed, Mechanism, text
from appliance.sasl.steps import Challenge, Failure, Step, Success

_DIGEST = re.compile(r"[0-9a-fA-F]{32}")
_DUMMY_KEY = CramMD5Key.from_password(os.urandom(16).hex())


class CramMD5(Mechanism):
    name = "CRAM-MD5"
    client_first = False

    def _new_challenge(self) -> bytes:
        serial = int.from_bytes(self.options.random_bytes(8), "big")
        return f"<{serial}.{int(time.time())}@{self.options.hostname}>".encode()

    def _first_challenge(self) -> Step:
        self._challenge = self._new_challenge()
        return Challenge(self._challenge)

    def _respond(self, data: bytes) -> Step:
        user, sep, digest = text(data, "CRAM-MD5 response").rpartition(" ")
        if not sep or not user or not _DIGEST.fullmatch(digest):
            raise Malformed("expected user name, space, 32 hex digits")
        self.user = user
        key = self.options.backend.cram_md5_key(user)
        known = key is not None
        if key is None:  # the same work for a user that does not exist
            key = _DUMMY_KEY
        expected = key.hmac(self._challenge).hex()
        if not known:
            return self._no_secret(user)
        if not hmac.compare_digest(expected, digest.lower()):
            return Failure.bad_credentials(user, "wrong password")
        return Success(identity=user, authcid=user)
