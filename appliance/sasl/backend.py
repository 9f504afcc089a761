"""Where mechanisms get credentials: the users file, or a plugin (LDAP, SQL...).

A backend answers only what it can: each method returns ``None`` for "I do not
know this user or have no such secret", and the mechanism then fails exactly as
for a wrong password. A backend that cannot answer now raises
``BackendUnavailable`` (the client gets 454 4.7.0).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from appliance.sasl.keys import CramMD5Key, ScramKeys


class CredentialsBackend:
    """Subclass and override the methods your store can answer."""

    def verify_password(self, user: str, password: str) -> bool | None:
        """PLAIN and LOGIN: does ``password`` match? For an unknown user, verify
        against a dummy hash before returning ``None``, so that the time taken does
        not tell an attacker which users exist."""
        return None

    def cram_md5_key(self, user: str) -> CramMD5Key | None:
        """CRAM-MD5: the user's HMAC-MD5 key state."""
        return None

    def digest_md5_ha1(self, user: str, realm: str) -> bytes | None:
        """DIGEST-MD5: MD5(user:realm:password), 16 raw bytes, for this realm."""
        return None

    def scram_keys(self, user: str, mechanism: str) -> ScramKeys | None:
        """SCRAM (``mechanism`` is e.g. ``"SCRAM-SHA-256"``): salt, iterations,
        StoredKey and ServerKey."""
        return None

    def mechanisms(self) -> Collection[str] | None:
        """The mechanisms this store holds secrets for, by their AUTH names (a
        CRAM-MD5 key for at least one user: ``"CRAM-MD5"``): AUTH offers no other
        that needs a secret, so that no client picks one that cannot succeed.
        ``None``: the store cannot tell, every configured one is offered."""
        return None

    def has_user(self, user: str) -> bool | None:
        """Only for the log: when a mechanism found no secret for ``user``, is that
        an unknown user or a known one without this mechanism's secret? ``None``:
        the store cannot tell. The client gets the same reply either way."""
        return None


class ThreadedBackend(CredentialsBackend):
    """Runs every call of ``backend`` through ``run(fn, *args)``, e.g.
    ``appliance.run_blocking``: argon2 takes tens of milliseconds of CPU and an
    LDAP lookup may block, and neither may stall the other sessions."""

    def __init__(self, backend: CredentialsBackend, run: Callable[..., Any]) -> None:
        self.backend = backend
        self.run = run

    def verify_password(self, user: str, password: str) -> bool | None:
        return self.run(self.backend.verify_password, user, password)

    def cram_md5_key(self, user: str) -> CramMD5Key | None:
        return self.run(self.backend.cram_md5_key, user)

    def digest_md5_ha1(self, user: str, realm: str) -> bytes | None:
        return self.run(self.backend.digest_md5_ha1, user, realm)

    def scram_keys(self, user: str, mechanism: str) -> ScramKeys | None:
        return self.run(self.backend.scram_keys, user, mechanism)

    def mechanisms(self) -> Collection[str] | None:
        return self.run(self.backend.mechanisms)

    def has_user(self, user: str) -> bool | None:
        return self.run(self.backend.has_user, user)
