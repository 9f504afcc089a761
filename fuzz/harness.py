"""What every fuzz harness shares: the reply check and the runner.

``python fuzz/fuzz_NAME.py [libFuzzer flags] DIR...`` fuzzes under atheris (the
``fuzz`` extra); ``python fuzz/fuzz_NAME.py --replay DIR...`` runs every file in the
directories once, without atheris (what tests/unit/test_fuzz_corpus.py does).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

#: A reply line: three digits, a separator, printable text (RFC 5321 4.2).
_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])([^\r\n\x00]*)")
#: RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF.
MAX_REPLY_LINE = 512


def check_reply(wire: bytes, max_line: int | None = MAX_REPLY_LINE) -> None:
    """One rendered reply: CRLF after every line, one code, ``-`` on every line but
    the last, no line longer than ``max_line`` octets, no CR, LF or NUL inside a line."""
    assert wire.endswith(b"\r\n"), wire
    lines = wire[:-2].split(b"\r\n")
    codes = set()
    for i, line in enumerate(lines):
        m = _REPLY_LINE.fullmatch(line)
        assert m, f"malformed reply line {line!r}"
        assert max_line is None or len(line) + 2 <= max_line, f"a {len(line) + 2}-octet line"
        assert m[2] == (b" " if i == len(lines) - 1 else b"-"), wire
        codes.add(m[1])
    assert len(codes) == 1, wire


def check_reply_text(code: int, enhanced: str | None, text: str | None) -> None:
    """A text from a peer (milter, policy server) as the SMTP client would get it.
    Its length is the peer's choice (see docs/selftest.md)."""
    from appliance.protocol import Reply

    check_reply(Reply(code, enhanced, text or "").render(), max_line=None)


def replay(one_input: Callable[[bytes], None], dirs: list[str]) -> int:
    count = 0
    for d in dirs:
        for path in sorted(Path(d).iterdir()):
            if path.is_file():
                one_input(path.read_bytes())
                count += 1
    return count


def main(one_input: Callable[[bytes], None]) -> None:
    if sys.argv[1:2] == ["--replay"]:
        print(f"replayed {replay(one_input, sys.argv[2:])} inputs")
        return
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
