"""The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2), sans-IO.

A load balancer in front of the appliance opens its own TCP connection and sends,
before any SMTP, one header naming the client it relays. :func:`parse_header`
takes the bytes received so far and returns the header once it is whole, ``None``
while it is not, and raises :class:`ProxyError` on anything the specification
says a receiver must reject: a wrong signature, a bad version or command, an
unknown family or transport, a version 1 line that is too long or not canonical,
a length that does not cover the addresses, a TLV that runs past the header.

What the header means for the session (proxy-protocol.txt 2.1 and 2.2):

- ``PROXY`` with TCP over IPv4 or IPv6: ``source`` and ``destination`` are the
  client's and the address it connected to; they stand for the connection.
- ``LOCAL`` (version 2; the proxy's own health checks), ``UNKNOWN`` (version 1),
  and the valid version 2 combinations this receiver does not use (UNSPEC, UDP,
  UNIX sockets): ``source`` is None, the connection's real endpoints stand.

Version 2 TLVs kept: ``authority`` (the client's SNI), ``unique_id`` (up to 128
bytes), ``alpn`` and ``ssl`` (what the proxy's TLS saw). CRC32C is not verified
and NOOP, NETNS and unregistered types are skipped, as the specification allows.
No sockets, no gevent: the listener (``appliance/server/proxied.py``) reads.
"""

from __future__ import annotations

import ipaddress
import struct

from attrs import frozen

__all__ = ["MAX_V1", "ProxyError", "ProxyHeader", "SslInfo", "V2_SIGNATURE", "parse_header"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
#: The longest version 1 line, CRLF included (proxy-protocol.txt 2.1).
MAX_V1 = 107
_V2_FIXED = 16
_MAX_UNIQUE_ID = 128

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04

#: Address block length by family nibble (UNSPEC, INET, INET6, UNIX).
_ADDRESS_LENGTH = {0x0: 0, 0x1: 12, 0x2: 36, 0x3: 216}


class ProxyError(ValueError):
    """A header the receiver must reject; the message says what is wrong."""


@frozen
class SslInfo:
    """PP2_TYPE_SSL: the client's TLS connection to the proxy."""

    client: int  # PP2_CLIENT_* bits
    verify: int  # 0: the client's certificate was verified
    version: str = ""
    cn: str = ""
    cipher: str = ""
    sig_alg: str = ""
    key_alg: str = ""

    @property
    def tls(self) -> bool:
        return bool(self.client & PP2_CLIENT_SSL)

    @property
    def verified_certificate(self) -> bool:
        return bool(self.client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS)) \
            and self.verify == 0


@frozen
class ProxyHeader:
    version: int  # 1 or 2
    command: str  # "PROXY" or "LOCAL"
    #: (address, port) of the client and of the address it connected to; None:
    #: use the connection's own endpoints (LOCAL, UNKNOWN, UNSPEC, UDP, UNIX).
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int  # bytes of the header, to skip
    authority: str | None = None
    unique_id: bytes | None = None
    alpn: bytes | None = None
    ssl: SslInfo | None = None


def parse_header(data: bytes, accept: str = "any") -> ProxyHeader | None:
    """The header at the start of ``data``; None: not whole yet. ``accept``:
    ``"v1"``, ``"v2"`` or ``"any"``. :raises ProxyError: a header to reject."""
    if accept != "v1" and _starts(data, V2_SIGNATURE):
        return _v2(data) if len(data) >= len(V2_SIGNATURE) else None
    if accept != "v2" and _starts(data, V1_PREFIX):
        return _v1(data) if len(data) >= len(V1_PREFIX) else None
    expected = {"v1": "a PROXY version 1 line", "v2": "a PROXY version 2 header"}.get(
        accept, "a PROXY version 1 or 2 header")
    raise ProxyError(f"expected {expected}, got {data[:16]!r}")


def _starts(data: bytes, prefix: bytes) -> bool:
    """``data`` is ``prefix`` or a beginning of it, or begins with it."""
    n = min(len(data), len(prefix))
    return data[:n] == prefix[:n]


# --- version 1: "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n" -----------------------


def _v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, MAX_V1)
    if end < 0:
        if len(data) >= MAX_V1 or b"\n" in data[:MAX_V1]:
            raise ProxyError(f"version 1 line without CRLF in its first {MAX_V1} bytes")
        return None
    line = data[:end]
    length = end + 2
    try:
        words = line.decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyError("version 1 line is not ASCII") from None
    if len(words) >= 2 and words[1] == "UNKNOWN":
        return ProxyHeader(1, "PROXY", None, None, length)  # the rest is ignored
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyError(f"version 1 line is not 'PROXY TCP4|TCP6|UNKNOWN src dst sport "
                         f"dport': {line[:MAX_V1]!r}")
    version = 4 if words[1] == "TCP4" else 6
    source = (_v1_address(words[2], version), _v1_port(words[4]))
    destination = (_v1_address(words[3], version), _v1_port(words[5]))
    return ProxyHeader(1, "PROXY", source, destination, length)


def _v1_address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyError(f"version 1 address {text[:45]!r} is not an IP address") from None
    if address.version != version:
        raise ProxyError(f"version 1 address {text!r} is not IPv{version}")
    return str(address)


def _v1_port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5 \
            or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyError(f"version 1 port {text[:8]!r} is not a number from 0 to 65535")
    return int(text)


# --- version 2: binary ----------------------------------------------------------------


def _v2(data: bytes) -> ProxyHeader | None:
    if len(data) < _V2_FIXED:
        return None
    ver_cmd, fam, size = struct.unpack_from("!BBH", data, 12)
    if ver_cmd >> 4 != 2:
        raise ProxyError(f"version 2 header with version {ver_cmd >> 4}")
    command = {0x0: "LOCAL", 0x1: "PROXY"}.get(ver_cmd & 0xF)
    if command is None:
        raise ProxyError(f"version 2 header with unassigned command {ver_cmd & 0xF}")
    family, transport = fam >> 4, fam & 0xF
    if family not in _ADDRESS_LENGTH or transport > 2:
        raise ProxyError(f"version 2 header with unknown family/transport 0x{fam:02x}")
    length = _V2_FIXED + size
    if len(data) < length:
        return None
    if command == "LOCAL" or not family or not transport:
        # The block is ignored whatever it holds (LOCAL, UNSPEC); its length skips it.
        return ProxyHeader(2, command, None, None, length)
    block = data[_V2_FIXED:length]
    need = _ADDRESS_LENGTH[family]
    if len(block) < need:
        raise ProxyError(f"version 2 address block of {len(block)} bytes, family 0x{fam:02x}"
                         f" needs {need}")
    source = destination = None
    if transport == 1 and family in (0x1, 0x2):  # TCP over IPv4 or IPv6
        width = 4 if family == 0x1 else 16
        src = ipaddress.ip_address(block[:width])
        dst = ipaddress.ip_address(block[width:2 * width])
        sport, dport = struct.unpack_from("!HH", block, 2 * width)
        source, destination = (str(src), sport), (str(dst), dport)
    tlvs = _tlvs(block[need:], "TLV")
    return ProxyHeader(
        2, command, source, destination, length,
        authority=_text(tlvs.get(PP2_TYPE_AUTHORITY), "authority"),
        unique_id=_unique_id(tlvs.get(PP2_TYPE_UNIQUE_ID)),
        alpn=tlvs.get(PP2_TYPE_ALPN),
        ssl=_ssl(tlvs.get(PP2_TYPE_SSL)),
    )


def _tlvs(data: bytes, what: str) -> dict[int, bytes]:
    """Type -> value of a TLV sequence that fills ``data`` exactly (the last of a
    repeated type wins)."""
    found: dict[int, bytes] = {}
    at = 0
    while at < len(data):
        if len(data) - at < 3:
            raise ProxyError(f"{what} truncated: {len(data) - at} bytes left for a 3-byte head")
        kind, size = data[at], struct.unpack_from("!H", data, at + 1)[0]
        end = at + 3 + size
        if end > len(data):
            raise ProxyError(f"{what} 0x{kind:02x} of {size} bytes runs past the header")
        found[kind] = data[at + 3:end]
        at = end
    return found


def _text(value: bytes | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ProxyError(f"{what} TLV is not UTF-8") from None


def _unique_id(value: bytes | None) -> bytes | None:
    if value is not None and len(value) > _MAX_UNIQUE_ID:
        raise ProxyError(f"unique id TLV of {len(value)} bytes (at most {_MAX_UNIQUE_ID})")
    return value


def _ssl(value: bytes | None) -> SslInfo | None:
    if value is None:
        return None
    if len(value) < 5:
        raise ProxyError(f"SSL TLV of {len(value)} bytes (at least 5)")
    client, verify = struct.unpack_from("!BI", value)
    sub = _tlvs(value[5:], "SSL sub-TLV")

    def text(kind: int, what: str) -> str:
        return _text(sub.get(kind), what) or ""

    return SslInfo(client, verify,
                   version=text(PP2_SUBTYPE_SSL_VERSION, "SSL version"),
                   cn=text(PP2_SUBTYPE_SSL_CN, "SSL CN"),
                   cipher=text(PP2_SUBTYPE_SSL_CIPHER, "SSL cipher"),
                   sig_alg=text(PP2_SUBTYPE_SSL_SIG_ALG, "SSL signature algorithm"),
                   key_alg=text(PP2_SUBTYPE_SSL_KEY_ALG, "SSL key algorithm"))
