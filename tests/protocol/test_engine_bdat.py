"""BDAT (RFC 3030 CHUNKING): exact octet counts, LAST, refused chunks still consumed."""

from __future__ import annotations

import pytest
from engine_helpers import (
    Driver,
    bad,
    content,
    data_ends,
    in_transaction,
    ready,
    without_chunks,
)

from appliance.protocol import (
    Bdat,
    ConnectionClosed,
    DataChunk,
    DataEnd,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    State,
)

BINARY = bytes(range(256)) + b"\r\n.\r\n\n.\n\x00" + bytes(range(255, -1, -1))


def test_single_last_chunk():
    d = in_transaction()
    events = d.feed(b"BDAT 5 LAST\r\nhelloQUIT\r\n")
    assert events == [Bdat(5, True), DataChunk(b"hello"), DataEnd(last=True), Quit()]
    assert d.replies[-2].code == 250


def test_last_is_case_insensitive():
    assert in_transaction().feed(b"bdat 1 last\r\nx")[0] == Bdat(1, True)


def test_binary_content_passes_untouched():
    d = in_transaction()
    events = d.feed(b"BDAT %d LAST\r\n" % len(BINARY) + BINARY + b"NOOP\r\n")
    assert content(events) == BINARY
    assert without_chunks(events) == [Bdat(len(BINARY), True), DataEnd(), Noop()]


def test_several_chunks():
    d = in_transaction()
    events = d.feed(b"BDAT 3\r\nabc", b"BDAT 4\r\ndefg", b"BDAT 2 LAST\r\nhi")
    assert without_chunks(events) == [Bdat(3, False), DataEnd(last=False), Bdat(4, False),
                                      DataEnd(last=False), Bdat(2, True), DataEnd()]
    assert content(events) == b"abcdefghi"
    assert d.conn.state is State.READY
    assert (d.conn.mail_from_accepted, d.conn.accepted_rcpts) == (False, 0)


def test_state_during_and_between_chunks():
    d = in_transaction()
    d.feed(b"BDAT 10\r\nabc")
    assert (d.conn.state, d.conn.in_data) == (State.BDAT, True)
    d.feed(b"defghij")
    assert (d.conn.state, d.conn.in_data) == (State.BDAT, False)
    assert d.conn.accepted_rcpts == 1


@pytest.mark.parametrize("last", [b"", b" LAST"])
def test_zero_size_chunk(last):
    d = in_transaction()
    events = d.feed(b"BDAT 0" + last + b"\r\nNOOP\r\n")
    assert events == [Bdat(0, bool(last)), DataEnd(last=bool(last)), Noop()]


def test_chunk_fed_in_pieces_keeps_the_buffer_empty():
    d = in_transaction()
    payload = bytes(range(256)) * 1024  # 256 KiB
    d.feed(b"BDAT %d LAST\r\n" % len(payload))
    for i in range(0, len(payload), 10000):
        d.feed(payload[i:i + 10000])
        assert d.conn.buffered == 0
    assert content(d.events) == payload
    assert data_ends(d.events) == [DataEnd()]


def test_chunk_and_following_commands_in_one_read():
    d = in_transaction()
    events = d.feed(b"BDAT 8\r\nRSET\r\n\r\nBDAT 6 LAST\r\nQUIT\r\nQUIT\r\n")
    assert content(events) == b"RSET\r\n\r\nQUIT\r\n"
    assert without_chunks(events)[-1] == Quit()


def test_bdat_with_binarymime():
    d = ready(binarymime=True)
    d.feed(b"MAIL FROM:<a@example.com> BODY=BINARYMIME\r\nRCPT TO:<b@example.com>\r\n")
    assert d.feed(b"BDAT 1 LAST\r\n\x00") == [Bdat(1, True), DataChunk(b"\x00"), DataEnd()]


# --- refused chunks are consumed -----------------------------------------------------


@pytest.mark.parametrize("prelude", [
    b"",
    b"EHLO x\r\n",
    b"EHLO x\r\nMAIL FROM:<a@example.com>\r\n",
])
def test_out_of_sequence_bdat_is_consumed(prelude):
    d = Driver()
    d.feed(prelude)
    events = d.feed(b"BDAT 12\r\nQUIT\r\nQUIT\r\nNOOP\r\n")
    assert bad(events) == [(503, "5.5.1")]
    assert events[-1] == Noop()
    assert not any(isinstance(e, DataChunk | Bdat | Quit) for e in events)


def test_refused_rcpts_then_bdat_is_consumed():
    d = ready(answers={Rcpt: Reply(550, "5.1.1", "No")})
    d.feed(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
    events = d.feed(b"BDAT 6 LAST\r\n", b"QUIT\r\n", b"NOOP\r\n")
    assert bad(events) == [(503, "5.5.1")]
    assert events[-1] == Noop()


def test_failed_chunk_refuses_the_rest_of_the_pipeline():
    d = in_transaction(answers={DataEnd: Reply(552, "5.3.4", "Too big")})
    events = d.feed(b"BDAT 3\r\nabcBDAT 3\r\ndefBDAT 3 LAST\r\nghiRSET\r\n")
    assert without_chunks(events)[:2] == [Bdat(3, False), DataEnd(last=False)]
    assert bad(events) == [(503, "5.5.1"), (503, "5.5.1")]
    assert content(events) == b"abc"
    assert events[-1] == Rset()
    d.answers[DataEnd] = Reply(250, "2.0.0", "Ok")
    more = d.feed(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                  b"BDAT 2 LAST\r\nok")
    assert content(more) == b"ok"


def test_refused_last_chunk_clears_the_transaction():
    d = in_transaction(answers={DataEnd: Reply(554, "5.7.1", "No")})
    d.feed(b"BDAT 1 LAST\r\nx")
    assert d.conn.state is State.READY
    assert bad(d.feed(b"BDAT 1 LAST\r\ny")) == [(503, "5.5.1")]


def test_refused_bdat_memory_stays_bounded():
    d = ready()
    d.feed(b"BDAT 10000000\r\n")
    for _ in range(152):
        d.feed(b"z" * 65536)
        assert d.conn.buffered == 0
    events = d.feed(b"z" * (10000000 - 152 * 65536) + b"NOOP\r\n")
    assert bad(events) == [(503, "5.5.1")]
    assert events[-1] == Noop()


# --- syntax --------------------------------------------------------------------------


@pytest.mark.parametrize("line", [b"BDAT", b"BDAT x", b"BDAT -1", b"BDAT 1.0", b"BDAT 10 NOW",
                                  b"BDAT 1 LAST x", b"BDAT LAST",
                                  b"BDAT %d" % (2**53 + 1)])
def test_bad_bdat_syntax_consumes_nothing(line):
    d = in_transaction()
    events = d.feed(line + b"\r\nNOOP\r\n")
    assert bad(events) == [(501, "5.5.4")]
    assert events[-1] == Noop()
    assert d.conn.state is State.RCPT


def test_largest_bdat_size():
    d = in_transaction()
    assert d.feed(b"BDAT %d\r\n" % 2**53) == [Bdat(2**53, False)]
    assert d.conn.in_data


# --- sequencing inside a BDAT transaction --------------------------------------------


@pytest.mark.parametrize(("line", "code"), [
    (b"DATA", (503, "5.5.1")),
    (b"MAIL FROM:<a@example.com>", (503, "5.5.1")),
    (b"RCPT TO:<c@example.com>", (503, "5.5.1")),
    (b"AUTH PLAIN", (503, "5.5.1")),
    (b"STARTTLS", (503, "5.5.1")),
])
def test_commands_refused_between_chunks(line, code):
    d = in_transaction()
    d.feed(b"BDAT 2\r\nab")
    assert d.conn.state is State.BDAT
    assert bad(d.feed(line + b"\r\n")) == [code]
    assert d.conn.state is State.BDAT


def test_rset_and_ehlo_between_chunks():
    d = in_transaction()
    d.feed(b"BDAT 2\r\nab")
    d.feed(b"RSET\r\n")
    assert d.conn.state is State.READY
    d = in_transaction()
    d.feed(b"BDAT 2\r\nab")
    d.feed(b"EHLO x\r\n")
    assert d.conn.state is State.READY
    assert d.feed(b"MAIL FROM:<>\r\n") == [Mail("")]


def test_eof_inside_a_chunk():
    d = in_transaction()
    d.feed(b"BDAT 10 LAST\r\nabc")
    assert d.close() == [ConnectionClosed()]
