"""Postfix's policy delegation protocol (SMTPD_POLICY_README), sans-IO.

A request is ``name=value`` lines ended by an empty line; the reply is
``action=...`` (and possibly other attributes) ended by an empty line. This
module turns attributes into bytes, bytes into a reply, and the action text into
a :class:`PolicyAction`, so it can be tested with plain bytes and no socket.
"""

from __future__ import annotations

import re

from attrs import frozen

#: A reply larger than this is a broken or hostile server, not a policy answer.
MAX_REPLY = 64 * 1024


class PolicyProtocolError(Exception):
    """The server's reply does not follow the protocol."""


def _clean(value: object) -> str:
    """A value on one line: a newline in a value would start a new attribute."""
    text = "" if value is None else str(value)
    return text.replace("\r", " ").replace("\n", " ")


def encode_request(attributes: dict[str, object]) -> bytes:
    """The request as Postfix sends it: ``name=value\\n`` lines, then ``\\n``."""
    lines = [f"{name}={_clean(value)}\n" for name, value in attributes.items()]
    return ("".join(lines) + "\n").encode("utf-8", "surrogateescape")


class ReplyReader:
    """Collects a reply from the bytes read so far; ``feed`` returns the reply's
    attributes once the empty line has arrived, else ``None``."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> dict[str, str] | None:
        self._buf += data
        text = bytes(self._buf).replace(b"\r\n", b"\n")
        end = 0 if text.startswith(b"\n") else text.find(b"\n\n")
        if end < 0:
            if len(self._buf) > MAX_REPLY:
                raise PolicyProtocolError(f"reply longer than {MAX_REPLY} bytes")
            return None
        if end == 0:
            raise PolicyProtocolError("empty reply")
        if len(text) > end + 2:
            raise PolicyProtocolError("data after the end of the reply")
        attributes: dict[str, str] = {}
        for line in text[:end].decode("utf-8", "replace").split("\n"):
            name, eq, value = line.partition("=")
            if not eq or not name:
                raise PolicyProtocolError(f"not a name=value line: {line[:80]!r}")
            attributes[name] = value
        if "action" not in attributes:
            raise PolicyProtocolError("reply without an action attribute")
        return attributes


@frozen
class PolicyAction:
    """One action of the access(5) grammar.

    ``kind`` is the upper-case keyword (``OK``, ``REJECT``, ``DEFER``,
    ``DEFER_IF_PERMIT``, ``DEFER_IF_REJECT``, ``DUNNO``, ``PREPEND``, ``HOLD``,
    ``DISCARD``, ``REDIRECT``, ``BCC``, ``WARN``, ``INFO``, ``FILTER``), ``CODE``
    for a numeric ``4NN``/``5NN`` reply, or ``UNKNOWN``.
    """

    kind: str
    text: str = ""
    code: int | None = None
    enhanced: str | None = None


KEYWORDS = frozenset({
    "OK", "REJECT", "DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT", "DUNNO", "PREPEND",
    "HOLD", "DISCARD", "REDIRECT", "BCC", "WARN", "INFO", "FILTER",
})
_CODE = re.compile(r"([45])(\d\d)(?:\s+|\Z)(.*)\Z", re.S)
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|\Z)(.*)\Z", re.S)
_NUMBER = re.compile(r"\d+(?:\s|\Z)")


def split_enhanced(text: str) -> tuple[str | None, str]:
    """(enhanced status code or None, the rest) of a reply text."""
    m = _ENHANCED.match(text)
    if m:
        return f"{m[1]}.{m[2]}.{m[3]}", m[4]
    return None, text


def parse_action(value: str) -> PolicyAction:
    """The ``action=`` value as Postfix reads it: a keyword (any case) and its
    text, or ``4NN``/``5NN`` with an optional enhanced code (which must be of the
    same class as the reply code, else it is left to the default)."""
    value = value.strip()
    m = _CODE.match(value)
    if m:
        code = int(m[1] + m[2])
        enhanced, text = split_enhanced(m[3].strip())
        if enhanced is not None and enhanced[0] != m[1]:
            enhanced = None
        return PolicyAction("CODE", text.strip(), code, enhanced)
    if _NUMBER.match(value):
        return PolicyAction("UNKNOWN", value)
    keyword, _, text = value.partition(" ")
    keyword = keyword.upper()
    if keyword not in KEYWORDS:
        return PolicyAction("UNKNOWN", value)
    text = text.strip()
    if keyword in ("PREPEND", "REDIRECT", "BCC", "FILTER") and not text:
        return PolicyAction("UNKNOWN", value)  # these need their argument
    return PolicyAction(keyword, text)


def parse_header(text: str) -> tuple[str, str] | None:
    """``PREPEND Name: value`` -> (name, value); ``None`` if it is no header."""
    name, colon, value = text.partition(":")
    if not colon or not re.fullmatch(r"[\x21-\x39\x3b-\x7e]+", name):
        return None
    return name, value.strip()
