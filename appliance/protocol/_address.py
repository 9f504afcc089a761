"""Reverse- and forward-paths (RFC 5321 4.1.2, RFC 6531) and xtext (RFC 3461 4).

Addresses arrive as ``str`` decoded from UTF-8; whether non-ASCII is acceptable is
decided by the caller (SMTPUTF8), the syntax here admits it wherever RFC 6531 does.
"""

from __future__ import annotations

import ipaddress
import re

from appliance.protocol.events import Reply

MAX_ADDRESS = 256  # octets, RFC 5321 4.5.3.1.3

_UTF8 = "\u0080-\U0010ffff"
_ATEXT = rf"[A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~{_UTF8}]"
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*"'
_LABEL = rf"[A-Za-z0-9{_UTF8}](?:[A-Za-z0-9\-{_UTF8}]*[A-Za-z0-9{_UTF8}])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_LITERAL = r"\[[^\[\]\\]*\]"

_MAILBOX = re.compile(rf"({_DOT_STRING}|{_QUOTED})@({_DOMAIN}|{_LITERAL})")
_ROUTE = re.compile(rf"@(?:{_DOMAIN}|{_LITERAL})(?:,@(?:{_DOMAIN}|{_LITERAL}))*:")
#: ``<...>`` with quoted strings skipped, so a quoted ``>`` does not end the path.
_PATH = re.compile(r'<((?:"(?:[^"\\]|\\.)*"|[^"<>])*)>')

_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})+")
_HEXCHAR = re.compile(r"\+([0-9A-Fa-f]{2})")


class AddressError(Exception):
    """Raised with the reply that refuses the address or parameter."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply)
        self.reply = reply


def split_path(text: str, syntax: Reply) -> tuple[str, str]:
    """``<path> params`` -> (what is inside the brackets, the parameter text)."""
    m = _PATH.match(text)
    if m is None:
        raise AddressError(syntax)
    rest = text[m.end():]
    if rest and not rest.startswith(" "):
        raise AddressError(syntax)
    return m.group(1), rest


def check_mailbox(path: str, *, rcpt: bool) -> str:
    """Validate the inside of a non-null path; return the mailbox without source route.

    Non-ASCII must have been cleared by the caller. Quoted local parts are returned as
    given, quotes and backslashes included.
    """
    bad = Reply(501, "5.1.3", "Bad recipient address syntax") if rcpt \
        else Reply(501, "5.1.7", "Bad sender address syntax")
    if path.startswith("@"):
        route = _ROUTE.match(path)
        if route is None:
            raise AddressError(bad)
        path = path[route.end():]
    if len(path.encode("utf-8")) > MAX_ADDRESS:
        raise AddressError(Reply(bad.code, bad.enhanced, "Address too long"))
    if rcpt and path.lower() == "postmaster":
        return path
    m = _MAILBOX.fullmatch(path)
    if m is None or not _domain_ok(m.group(2)):
        raise AddressError(bad)
    return path


def _domain_ok(domain: str) -> bool:
    if domain.startswith("["):
        return _literal_ok(domain[1:-1])
    if len(domain.encode("utf-8")) > 255:
        return False
    return all(len(label.encode("utf-8")) <= 63 for label in domain.split("."))


def _literal_ok(inner: str) -> bool:
    try:
        if inner[:5].lower() == "ipv6:":
            if "%" in inner:  # no zone ids on the wire
                return False
            ipaddress.IPv6Address(inner[5:])
        else:
            ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


def decode_xtext(value: str) -> str:
    """RFC 3461 xtext -> text; raises ValueError if ``value`` is not xtext."""
    if not _XTEXT.fullmatch(value):
        raise ValueError(value)
    if "+" not in value:
        return value
    out = bytearray()
    pos = 0
    for m in _HEXCHAR.finditer(value):
        out += value[pos:m.start()].encode("ascii")
        out.append(int(m.group(1), 16))
        pos = m.end()
    out += value[pos:].encode("ascii")
    return out.decode("utf-8")  # UnicodeDecodeError is a ValueError
