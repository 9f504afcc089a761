"""SCRAM-SHA-256 (RFC 5802, RFC 7677), without channel binding.

The server keeps only salt, iteration count, StoredKey and ServerKey; the client
proves it knows the password, and the server proves (server-final ``v=``) that it
holds the keys. We never offer the -PLUS variant, so a client's ``y,,`` is fine
and ``p=`` is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from appliance.sasl.keys import SCRAM_ITERATIONS, SCRAM_SALT_BYTES, ScramKeys
from appliance.sasl.mechanism import Malformed, Mechanism, text
from appliance.sasl.steps import Challenge, Failure, Step, Success

_NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # printable ASCII except ","


def _saslname(value: str) -> str:
    """Undo RFC 5802's escaping of "," and "=" in names."""
    if re.search(r"=(?!2C|3D)", value):
        raise Malformed("bad '=' escape in a name")
    return value.replace("=2C", ",").replace("=3D", "=")


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Malformed(f"{what} is not base64") from None


class ScramSHA256(Mechanism):
    name = "SCRAM-SHA-256"
    hash_name = "sha256"

    def __init__(self, options) -> None:
        super().__init__(options)
        self._keys: ScramKeys | None = None
        self._known = False
        self._gs2_header = ""
        self._authzid = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    def _server_nonce(self) -> str:
        return base64.b64encode(self.options.random_bytes(18)).decode()

    def _respond(self, data: bytes) -> Step:
        if not self._server_first:
            return self._client_first(text(data, "client-first-message"))
        return self._client_final(text(data, "client-final-message"))

    def _client_first(self, message: str) -> Step:
        parts = message.split(",", 2)
        if len(parts) != 3:
            raise Malformed("expected gs2-header and client-first-message-bare")
        flag, authz, bare = parts
        if flag.startswith("p="):
            return Failure(535, "5.7.8", "Channel binding is not supported",
                           None, "client asked for channel binding")
        if flag not in ("n", "y"):
            raise Malformed("bad channel binding flag")
        if authz and not authz.startswith("a="):
            raise Malformed("bad authzid")
        attrs = bare.split(",")
        if attrs[0].startswith("m="):
            raise Malformed("mandatory extension not supported")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            raise Malformed("expected n=user,r=nonce")
        user = _saslname(attrs[0][2:])
        client_nonce = attrs[1][2:]
        if not user or not _NONCE.fullmatch(client_nonce):
            raise Malformed("empty user name or bad nonce")
        self.user = user
        self._authzid = _saslname(authz[2:]) if authz else ""
        self._gs2_header = f"{flag},{authz},"
        self._client_first_bare = bare

        keys = self.options.backend.scram_keys(user, self.name)
        self._known = keys is not None
        if keys is None:
            # A user that does not exist gets a salt that is stable per name and
            # keys that match nothing: the exchange looks the same to the client.
            salt = hmac.digest(self.options.dummy_secret, user.encode(), "sha256")
            rand = self.options.random_bytes
            keys = ScramKeys(salt[:SCRAM_SALT_BYTES], SCRAM_ITERATIONS, rand(32), rand(32))
        self._keys = keys
        self._nonce = client_nonce + self._server_nonce()
        salt = base64.b64encode(keys.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={keys.iterations}"
        return Challenge(self._server_first.encode())

    def _client_final(self, message: str) -> Step:
        without_proof, sep, proof_b64 = message.rpartition(",p=")
        attrs = without_proof.split(",")
        if not sep or len(attrs) < 2 or not attrs[0].startswith("c="):
            raise Malformed("expected c=...,r=...,p=...")
        if _b64decode(attrs[0][2:], "channel binding") != self._gs2_header.encode():
            raise Malformed("channel binding data differ from the gs2 header")
        if not hmac.compare_digest(attrs[1].encode(), f"r={self._nonce}".encode()):
            raise Malformed("nonce is not the one offered")
        proof = _b64decode(proof_b64, "proof")
        keys = self._keys
        if len(proof) != len(keys.stored_key):
            raise Malformed("proof has the wrong length")

        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = hmac.digest(keys.stored_key, auth_message, self.hash_name)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        computed = hashlib.new(self.hash_name, client_key).digest()
        if not self._known:
            return self._no_secret(self.user)
        if not hmac.compare_digest(computed, keys.stored_key):
            return Failure.bad_credentials(self.user, "wrong password")
        identity = self._authorize(self.user, self._authzid)
        server_signature = hmac.digest(keys.server_key, auth_message, self.hash_name)
        return Success(identity=identity, authcid=self.user,
                       data=b"v=" + base64.b64encode(server_signature))
