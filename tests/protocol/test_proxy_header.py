"""The PROXY header parser with plain bytes: versions 1 and 2, every TLV kept,
truncated and malformed headers, LOCAL, UNKNOWN and the families not used."""

from __future__ import annotations

import socket
import struct

import pytest

from appliance.protocol.proxy import (
    MAX_V1,
    V2_SIGNATURE,
    ProxyError,
    ProxyHeader,
    SslInfo,
    parse_header,
)


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def v2(command: int = 1, fam: int = 0x11, addresses: bytes | None = None,
       tlvs: bytes = b"", version: int = 2) -> bytes:
    if addresses is None:
        addresses = (socket.inet_pton(socket.AF_INET, "192.0.2.7")
                     + socket.inet_pton(socket.AF_INET, "198.51.100.1")
                     + struct.pack("!HH", 40001, 25))
    body = addresses + tlvs
    return V2_SIGNATURE + bytes([version << 4 | command, fam]) + struct.pack("!H", len(body)) \
        + body


# --- version 1 ------------------------------------------------------------------------


def test_v1_tcp4_gives_client_and_destination_and_length():
    data = b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 25\r\nEHLO x\r\n"
    header = parse_header(data)
    assert header == ProxyHeader(1, "PROXY", ("192.0.2.7", 40001), ("198.51.100.1", 25),
                                 data.index(b"EHLO"))


def test_v1_tcp6():
    header = parse_header(b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n", "v1")
    assert header.source == ("2001:db8::7", 65535)
    assert header.destination == ("2001:db8::1", 0)


def test_v1_unknown_uses_the_connection_and_ignores_the_rest():
    assert parse_header(b"PROXY UNKNOWN\r\n").source is None
    header = parse_header(b"PROXY UNKNOWN ff:: whatever 1 2\r\n")
    assert (header.source, header.destination, header.length) == (None, None, 33)


@pytest.mark.parametrize("partial", [b"P", b"PROXY", b"PROXY TCP4 192.0.2.7 198.51",
                                     b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 25\r"])
def test_v1_truncated_needs_more(partial):
    assert parse_header(partial) is None


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 25\n",          # LF alone
    b"PROXY TCP5 192.0.2.7 198.51.100.1 40001 25\r\n",        # unknown protocol
    b"PROXY TCP4 2001:db8::7 198.51.100.1 40001 25\r\n",      # IPv6 in TCP4
    b"PROXY TCP6 192.0.2.7 2001:db8::1 40001 25\r\n",         # IPv4 in TCP6
    b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",        # port too big
    b"PROXY TCP4 192.0.2.7 198.51.100.1 040001 25\r\n",       # leading zero
    b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 25\r\n",
    b"PROXY TCP4 192.0.2.7  198.51.100.1 40001 25\r\n",       # two spaces
    b"PROXY TCP4 192.0.2.7 198.51.100.1 40001\r\n",           # a field missing
    b"PROXY TCP4 192.0.2.300 198.51.100.1 40001 25\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 25 x\r\n",
    b"PROXY TCP4 \xc3\xa9.0.2.7 198.51.100.1 40001 25\r\n",    # not ASCII
])
def test_v1_malformed_is_refused(line):
    with pytest.raises(ProxyError):
        parse_header(line)


def test_v1_longer_than_107_bytes_is_refused_without_waiting():
    line = b"PROXY UNKNOWN " + b"x" * (MAX_V1 - 16) + b"\r\n"
    assert len(line) == MAX_V1
    assert parse_header(line) is not None  # 107 bytes, CRLF included: the most
    with pytest.raises(ProxyError, match="CRLF"):
        parse_header(b"PROXY UNKNOWN " + b"x" * (MAX_V1 - 14))


# --- what is not a header -----------------------------------------------------------


@pytest.mark.parametrize("data", [b"EHLO client.example\r\n", b"\x16\x03\x01", b"PROXX"])
def test_smtp_or_tls_instead_of_a_header_is_refused_at_once(data):
    with pytest.raises(ProxyError, match="expected"):
        parse_header(data)


def test_accept_restricts_the_version():
    with pytest.raises(ProxyError, match="version 2"):
        parse_header(b"PROXY UNKNOWN\r\n", "v2")
    with pytest.raises(ProxyError, match="version 1"):
        parse_header(v2(), "v1")


# --- version 2 ------------------------------------------------------------------------


def test_v2_tcp4():
    data = v2() + b"EHLO x\r\n"
    header = parse_header(data, "v2")
    assert header == ProxyHeader(2, "PROXY", ("192.0.2.7", 40001), ("198.51.100.1", 25),
                                 16 + 12)


def test_v2_tcp6():
    addresses = (socket.inet_pton(socket.AF_INET6, "2001:db8::7")
                 + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + struct.pack("!HH", 1, 2))
    header = parse_header(v2(fam=0x21, addresses=addresses))
    assert (header.source, header.destination, header.length) == (
        ("2001:db8::7", 1), ("2001:db8::1", 2), 16 + 36)


def test_v2_local_uses_the_connection_and_skips_any_block():
    assert parse_header(v2(command=0, fam=0x00, addresses=b"")).command == "LOCAL"
    header = parse_header(v2(command=0, fam=0x11))  # a LOCAL with addresses: ignored
    assert (header.command, header.source, header.length) == ("LOCAL", None, 28)


@pytest.mark.parametrize("fam,addresses", [
    (0x00, b""),                    # UNSPEC
    (0x12, b"\x01" * 12),           # UDP over IPv4
    (0x22, b"\x01" * 36),           # UDP over IPv6
    (0x31, b"/run/a".ljust(108, b"\0") + b"/run/b".ljust(108, b"\0")),  # UNIX stream
    (0x32, b"\0" * 216),            # UNIX datagram
])
def test_v2_families_not_used_fall_back_to_the_connection(fam, addresses):
    header = parse_header(v2(fam=fam, addresses=addresses))
    assert header.command == "PROXY" and header.source is None and header.destination is None


@pytest.mark.parametrize("data,why", [
    (v2(version=1), "version 1"),
    (v2(version=3), "version 3"),
    (v2(command=2), "unassigned command"),
    (v2(fam=0x41), "unknown family"),
    (v2(fam=0x13), "unknown family"),
    (v2(fam=0x21), "needs 36"),      # IPv6 family with an IPv4-sized block
    (v2(fam=0x31), "needs 216"),
])
def test_v2_malformed_is_refused(data, why):
    with pytest.raises(ProxyError, match=why):
        parse_header(data)


def test_v2_truncated_needs_more_at_every_length():
    data = v2(tlvs=tlv(0x02, b"mx.example.org"))
    for n in range(len(data)):
        assert parse_header(data[:n]) is None, n
    assert parse_header(data).authority == "mx.example.org"


# --- version 2 TLVs ---------------------------------------------------------------------


def test_v2_authority_unique_id_alpn_and_skipped_types():
    tlvs = (tlv(0x01, b"smtp") + tlv(0x02, b"mail.example.org") + tlv(0x03, b"\0\0\0\0")
            + tlv(0x04, b"") + tlv(0x05, b"\x00id-1\xff") + tlv(0x30, b"ns1") + tlv(0xE0, b"x"))
    header = parse_header(v2(tlvs=tlvs))
    assert header.alpn == b"smtp"
    assert header.authority == "mail.example.org"
    assert header.unique_id == b"\x00id-1\xff"
    assert header.ssl is None


def test_v2_ssl_with_every_subtype():
    sub = (tlv(0x21, b"TLSv1.3") + tlv(0x22, b"client.example") + tlv(0x23, b"TLS_AES_256")
           + tlv(0x24, b"SHA256") + tlv(0x25, b"RSA2048"))
    value = struct.pack("!BI", 0x01 | 0x02, 0) + sub
    header = parse_header(v2(tlvs=tlv(0x20, value)))
    assert header.ssl == SslInfo(3, 0, "TLSv1.3", "client.example", "TLS_AES_256", "SHA256",
                                 "RSA2048")
    assert header.ssl.tls and header.ssl.verified_certificate


def test_v2_ssl_without_a_verified_certificate():
    ssl = parse_header(v2(tlvs=tlv(0x20, struct.pack("!BI", 0x01, 1)))).ssl
    assert ssl.tls and not ssl.verified_certificate and ssl.version == ""


@pytest.mark.parametrize("tlvs,why", [
    (b"\x02\x00", "truncated"),                                  # a 2-byte TLV head
    (tlv(0x02, b"abc")[:-1], "runs past"),                       # value cut short
    (b"\x02\x00\x09abc", "runs past"),                           # length too large
    (tlv(0x05, b"x" * 129), "at most 128"),
    (tlv(0x02, b"\xff\xfe"), "not UTF-8"),
    (tlv(0x20, b"\x01\x00\x00"), "at least 5"),
    (tlv(0x20, struct.pack("!BI", 1, 0) + b"\x21\x00\x05TLS"), "SSL sub-TLV"),
])
def test_v2_bad_tlvs_are_refused(tlvs, why):
    with pytest.raises(ProxyError, match=why):
        parse_header(v2(tlvs=tlvs))


def test_v2_unique_id_of_128_bytes_is_the_most():
    assert parse_header(v2(tlvs=tlv(0x05, b"u" * 128))).unique_id == b"u" * 128
