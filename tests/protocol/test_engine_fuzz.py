"""Property tests: arbitrary input never breaks the engine; message content round-trips
exactly whatever the read boundaries."""

from __future__ import annotations

import re

from engine_helpers import Driver, content, data_ends, in_transaction, stuff, without_chunks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.protocol import (
    Auth,
    AuthResponse,
    Bdat,
    Data,
    DataEnd,
    Expn,
    Helo,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    StartTLS,
    State,
    Vrfy,
)

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

VOCABULARY = [
    b"EHLO x\r\n", b"HELO y\n", b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<> BODY=BINARYMIME SMTPUTF8\r\n", b"RCPT TO:<d@e.example> NOTIFY=NEVER\r\n",
    b"DATA\r\n", b"BDAT 5\r\n", b"BDAT 3 LAST\r\n", b"BDAT 0 LAST\r\n", b"BDAT x\r\n",
    b".\r\n", b"\r\n.\r\n", b"..\r\n", b"\n.\n", b"\r", b"\n", b"\r\n", b".", b"\x00",
    b"AUTH LOGIN\r\n", b"AUTH PLAIN =\r\n", b"*\r\n", b"STARTTLS\r\n", b"RSET\r\n",
    b"NOOP\r\n", b"VRFY a\r\n", b"QUIT\r\n", b"x" * 70, b"\xc3\xa9\xff",
]

#: Replies a session might give, accepting or refusing.
CHOICES: dict[type, list[Reply]] = {
    Helo: [Reply(250, None, "hi"), Reply(550, None, "no")],
    Mail: [Reply(250, "2.1.0", "Ok"), Reply(550, "5.7.1", "no")],
    Rcpt: [Reply(250, "2.1.5", "Ok"), Reply(550, "5.1.1", "no")],
    Data: [Reply(354, None, "go"), Reply(554, "5.5.1", "no")],
    DataEnd: [Reply(250, "2.0.0", "Ok"), Reply(552, "5.3.4", "too big")],
    Auth: [Reply(334, None, ""), Reply(235, "2.7.0", "Ok"), Reply(535, "5.7.8", "no")],
    AuthResponse: [Reply(334, None, ""), Reply(235, "2.7.0", "Ok"), Reply(535, "5.7.8", "no")],
    StartTLS: [Reply(220, "2.0.0", "go"), Reply(454, "4.7.0", "no")],
    Quit: [Reply(221, "2.0.0", "bye"), Reply(421, "4.3.2", "bye")],
    Rset: [Reply(250, "2.0.0", "Ok")],
    Noop: [Reply(250, "2.0.0", "Ok"), Reply(421, "4.4.2", "timeout")],
    Help: [Reply(214, "2.0.0", "help")],
    Vrfy: [Reply(252, "2.5.2", "maybe")],
    Expn: [Reply(502, "5.5.1", "no")],
}

LIMITS = dict(max_command_line=64, max_auth_line=96, max_text_line=80)
BOUND = max(LIMITS.values())


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def _check_invariants(d: Driver) -> None:
    conn = d.conn
    if conn.closed:
        assert conn.buffered == 0
        return
    assert conn.buffered < BOUND, conn.buffered
    in_transaction_states = (State.MAIL, State.RCPT, State.DATA, State.BDAT)
    assert conn.mail_from_accepted == (conn.state in in_transaction_states)
    assert (conn.accepted_rcpts > 0) == (conn.state in (State.RCPT, State.DATA, State.BDAT))


def _run_stream(data, stream: bytes, cuts: list[int], policy: str) -> None:
    answers = {t: (lambda e, opts=opts: data.draw(st.sampled_from(opts)))
               for t, opts in CHOICES.items()}
    d = Driver(answers=answers, auto_tls=True, bare_linefeed=policy, binarymime=True,
               **LIMITS)
    for piece in _split(stream, cuts):
        d.feed(piece)
        _check_invariants(d)
        if d.conn.closed:
            break
    d.close()
    assert d.conn.closed


PRELUDES = [b"", b"EHLO x\r\n", b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"]


@SETTINGS
@given(st.data(), st.sampled_from(PRELUDES),
       st.lists(st.sampled_from(VOCABULARY) | st.binary(max_size=40), max_size=60),
       st.lists(st.integers(min_value=0), max_size=30), st.sampled_from(["reject", "normalize"]))
def test_smtp_like_streams_never_break_the_engine(data, prelude, tokens, cuts, policy):
    _run_stream(data, prelude + b"".join(tokens), cuts, policy)


@SETTINGS
@given(st.data(), st.binary(max_size=3000), st.lists(st.integers(min_value=0), max_size=30),
       st.sampled_from(["reject", "normalize"]))
def test_random_bytes_never_break_the_engine(data, stream, cuts, policy):
    _run_stream(data, b"EHLO x\r\n" + stream, cuts, policy)


@SETTINGS
@given(st.lists(st.integers(min_value=0), max_size=20))
def test_flood_without_line_ends_stays_bounded(cuts):
    d = in_transaction(**LIMITS)
    for piece in _split(b"A" * 20000, cuts):
        d.feed(piece)
        assert d.conn.buffered < BOUND
    d.feed(b"\r\nNOOP\r\n")
    assert d.events[-1] == Noop()


# --- round trips ---------------------------------------------------------------------

CLEAN_LINE = st.text(alphabet="a. \x00\xff\x7f", max_size=60).map(lambda s: s.encode("latin-1"))
#: Lines with bare CR and LF, but no CRLF (that would be a line break).
DIRTY_LINE = st.text(alphabet="a.\r\n", max_size=30).map(
    lambda s: s.encode("latin-1")).filter(lambda b: b"\r\n" not in b)


def _body(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\r\n" for line in lines)


def _send(body_wire: bytes, cuts: list[int], policy: str):
    d = in_transaction(bare_linefeed=policy)
    assert d.feed(b"DATA\r\n") == [Data()]
    return d.feed(*_split(body_wire + b"QUIT\r\n", cuts))


@SETTINGS
@given(st.lists(CLEAN_LINE, max_size=40), st.lists(st.integers(min_value=0), max_size=20),
       st.sampled_from(["reject", "normalize"]))
def test_dot_stuffed_bodies_round_trip(lines, cuts, policy):
    body = _body(lines)
    events = _send(stuff(body), cuts, policy)
    assert content(events) == body
    assert without_chunks(events) == [DataEnd(), Quit()]


@SETTINGS
@given(st.lists(DIRTY_LINE, max_size=30), st.lists(st.integers(min_value=0), max_size=20))
def test_bare_line_ends_normalize_and_never_end_the_message(lines, cuts):
    body = _body(lines)
    events = _send(stuff(body), cuts, "normalize")
    assert content(events) == re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    assert without_chunks(events) == [DataEnd(), Quit()]


@SETTINGS
@given(st.lists(DIRTY_LINE, max_size=30), st.lists(st.integers(min_value=0), max_size=20))
def test_bare_line_ends_reject_and_never_end_the_message(lines, cuts):
    body = _body(lines)
    events = _send(stuff(body), cuts, "reject")
    dirty = re.search(rb"\r(?!\n)|(?<!\r)\n", body) is not None
    assert len(data_ends(events)) == 1
    assert (data_ends(events)[0].error is not None) == dirty
    assert events[-1] == Quit()


@SETTINGS
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6),
       st.lists(st.integers(min_value=0), max_size=20))
def test_bdat_chunks_round_trip(chunks, cuts):
    wire = b"".join(b"BDAT %d%s\r\n" % (len(c), b" LAST" if i == len(chunks) - 1 else b"") + c
                    for i, c in enumerate(chunks))
    d = in_transaction()
    events = d.feed(*_split(wire + b"QUIT\r\n", cuts))
    assert content(events) == b"".join(chunks)
    expected = []
    for i, c in enumerate(chunks):
        last = i == len(chunks) - 1
        expected += [Bdat(len(c), last), DataEnd(last=last)]
    assert without_chunks(events) == expected + [Quit()]
