"""DATA text: framing, dot-unstuffing, text line limit, bare CR/LF, read boundaries."""

from __future__ import annotations

import pytest
from engine_helpers import (
    bad,
    content,
    data_ends,
    in_transaction,
    stuff,
    without_chunks,
)

from appliance.protocol import (
    ConnectionClosed,
    Data,
    DataChunk,
    DataEnd,
    Mail,
    Noop,
    Quit,
    Reply,
    State,
)

LINE_TOO_LONG = Reply(500, "5.5.6", "Line too long")
BARE = Reply(550, "5.6.0", "Message contains bare CR or LF characters")


def send_data(text: bytes, *pieces_after: bytes, **kwargs):
    """DATA accepted, then ``text`` (as one read, or split in ``pieces_after``)."""
    d = in_transaction(**kwargs)
    assert d.feed(b"DATA\r\n") == [Data()]
    return d, d.feed(text, *pieces_after)


# --- framing and unstuffing ----------------------------------------------------------


def test_simple_message():
    d, events = send_data(b"Subject: hi\r\n\r\nHello\r\n.\r\n")
    assert content(events) == b"Subject: hi\r\n\r\nHello\r\n"
    assert without_chunks(events) == [DataEnd()]
    assert d.replies[-1].code == 250


def test_empty_message():
    d, events = send_data(b".\r\nNOOP\r\n")
    assert events == [DataEnd(), Noop()]


def test_empty_line_message():
    _, events = send_data(b"\r\n.\r\n")
    assert events == [DataChunk(b"\r\n"), DataEnd()]


@pytest.mark.parametrize(("wire", "text"), [
    (b"..\r\n.\r\n", b".\r\n"),
    (b".x\r\n.\r\n", b"x\r\n"),
    (b"...\r\n.\r\n", b"..\r\n"),
    (b"a\r\n..\r\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n"),
    (b"a\r\n...\r\n.\r\n", b"a\r\n..\r\n"),
    (b"a\r\n.b.c\r\n..d\r\n.\r\n", b"a\r\nb.c\r\n.d\r\n"),
    (b"a.\r\nb .\r\n.\r\n", b"a.\r\nb .\r\n"),
    (b"a\r\n.\r\r\n.\r\n", None),  # ".<CR><CR><LF>" is not the end (bare CR)
])
def test_dot_unstuffing(wire, text):
    _, events = send_data(wire)
    assert len(data_ends(events)) == 1
    if text is None:
        assert data_ends(events)[0].error == BARE
    else:
        assert content(events) == text
        assert data_ends(events)[0].error is None


def test_text_after_the_end_is_commands():
    d, events = send_data(b"x\r\n.\r\nMAIL FROM:<a@example.com>\r\nQUIT\r\n")
    assert without_chunks(events) == [DataEnd(), Mail("a@example.com"), Quit()]


def test_data_command_and_text_in_one_read():
    d = in_transaction()
    events = d.feed(b"DATA\r\nline\r\n.\r\nQUIT\r\n")
    assert without_chunks(events) == [Data(), DataEnd(), Quit()]
    assert content(events) == b"line\r\n"


def test_data_command_and_text_when_data_is_refused():
    d = in_transaction(answers={Data: Reply(554, "5.7.1", "No")})
    events = d.feed(b"DATA\r\nline\r\n.\r\n")
    assert events[0] == Data()
    assert bad(events) == [(500, "5.5.2"), (500, "5.5.2")]


def test_chunks_are_what_was_received_not_lines():
    body = b"".join(b"line %05d\r\n" % i for i in range(20000))  # ~240 KB
    wire = stuff(body)
    pieces = [wire[i:i + 65536] for i in range(0, len(wire), 65536)]
    _, events = send_data(*pieces)
    chunks = [e for e in events if isinstance(e, DataChunk)]
    assert len(chunks) <= len(pieces)
    assert b"".join(c.data for c in chunks) == body


def test_buffer_holds_at_most_a_terminator_prefix():
    d = in_transaction()
    d.feed(b"DATA\r\n")
    for piece in (b"abc\r", b"\n", b"def\r\n", b".", b"x\r\n.", b".y\r", b"\n"):
        d.feed(piece)
        assert d.conn.buffered <= 4
    assert d.conn.buffered == 2  # b"\r\n" might still start the terminator
    d.feed(b".\r\n")
    assert content(d.events) == b"abc\r\ndef\r\nx\r\n.y\r\n"
    assert data_ends(d.events) == [DataEnd()]


def test_content_at_every_split_offset():
    wire = b"..a\r\nb\r\n..\r\n\r\n.c\r\nlast\r\n.\r\nNOOP\r\n"
    _, whole = send_data(wire)
    assert content(whole) == b".a\r\nb\r\n.\r\n\r\nc\r\nlast\r\n"
    assert without_chunks(whole) == [DataEnd(), Noop()]
    for i in range(1, len(wire)):
        _, events = send_data(wire[:i], wire[i:])
        assert content(events) == content(whole), i
        assert without_chunks(events) == without_chunks(whole), i


@pytest.mark.parametrize("policy", ["reject", "normalize"])
def test_every_byte_in_its_own_read(policy):
    wire = b".\r\n"
    _, events = send_data(*[bytes([b]) for b in wire], bare_linefeed=policy)
    assert events == [DataEnd()]
    wire = b"a\r\n..b\r\n\r\n.\r\nNOOP\r\n"
    _, events = send_data(*[bytes([b]) for b in wire], bare_linefeed=policy)
    assert content(events) == b"a\r\n.b\r\n\r\n"
    assert without_chunks(events) == [DataEnd(), Noop()]


@pytest.mark.parametrize("split", range(1, 6))
def test_terminator_split_over_three_reads(split):
    wire = b"x\r\n.\r\n"
    _, events = send_data(b"x", wire[1:split + 1], wire[split + 1:])
    assert content(events) == b"x\r\n"
    assert data_ends(events) == [DataEnd()]


# --- text line limit -----------------------------------------------------------------


def _line(total: int) -> bytes:
    return b"L" * (total - 2) + b"\r\n"


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_text_line_at_limit(where):
    line = _line(1000)
    text = {"first": line + b"a\r\n", "middle": b"a\r\n" + line + b"b\r\n",
            "last": b"a\r\n" + line}[where]
    _, events = send_data(text + b".\r\n")
    assert data_ends(events) == [DataEnd()]
    assert content(events) == text


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_text_line_over_limit(where):
    line = _line(1001)
    text = {"first": line + b"a\r\n", "middle": b"a\r\n" + line + b"b\r\n",
            "last": b"a\r\n" + line}[where]
    d, events = send_data(text + b".\r\nNOOP\r\n")
    assert without_chunks(events) == [DataEnd(error=LINE_TOO_LONG), Noop()]
    assert d.conn.state is State.READY


def test_text_line_limit_counts_after_unstuffing():
    wire = b"." + _line(1000)  # 1001 octets on the wire, 1000 in the message
    _, events = send_data(wire + b".\r\n")
    assert data_ends(events) == [DataEnd()]
    _, events = send_data(b"." + _line(1001) + b".\r\n")
    assert data_ends(events) == [DataEnd(error=LINE_TOO_LONG)]


@pytest.mark.parametrize("size", [1000, 1001])
def test_text_line_limit_across_reads(size):
    line = _line(size)
    pieces = [b"head\r\n" + line[:300], line[300:700], line[700:], b"tail\r\n.\r\n"]
    _, events = send_data(*pieces)
    expected = DataEnd() if size == 1000 else DataEnd(error=LINE_TOO_LONG)
    assert data_ends(events) == [expected]


@pytest.mark.parametrize("size", [1000, 1001])
def test_text_line_limit_at_every_split(size):
    text = b"a\r\n" + _line(size) + b"b\r\n"
    for i in range(0, len(text), 37):
        _, events = send_data(text[:i], text[i:], b".\r\n")
        assert len(data_ends(events)) == 1
        assert (data_ends(events)[0].error is None) == (size == 1000), i


def test_text_line_limit_is_configurable():
    _, events = send_data(_line(80) + b".\r\n", max_text_line=80)
    assert data_ends(events) == [DataEnd()]
    _, events = send_data(_line(81) + b".\r\n", max_text_line=80)
    assert data_ends(events) == [DataEnd(error=LINE_TOO_LONG)]


@pytest.mark.parametrize("limit", [1000, 4096, 65536])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_text_line_limit_exact_boundary(limit, where):
    """The limit itself is accepted, one octet more is refused (CRLF included)."""
    for size, error in ((limit, None), (limit + 1, LINE_TOO_LONG)):
        line = _line(size)
        text = {"first": line + b"a\r\n", "middle": b"a\r\n" + line + b"b\r\n",
                "last": b"a\r\n" + line}[where]
        d, events = send_data(text + b".\r\nNOOP\r\n", max_text_line=limit)
        assert without_chunks(events) == [DataEnd(error=error), Noop()], size
        assert d.conn.state is State.READY


def test_text_line_without_limit():
    """``max_text_line=None``: any line length, as Postfix's smtpd; memory stays
    bounded since lines are passed on as they arrive."""
    d = in_transaction(max_text_line=None)
    d.feed(b"DATA\r\nSubject: x\r\n\r\n")
    for _ in range(32):  # a 2 MiB line
        d.feed(b"q" * 65536)
        assert d.conn.buffered <= 4
    events = d.feed(b"\r\nend\r\n.\r\n")
    assert data_ends(events) == [DataEnd()]
    assert content(d.events) == b"Subject: x\r\n\r\n" + b"q" * 2**21 + b"\r\nend\r\n"


def test_long_line_among_short_lines_in_one_read():
    short = b"".join(b"%d\r\n" % i for i in range(5000))
    for size, error in ((1000, None), (1001, LINE_TOO_LONG), (5000, LINE_TOO_LONG)):
        _, events = send_data(short + _line(size) + short + b".\r\n")
        assert data_ends(events) == [DataEnd(error=error)], size


def test_huge_text_line_keeps_memory_bounded():
    d = in_transaction()
    d.feed(b"DATA\r\nSubject: x\r\n\r\n")
    piece = b"q" * 65536
    for _ in range(160):  # 10 MiB without a line end
        d.feed(piece)
        assert d.conn.buffered <= 4
    events = d.feed(b"\r\n.\r\nNOOP\r\n")
    assert without_chunks(events) == [DataEnd(error=LINE_TOO_LONG), Noop()]
    emitted = content(d.events)
    assert len(emitted) < 2000  # nothing is passed on after the error


# --- bare CR / bare LF ---------------------------------------------------------------

BARE_TEXTS = [
    b"a\nb\r\n",
    b"a\rb\r\n",
    b"a\r\r\n",
    b"\nfirst\r\n",
    b"a\r\n\n",
    b"a\n\r\n",
    b"x\r\n\r",
]


@pytest.mark.parametrize("text", BARE_TEXTS)
def test_bare_cr_lf_rejected(text):
    d, events = send_data(text + b"more\r\n.\r\nNOOP\r\n")
    assert without_chunks(events) == [DataEnd(error=BARE), Noop()]
    assert b"more" not in content(events)


@pytest.mark.parametrize(("text", "normalized"), [
    (b"a\nb\r\n", b"a\r\nb\r\n"),
    (b"a\rb\r\n", b"a\r\nb\r\n"),
    (b"a\r\r\n", b"a\r\n\r\n"),
    (b"\nfirst\r\n", b"\r\nfirst\r\n"),
    (b"a\r\n\n", b"a\r\n\r\n"),
    (b"a\n\r\n", b"a\r\n\r\n"),
    (b"x\r\n\r", b"x\r\n\r\n"),
    (b"a\n\nb\r\r\r\n", b"a\r\n\r\nb\r\n\r\n\r\n"),
])
def test_bare_cr_lf_normalized(text, normalized):
    _, events = send_data(text + b"more\r\n.\r\nNOOP\r\n", bare_linefeed="normalize")
    assert without_chunks(events) == [DataEnd(), Noop()]
    assert content(events) == normalized + b"more\r\n"


@pytest.mark.parametrize("text", BARE_TEXTS)
def test_bare_cr_lf_at_every_split(text):
    wire = b"ok\r\n" + text + b"end\r\n.\r\n"
    for policy in ("reject", "normalize"):
        _, whole = send_data(wire, bare_linefeed=policy)
        for i in range(1, len(wire)):
            _, events = send_data(wire[:i], wire[i:], bare_linefeed=policy)
            assert data_ends(events) == data_ends(whole), (policy, i)
            if policy == "normalize":
                assert content(events) == content(whole), i


def test_normalized_line_length_is_checked():
    text = b"L" * 600 + b"\n" + b"M" * 600 + b"\r\n"
    _, events = send_data(text + b".\r\n", bare_linefeed="normalize")
    assert data_ends(events) == [DataEnd()]
    _, events = send_data(b"L" * 1200 + b"\n\r\n.\r\n", bare_linefeed="normalize")
    assert data_ends(events)[0].error == LINE_TOO_LONG


def test_first_error_wins():
    _, events = send_data(b"a\nb\r\n", _line(2000) + b".\r\n")
    assert data_ends(events) == [DataEnd(error=BARE)]
    _, events = send_data(_line(2000), b"a\nb\r\n.\r\n")
    assert data_ends(events) == [DataEnd(error=LINE_TOO_LONG)]


def test_eof_in_data():
    d, events = send_data(b"partial\r\n")
    assert d.close() == [ConnectionClosed()]
    assert d.conn.closed
