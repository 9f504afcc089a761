"""The stored secrets of the challenge-response mechanisms, derived from a password.

None of them is the password, but each is enough to pass its own mechanism
(docs/auth.md says what a leaked users file exposes):

* CRAM-MD5: the HMAC-MD5 key setup state (Dovecot's ``{CRAM-MD5}`` format).
* DIGEST-MD5: HA1 = MD5(user:realm:password) for one realm.
* SCRAM-SHA-256: salt, iteration count, StoredKey and ServerKey (RFC 5802).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from attrs import frozen

from appliance.sasl import md5state
from appliance.sasl.saslprep import saslprep

SCRAM_ITERATIONS = 4096  # RFC 7677's minimum, what clients and Dovecot expect
SCRAM_SALT_BYTES = 16


@frozen
class CramMD5Key:
    """The MD5 states after the HMAC key's outer (opad) and inner (ipad) blocks."""

    outer: md5state.State
    inner: md5state.State

    @classmethod
    def from_password(cls, password: str) -> CramMD5Key:
        key = password.encode("utf-8")
        if len(key) > 64:
            key = hashlib.md5(key).digest()
        key = key.ljust(64, b"\0")
        return cls(
            outer=md5state.state_after_block(bytes(b ^ 0x5C for b in key)),
            inner=md5state.state_after_block(bytes(b ^ 0x36 for b in key)),
        )

    @classmethod
    def from_hex(cls, text: str) -> CramMD5Key:
        """64 hex digits, optionally prefixed ``{CRAM-MD5}`` (``doveadm pw`` output)."""
        text = text.removeprefix("{CRAM-MD5}")
        raw = bytes.fromhex(text)
        if len(raw) != 32:
            raise ValueError("expected 64 hex digits")
        return cls(outer=md5state.from_bytes(raw[:16]), inner=md5state.from_bytes(raw[16:]))

    def to_hex(self) -> str:
        return (md5state.to_bytes(self.outer) + md5state.to_bytes(self.inner)).hex()

    def hmac(self, message: bytes) -> bytes:
        """HMAC-MD5(password, message), computed without the password."""
        inner = md5state.resume(self.inner, 64, message)
        return md5state.resume(self.outer, 64, inner)


def _latin1_if_possible(text: str) -> bytes:
    # RFC 2831 2.1.2.1: with charset=utf-8, strings that fit ISO 8859-1 are
    # hashed in ISO 8859-1 (Cyrus does this for user, realm and password alike).
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def digest_md5_ha1(user: str, realm: str, password: str) -> bytes:
    """H({username-value, ":", realm-value, ":", passwd}): 16 raw bytes."""
    return hashlib.md5(
        _latin1_if_possible(user) + b":" + _latin1_if_possible(realm) + b":"
        + _latin1_if_possible(password)
    ).digest()


@frozen
class ScramKeys:
    """What a SCRAM server keeps per user (RFC 5802 section 3)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(
        cls, password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS,
        hash_name: str = "sha256",
    ) -> ScramKeys:
        salt = os.urandom(SCRAM_SALT_BYTES) if salt is None else salt
        prepared = saslprep(password, allow_unassigned=False).encode("utf-8")
        salted = hashlib.pbkdf2_hmac(hash_name, prepared, salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", hash_name)
        return cls(
            salt=salt,
            iterations=iterations,
            stored_key=hashlib.new(hash_name, client_key).digest(),
            server_key=hmac.digest(salted, b"Server Key", hash_name),
        )
