"""DIGEST-MD5 (RFC 2831), server side, authentication only (qop "auth").

Deprecated by RFC 6331 but still spoken by older clients; some clients still pick it.
The stored secret is HA1 = MD5(user:realm:password) for the server's realm.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from appliance.sasl.mechanism import Malformed, Mechanism
from appliance.sasl.steps import Challenge, Failure, Step, Success

MAX_RESPONSE = 4096  # RFC 2831 2.1.2: a digest-response is less than 4096 bytes
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SPACE = re.compile(r"[ \t\r\n]*")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_REQUIRED = ("username", "nonce", "cnonce", "nc", "digest-uri", "response")


def parse_directives(raw: str) -> dict[str, str]:
    """``name=value`` pairs separated by commas (RFC 2831's ``#rule``); values are
    tokens or quoted strings with backslash escapes. Names are lower-cased; a
    repeated name is an error."""
    out: dict[str, str] = {}
    i, n = 0, len(raw)
    while True:
        while i < n and raw[i] in " \t\r\n,":
            i += 1
        if i >= n:
            return out
        m = _TOKEN.match(raw, i)
        if not m:
            raise Malformed(f"bad directive name at offset {i}")
        name = m.group().lower()
        i = _SPACE.match(raw, m.end()).end()
        if i >= n or raw[i] != "=":
            raise Malformed(f"directive {name} has no value")
        i = _SPACE.match(raw, i + 1).end()
        if i < n and raw[i] == '"':
            value, i = _quoted(raw, i + 1)
        else:
            m = _TOKEN.match(raw, i)
            if not m:
                raise Malformed(f"directive {name} has a bad value")
            value, i = m.group(), m.end()
        if name in out:
            raise Malformed(f"directive {name} repeated")
        out[name] = value
        i = _SPACE.match(raw, i).end()
        if i < n and raw[i] != ",":
            raise Malformed(f"expected a comma after {name}")


def _quoted(raw: str, i: int) -> tuple[str, int]:
    chars = []
    while i < len(raw):
        ch = raw[i]
        if ch == '"':
            return "".join(chars), i + 1
        if ch == "\\":
            i += 1
            if i == len(raw):
                break
            ch = raw[i]
        chars.append(ch)
        i += 1
    raise Malformed("unterminated quoted string")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _md5hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class DigestMD5(Mechanism):
    name = "DIGEST-MD5"
    client_first = False

    def __init__(self, options) -> None:
        super().__init__(options)
        self._nonce = ""

    @property
    def secret(self) -> str:
        return f"DIGEST-MD5 secret for realm {self.options.digest_realm!r}"

    def _new_nonce(self) -> str:
        return base64.b64encode(self.options.random_bytes(18)).decode()

    def _first_challenge(self) -> Step:
        self._nonce = self._new_nonce()
        realm = self.options.digest_realm
        return Challenge(
            f'realm={_quote(realm)},nonce="{self._nonce}",qop="auth",'
            "charset=utf-8,algorithm=md5-sess".encode())

    def _respond(self, data: bytes) -> Step:
        if len(data) >= MAX_RESPONSE:
            raise Malformed("digest-response too long")
        # Parse byte for byte (latin-1), decode names as UTF-8 once charset is known.
        d = parse_directives(data.decode("latin-1"))
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise Malformed(f"missing {', '.join(missing)}")
        utf8 = d.get("charset", "").lower() == "utf-8"
        if "charset" in d and not utf8:
            raise Malformed("charset must be utf-8")

        def name(key: str) -> str:
            raw = d.get(key, "").encode("latin-1")
            try:
                return raw.decode("utf-8") if utf8 else raw.decode("latin-1")
            except UnicodeDecodeError:
                raise Malformed(f"{key} is not UTF-8") from None

        user, realm, authzid = name("username"), name("realm"), name("authzid")
        self.user = user
        if d.get("qop", "auth") != "auth":
            raise Malformed("only qop=auth is offered")
        if "cipher" in d:
            raise Malformed("no cipher is offered")
        if not re.fullmatch(r"[0-9a-fA-F]{8}", d["nc"]) or int(d["nc"], 16) != 1:
            raise Malformed("nonce-count must be 00000001")
        response = d["response"].lower()
        if not _HEX32.fullmatch(response):
            raise Malformed("response must be 32 hex digits")
        service = d["digest-uri"].split("/", 1)[0]
        if "/" not in d["digest-uri"] or service.lower() != \
                self.options.digest_uri_service.lower():
            raise Malformed(f"digest-uri must be {self.options.digest_uri_service}/host")
        if not hmac.compare_digest(d["nonce"].encode("latin-1"), self._nonce.encode()):
            raise Malformed("nonce is not the one offered")

        ha1 = None
        if realm == self.options.digest_realm:
            ha1 = self.options.backend.digest_md5_ha1(user, realm)
        known = ha1 is not None
        if ha1 is None:  # unknown user or realm: same work, certain failure
            ha1 = self.options.random_bytes(16)

        def kd(a2: bytes) -> str:
            a1 = ha1 + b":" + d["nonce"].encode("latin-1") + b":" + d["cnonce"].encode("latin-1")
            if "authzid" in d:
                a1 += b":" + d["authzid"].encode("latin-1")
            tail = f":{d['nonce']}:{d['nc']}:{d['cnonce']}:{d.get('qop', 'auth')}:{_md5hex(a2)}"
            return _md5hex(_md5hex(a1).encode() + tail.encode("latin-1"))

        uri = d["digest-uri"].encode("latin-1")
        matches = hmac.compare_digest(kd(b"AUTHENTICATE:" + uri), response)
        if realm != self.options.digest_realm:
            return Failure.bad_credentials(user, f"realm {realm!r} is not the server's")
        if not known:
            return self._no_secret(user)
        if not matches:
            return Failure.bad_credentials(user, "wrong password")
        identity = self._authorize(user, authzid)
        return Success(identity=identity, authcid=user, data=f"rspauth={kd(b':' + uri)}".encode())
