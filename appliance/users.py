"""The users file: TOML, hashed secrets only, one table per user.

```toml
[users."alice@example.org"]
password = "$argon2id$v=19$m=65536,t=3,p=4$..."   # PLAIN, LOGIN
cram_md5 = "<64 hex digits>"                      # CRAM-MD5
digest_md5 = { realm = "mail.example.org", ha1 = "<32 hex digits>" }
scram_sha_256 = { iterations = 4096, salt = "...", stored_key = "...", server_key = "..." }
```

Which mechanisms a user can use follows from which keys exist. The file is
re-read when it changes; a file that cannot be read keeps the last good version
in force (and says so in the log).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

import tomli
from attrs import evolve, frozen

from appliance.sasl.backend import CredentialsBackend
from appliance.sasl.keys import SCRAM_ITERATIONS, CramMD5Key, ScramKeys, digest_md5_ha1
from appliance.sasl.steps import BackendUnavailable

DEFAULT_USERS_FILE = "/etc/smtp-appliance/users.toml"
PASSWORD_SCHEMES = ("argon2id", "sha512-crypt")
log = logging.getLogger("smtp_appliance.auth")

_PREFIXES = ("{ARGON2ID}", "{ARGON2I}", "{SHA512-CRYPT}", "{CRYPT}")  # Dovecot style
_USER_KEYS = ("password", "cram_md5", "digest_md5", "scram_sha_256")
_SCRAM_KEYS = ("iterations", "salt", "stored_key", "server_key")


class UsersFileError(Exception):
    """Every problem of a users file, one ``FILE: key.path: ...`` line each."""


@frozen
class DigestMD5Secret:
    realm: str
    ha1: bytes


@frozen
class UserEntry:
    name: str
    password: str | None = None  # "$argon2id$..." or "$6$..." (SHA-512-crypt)
    cram_md5: CramMD5Key | None = None
    digest_md5: DigestMD5Secret | None = None
    scram_sha_256: ScramKeys | None = None

    @property
    def mechanisms(self) -> list[str]:
        out = ["PLAIN", "LOGIN"] if self.password else []
        if self.cram_md5:
            out.append("CRAM-MD5")
        if self.digest_md5:
            out.append("DIGEST-MD5")
        if self.scram_sha_256:
            out.append("SCRAM-SHA-256")
        return out


# --- passwords -----------------------------------------------------------------


def _strip_prefix(hashed: str) -> str:
    for prefix in _PREFIXES:
        if hashed.upper().startswith(prefix):
            return hashed[len(prefix):]
    return hashed


def password_scheme(hashed: str) -> str | None:
    """``argon2id``, ``sha512-crypt``, or None for a format we cannot verify."""
    hashed = _strip_prefix(hashed)
    if hashed.startswith(("$argon2id$", "$argon2i$")):
        return "argon2id"
    if hashed.startswith("$6$"):
        return "sha512-crypt"
    return None


def hash_password(password: str, scheme: str = "argon2id") -> str:
    """argon2id with argon2-cffi's defaults (RFC 9106's second recommended
    profile: t=3, 64 MiB, p=4), or SHA-512-crypt with glibc's 5000 rounds."""
    if scheme == "argon2id":
        from argon2 import PasswordHasher

        return PasswordHasher().hash(password)
    if scheme == "sha512-crypt":
        from passlib.hash import sha512_crypt

        return sha512_crypt.using(rounds=5000).hash(password)
    raise ValueError(f"unknown password scheme {scheme!r}")


def verify_password_hash(hashed: str, password: str) -> bool:
    """Constant-time check of ``password`` against an argon2 or ``$6$`` hash."""
    hashed = _strip_prefix(hashed)
    scheme = password_scheme(hashed)
    if scheme == "argon2id":
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            return PasswordHasher().verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False
    if scheme == "sha512-crypt":
        from passlib.hash import sha512_crypt

        try:
            return sha512_crypt.verify(password, hashed)
        except ValueError:
            return False
    return False


def make_entry(
    name: str, password: str, mechanisms: Iterable[str], realm: str,
    scheme: str = "argon2id", scram_iterations: int = SCRAM_ITERATIONS,
) -> UserEntry:
    """A user's secrets for ``mechanisms`` (PLAIN and LOGIN share one hash)."""
    wanted = {m.upper() for m in mechanisms}
    unknown = wanted - {"PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-256"}
    if unknown:
        raise ValueError(f"unknown mechanism(s): {', '.join(sorted(unknown))}")
    return UserEntry(
        name=name,
        password=hash_password(password, scheme) if wanted & {"PLAIN", "LOGIN"} else None,
        cram_md5=CramMD5Key.from_password(password) if "CRAM-MD5" in wanted else None,
        digest_md5=(DigestMD5Secret(realm, digest_md5_ha1(name, realm, password))
                    if "DIGEST-MD5" in wanted else None),
        scram_sha_256=(ScramKeys.from_password(password, iterations=scram_iterations)
                       if "SCRAM-SHA-256" in wanted else None),
    )


# --- reading ---------------------------------------------------------------------


def parse_users(text: str, source: str) -> dict[str, UserEntry]:
    """The users of a file's text; UsersFileError lists every problem."""
    try:
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise UsersFileError(f"{source}: {exc}") from None
    errors: list[str] = []
    for key in data:
        if key != "users":
            errors.append(f"{source}: {key}: unknown key {key!r} (expected: users)")
    users = data.get("users", {})
    if not isinstance(users, dict):
        raise UsersFileError(f"{source}: users: expected a table of users")
    out = {}
    for name, table in users.items():
        entry = _parse_user(name, table, f"{source}: users.{_toml_key(name)}", errors)
        if entry is not None:
            out[name] = entry
    if errors:
        raise UsersFileError("\n".join(errors))
    return out


def _parse_user(name: str, table: object, where: str, errors: list[str]) -> UserEntry | None:
    if not name or any(ord(c) < 32 or c == "\x7f" for c in name):
        errors.append(f"{where}: expected a user name without control characters")
        return None
    if not isinstance(table, dict):
        errors.append(f"{where}: expected a table (got {type(table).__name__})")
        return None
    before = len(errors)
    for key in table:
        if key not in _USER_KEYS:
            errors.append(f"{where}.{key}: unknown key {key!r} "
                          f"(expected one of: {', '.join(_USER_KEYS)})")
    entry = UserEntry(name=name)
    if "password" in table:
        value = table["password"]
        if not isinstance(value, str) or password_scheme(value) is None:
            errors.append(f"{where}.password: expected an argon2id ($argon2id$...) or "
                          f"SHA-512-crypt ($6$...) hash (got {str(value)[:12]!r}...)")
        else:
            entry = evolve(entry, password=value)
    if "cram_md5" in table:
        try:
            entry = evolve(entry, cram_md5=CramMD5Key.from_hex(table["cram_md5"]))
        except (TypeError, ValueError, AttributeError):
            errors.append(f"{where}.cram_md5: expected 64 hex digits (Dovecot's CRAM-MD5 format)")
    if "digest_md5" in table:
        d = table["digest_md5"]
        try:
            if not isinstance(d, dict) or set(d) != {"realm", "ha1"}:
                raise ValueError
            if not isinstance(d["ha1"], str):
                raise ValueError
            ha1 = bytes.fromhex(d["ha1"].removeprefix("{DIGEST-MD5}"))
            if not isinstance(d["realm"], str) or len(ha1) != 16:
                raise ValueError
            entry = evolve(entry, digest_md5=DigestMD5Secret(d["realm"], ha1))
        except (TypeError, ValueError):
            errors.append(f"{where}.digest_md5: expected {{ realm = \"...\", "
                          f"ha1 = \"<32 hex digits>\" }}")
    if "scram_sha_256" in table:
        s = table["scram_sha_256"]
        try:
            if isinstance(s, str) and s.upper().startswith("{SCRAM-SHA-256}"):
                s = _dovecot_scram(s)
            if not isinstance(s, dict) or set(s) != set(_SCRAM_KEYS):
                raise ValueError
            if not isinstance(s["iterations"], int) or not 1 <= s["iterations"] <= 10**7:
                raise ValueError
            keys = ScramKeys(
                salt=base64.b64decode(s["salt"], validate=True),
                iterations=s["iterations"],
                stored_key=base64.b64decode(s["stored_key"], validate=True),
                server_key=base64.b64decode(s["server_key"], validate=True),
            )
            if not keys.salt or len(keys.stored_key) != 32 or len(keys.server_key) != 32:
                raise ValueError
            entry = evolve(entry, scram_sha_256=keys)
        except (TypeError, ValueError, binascii.Error):
            errors.append(f"{where}.scram_sha_256: expected {{ iterations = 4096, salt, "
                          f"stored_key, server_key (base64, keys of 32 bytes) }} or "
                          f"Dovecot's \"{{SCRAM-SHA-256}}iterations,salt,stored,server\"")
    return entry if len(errors) == before else None


def _dovecot_scram(value: str) -> dict:
    """``{SCRAM-SHA-256}4096,salt,stored_key,server_key`` (``doveadm pw`` output)."""
    iterations, salt, stored, server = value[len("{SCRAM-SHA-256}"):].split(",")
    return {"iterations": int(iterations), "salt": salt, "stored_key": stored,
            "server_key": server}


def permission_warning(path: Path, st: os.stat_result) -> str | None:
    if stat.S_IMODE(st.st_mode) & 0o077:
        return (f"{path}: readable or writable by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); it holds password hashes: chmod 600")
    return None


class UsersFile(CredentialsBackend):
    """The users file as a credentials backend, cached and re-read on change."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.warnings: list[str] = []
        self._users: dict[str, UserEntry] | None = None
        self._signature: tuple[int, int, int] | None = None
        self._problem: str | None = None
        self._dummy_hash: str | None = None
        self._lock = threading.Lock()
        self._bad_signature: tuple[int, int, int] | None = None
        self._mechanisms: frozenset[str] = frozenset()

    def load(self) -> dict[str, UserEntry]:
        """Read now (start, SIGHUP); raises UsersFileError or OSError. Permission
        problems are left in ``warnings`` for the caller to report."""
        with open(self.path, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UsersFileError(f"{self.path}: not UTF-8") from None
        users = parse_users(text, str(self.path))
        self.warnings = [w for w in [permission_warning(self.path, st)] if w]
        self._users, self._problem = users, None
        self._signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        self._dummy_hash = None
        self._mechanisms = frozenset(m for entry in users.values() for m in entry.mechanisms)
        return users

    reload = load

    def users(self) -> dict[str, UserEntry]:
        """The current users, re-reading the file if it changed since last time."""
        signature = None
        try:
            st = os.stat(self.path)
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            if signature not in (self._signature, self._bad_signature):
                with self._lock:  # backends run in a thread pool: read once
                    if signature not in (self._signature, self._bad_signature):
                        self.load()
                        for warning in self.warnings:
                            log.warning("users file: %s", warning)
        except (OSError, UsersFileError) as exc:
            self._bad_signature = signature  # not parsed again until it changes
            problem = str(exc)
            if problem != self._problem:
                self._problem = problem
                kept = "keeping the last good version" if self._users is not None else \
                    "no users can authenticate"
                log.error("users file: %s (%s)", problem, kept)
            if self._users is None:
                raise BackendUnavailable(f"users file unreadable: {problem}") from None
        return self._users

    def get(self, name: str) -> UserEntry | None:
        return self.users().get(name)

    # --- CredentialsBackend -----------------------------------------------------

    def mechanisms(self) -> frozenset[str]:
        """What ``smtp-appliance users`` stored for at least one user."""
        self.users()
        return self._mechanisms

    def has_user(self, user: str) -> bool:
        return self.get(user) is not None

    def verify_password(self, user: str, password: str) -> bool | None:
        entry = self.get(user)
        if entry is None or entry.password is None:
            verify_password_hash(self._dummy(), password)  # the same time as a real check
            return None
        return verify_password_hash(entry.password, password)

    def cram_md5_key(self, user: str) -> CramMD5Key | None:
        entry = self.get(user)
        return entry.cram_md5 if entry else None

    def digest_md5_ha1(self, user: str, realm: str) -> bytes | None:
        entry = self.get(user)
        if entry is None or entry.digest_md5 is None or entry.digest_md5.realm != realm:
            return None
        return entry.digest_md5.ha1

    def scram_keys(self, user: str, mechanism: str) -> ScramKeys | None:
        entry = self.get(user)
        if entry is None or mechanism.upper() != "SCRAM-SHA-256":
            return None
        return entry.scram_sha_256

    def _dummy(self) -> str:
        """An argon2id hash with the parameters of the file's first argon2 hash."""
        if self._dummy_hash is None:
            from argon2 import PasswordHasher, extract_parameters

            hasher = PasswordHasher()
            for entry in (self._users or {}).values():
                if entry.password and password_scheme(entry.password) == "argon2id":
                    params = extract_parameters(_strip_prefix(entry.password))
                    hasher = PasswordHasher.from_parameters(params)
                    break
            self._dummy_hash = hasher.hash(os.urandom(16).hex())
        return self._dummy_hash


# --- writing ---------------------------------------------------------------------


def _toml_string(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 32 or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(name: str) -> str:
    return name if name.replace("-", "").replace("_", "").isalnum() and name.isascii() \
        else _toml_string(name)


def render_users(users: dict[str, UserEntry]) -> str:
    """The file's text; ``parse_users`` reads it back to the same entries."""
    b64 = lambda raw: _toml_string(base64.b64encode(raw).decode())  # noqa: E731
    lines = [
        "# smtp-appliance users: hashed secrets only (docs/auth.md).",
        "# Managed by `smtp-appliance users add|passwd|delete`; keep it mode 0600.",
    ]
    for name in sorted(users):
        e = users[name]
        lines += ["", f"[users.{_toml_key(name)}]"]
        if e.password:
            lines.append(f"password = {_toml_string(e.password)}")
        if e.cram_md5:
            lines.append(f"cram_md5 = {_toml_string(e.cram_md5.to_hex())}")
        if e.digest_md5:
            lines.append(f"digest_md5 = {{ realm = {_toml_string(e.digest_md5.realm)}, "
                         f"ha1 = {_toml_string(e.digest_md5.ha1.hex())} }}")
        if e.scram_sha_256:
            s = e.scram_sha_256
            lines.append(f"scram_sha_256 = {{ iterations = {s.iterations}, salt = {b64(s.salt)}, "
                         f"stored_key = {b64(s.stored_key)}, server_key = {b64(s.server_key)} }}")
    return "\n".join(lines) + "\n"


def write_users(path: str | os.PathLike, users: dict[str, UserEntry]) -> None:
    """Replace the file atomically (temp file, fsync, rename, fsync of the
    directory), mode 0600, keeping the old file's owner and group."""
    path = Path(path)
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        if old is not None and os.geteuid() == 0:
            os.fchown(fd, old.st_uid, old.st_gid)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render_users(users))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
