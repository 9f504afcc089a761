"""Message content: DATA text (dot-stuffed, CRLF.CRLF-terminated) and BDAT chunks.

Both readers work on the connection's whole receive buffer with C-level bytes
operations (find, replace, count, split); nothing loops over lines in Python.

DATA framing rules (RFC 5321 4.1.1.4, 4.5.2; the 2023 "SMTP smuggling" advisories):

* Only the raw sequence ``<CRLF>.<CRLF>`` ends the text. The first CRLF may be the
  DATA command's own, so a "." line as the very first line ends an empty message.
  ``<LF>.<LF>``, ``<CR>.<CR>``, ``<LF>.<CRLF>``, ``<CRLF>.<LF>`` ... are content.
* A line starting with "." after a real CRLF (or at the start) loses that dot.
* A bare CR or bare LF is an error under "reject" (DataEnd.error 550 5.6.0) and is
  turned into CRLF under "normalize".
* A text line longer than ``max_line`` octets including CRLF, counted after
  unstuffing (4.5.3.1.6), is an error (DataEnd.error 500 5.5.6); ``None``: no limit.

After an error the rest of the text is only scanned for the terminator, never kept.
"""

from __future__ import annotations

import re

from appliance.protocol.events import Reply

TERMINATOR = b"\r\n.\r\n"
#: Proper prefixes of the terminator, longest first: a buffer ending in one of them
#: keeps it back until the next bytes say whether the terminator is complete.
_TAILS = (b"\r\n.\r", b"\r\n.", b"\r\n", b"\r")

BARE_CR_LF = Reply(550, "5.6.0", "Message contains bare CR or LF characters")
TEXT_LINE_TOO_LONG = Reply(500, "5.5.6", "Line too long")

_CR_NOT_LF = re.compile(rb"\r(?!\n)")  # fast: sre scans for the literal CR


def _held_back(buf: bytearray) -> int:
    for tail in _TAILS:
        if buf.endswith(tail):
            return len(tail)
    return 0


class DotReader:
    """Reads DATA text after the 354."""

    last = True

    def __init__(self, *, max_line: int | None, normalize: bool) -> None:
        self._max_line = max_line
        self._normalize = normalize
        self._at_start = True  # buf[0] is the first octet of the text: a CRLF precedes it
        self._run = 0  # octets of the current, unfinished line already passed on
        self.error: Reply | None = None

    def step(self, buf: bytearray) -> tuple[bytes | None, bool]:
        """Consume what can be decided from ``buf``; return (content or None, ended)."""
        if self._at_start:
            if buf[:3] == b".\r\n":
                del buf[:3]
                return None, True
            if b".\r\n".startswith(buf):  # b"", b".", b".\r": wait
                return None, False
        # Every terminator starts with CRLF ".": no such line, no terminator.
        dot = buf.find(b"\r\n.")
        end = buf.find(TERMINATOR, dot) if dot >= 0 else -1
        if end >= 0:
            cut, skip = end + 2, 3  # keep the last line's CRLF, drop ".\r\n"
        else:
            cut, skip = len(buf) - _held_back(buf), 0
        if cut == 0:
            del buf[:skip]
            return None, end >= 0
        with memoryview(buf) as view:
            segment = bytes(view[:cut])
        del buf[:cut + skip]
        return self._content(segment, 0 <= dot < cut), end >= 0

    def _content(self, seg: bytes, dotted: bool) -> bytes | None:
        at_start, self._at_start = self._at_start, False
        if self.error is not None:
            return None
        # A segment never ends in a CR that a LF follows, never starts with a dot that a
        # CRLF in an earlier segment precedes (see _TAILS): all checks are local.
        if at_start and seg.startswith(b"."):
            seg = seg[1:]
        if dotted:
            seg = b"\r\n".join(seg.split(b"\r\n."))  # twice as fast as replace()
        cr = seg.count(b"\r")
        # No bare CR/LF <=> as many CR as LF and every CR followed by LF.
        if cr != seg.count(b"\n") or (cr and _CR_NOT_LF.search(seg)):
            if not self._normalize:
                self.error = BARE_CR_LF
                return None
            seg = seg.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        if self._max_line is not None and not self._lines_fit(seg):
            self.error = TEXT_LINE_TOO_LONG
            return None
        return seg

    def _lines_fit(self, seg: bytes) -> bool:
        """Track line lengths; every line end in ``seg`` is CRLF by now.

        Complete lines between the first and the last LF are checked by probing
        aligned blocks of half the limit for a LF: a line of ``limit`` octets or more
        always covers one whole block. Only a block without LF costs an exact look.
        """
        limit = self._max_line
        first = seg.find(b"\n")
        if first < 0:
            self._run += len(seg)
            return self._run + 2 <= limit
        if self._run + first + 1 > limit:
            return False
        last = seg.rfind(b"\n")
        self._run = len(seg) - last - 1
        if self._run + 2 > limit:
            return False
        half = limit // 2
        find = seg.find
        for p in range(first + 1, last + 1 - half, half):
            if find(b"\n", p, p + half) < 0:  # a long line, maybe too long
                start = seg.rfind(b"\n", 0, p) + 1
                if find(b"\n", p + half) + 1 - start > limit:
                    return False
        return True


class ChunkReader:
    """Reads exactly ``size`` raw octets after a BDAT line (RFC 3030): no unstuffing,
    no line rules. With ``refusal`` set the octets are consumed and dropped."""

    error = None

    def __init__(self, size: int, last: bool, refusal: Reply | None) -> None:
        self.remaining = size
        self.last = last
        self.refusal = refusal

    def step(self, buf: bytearray) -> tuple[bytes | None, bool]:
        n = min(self.remaining, len(buf))
        data = None
        if n:
            if self.refusal is None:
                with memoryview(buf) as view:
                    data = bytes(view[:n])
            del buf[:n]
            self.remaining -= n
        return data, self.remaining == 0
