"""Sequencing and the reply-driven transition table."""

from __future__ import annotations

import pytest
from engine_helpers import Driver, bad, in_transaction, ready

from appliance.protocol import (
    NEED_DATA,
    Auth,
    AuthResponse,
    ConnectionClosed,
    Data,
    DataEnd,
    Expn,
    Helo,
    Help,
    LocalProtocolError,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    SMTPConnection,
    StartTLS,
    State,
    Vrfy,
)

OK = Reply(250, "2.0.0", "Ok")
NO = Reply(550, "5.7.1", "No")

# --- greeting and API misuse ---------------------------------------------------------


def test_initial_state():
    conn = SMTPConnection()
    assert conn.state is State.GREETED
    assert (conn.tls_active, conn.has_helo, conn.extended, conn.authenticated) == (
        False, False, False, False)
    assert (conn.mail_from_accepted, conn.accepted_rcpts, conn.in_data, conn.closed) == (
        False, 0, False, False)
    assert SMTPConnection(tls_active=True).tls_active


def test_greeting_renders():
    conn = SMTPConnection()
    assert conn.send(Reply(220, None, "mx.test ESMTP")) == b"220 mx.test ESMTP\r\n"
    assert conn.state is State.GREETED


@pytest.mark.parametrize("code", [250, 354, 500])
def test_greeting_must_be_220_554_or_421(code):
    with pytest.raises(LocalProtocolError):
        SMTPConnection().send(Reply(code, None, "hi"))


def test_reply_with_nothing_to_answer():
    conn = SMTPConnection()
    conn.send(Reply(220, None, "hi"))
    with pytest.raises(LocalProtocolError):
        conn.send(OK)


def test_next_event_before_answering():
    conn = SMTPConnection()
    conn.send(Reply(220, None, "hi"))
    conn.receive_data(b"NOOP\r\nNOOP\r\n")
    assert conn.next_event() == Noop()
    with pytest.raises(LocalProtocolError):
        conn.next_event()
    conn.send(OK)
    assert conn.next_event() == Noop()


def test_data_after_eof():
    conn = SMTPConnection()
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"NOOP\r\n")


def test_send_takes_a_reply():
    with pytest.raises(TypeError):
        SMTPConnection().send(b"220 hi\r\n")


@pytest.mark.parametrize("kwargs", [{"bare_linefeed": "allow"}, {"max_command_line": 0}])
def test_bad_settings(kwargs):
    with pytest.raises(ValueError):
        SMTPConnection(**kwargs)


def test_no_greeting_needed_before_commands():
    d = Driver(greeting=None)
    assert d.feed(b"EHLO x\r\n") == [Helo("x", True)]
    assert d.conn.state is State.READY


# --- HELO / EHLO ---------------------------------------------------------------------


def test_helo_and_ehlo_move_to_ready():
    d = Driver()
    d.feed(b"HELO a.test\r\n")
    assert (d.conn.state, d.conn.has_helo, d.conn.extended) == (State.READY, True, False)
    d.feed(b"EHLO a.test\r\n")
    assert (d.conn.state, d.conn.has_helo, d.conn.extended) == (State.READY, True, True)


def test_refused_ehlo_stays():
    d = Driver(answers={Helo: NO})
    d.feed(b"EHLO a.test\r\n")
    assert (d.conn.state, d.conn.has_helo) == (State.GREETED, False)
    assert bad(d.feed(b"MAIL FROM:<>\r\n")) == [(503, "5.5.1")]


@pytest.mark.parametrize("verb", [b"HELO", b"EHLO"])
def test_helo_resets_the_transaction(verb):
    d = in_transaction()
    assert (d.conn.mail_from_accepted, d.conn.accepted_rcpts) == (True, 1)
    d.feed(verb + b" again.test\r\n")
    assert d.conn.state is State.READY
    assert (d.conn.mail_from_accepted, d.conn.accepted_rcpts) == (False, 0)
    assert d.feed(b"MAIL FROM:<>\r\n") == [Mail("")]


def test_refused_helo_keeps_the_transaction():
    d = in_transaction()
    d.answers[Helo] = NO
    d.feed(b"EHLO again.test\r\n")
    assert (d.conn.state, d.conn.accepted_rcpts) == (State.RCPT, 1)


# --- MAIL / RCPT / DATA sequencing ---------------------------------------------------


def test_mail_needs_helo():
    events = Driver().feed(b"MAIL FROM:<a@example.com>\r\n")
    assert bad(events) == [(503, "5.5.1")]


def test_nested_mail():
    d = ready()
    d.feed(b"MAIL FROM:<a@example.com>\r\n")
    events = d.feed(b"MAIL FROM:<a@example.com>\r\n")
    assert bad(events) == [(503, "5.5.1")]
    assert "Nested MAIL" in events[0].reply.text[0]
    d.feed(b"RCPT TO:<b@example.com>\r\n")
    assert bad(d.feed(b"MAIL FROM:<a@example.com>\r\n")) == [(503, "5.5.1")]


def test_sequence_check_comes_before_syntax():
    assert bad(Driver().feed(b"MAIL garbage\r\n")) == [(503, "5.5.1")]


def test_refused_mail_stays_ready():
    d = ready(answers={Mail: NO})
    d.feed(b"MAIL FROM:<a@example.com>\r\n")
    assert (d.conn.state, d.conn.mail_from_accepted) == (State.READY, False)
    assert bad(d.feed(b"RCPT TO:<b@example.com>\r\n")) == [(503, "5.5.1")]


def test_mail_moves_to_mail():
    d = ready()
    d.feed(b"MAIL FROM:<a@example.com>\r\n")
    assert (d.conn.state, d.conn.mail_from_accepted) == (State.MAIL, True)


@pytest.mark.parametrize("prelude", [b"", b"EHLO x\r\n"])
def test_rcpt_needs_mail(prelude):
    d = Driver()
    d.feed(prelude)
    assert bad(d.feed(b"RCPT TO:<b@example.com>\r\n")) == [(503, "5.5.1")]


def test_rcpt_counting():
    def answer(event):
        return NO if event.address.startswith("no") else OK

    d = ready(answers={Rcpt: answer})
    d.feed(b"MAIL FROM:<a@example.com>\r\n")
    d.feed(b"RCPT TO:<no1@example.com>\r\n")
    assert (d.conn.state, d.conn.accepted_rcpts) == (State.MAIL, 0)
    d.feed(b"RCPT TO:<b@example.com>\r\nRCPT TO:<no2@example.com>\r\nRCPT TO:<c@example.com>\r\n")
    assert (d.conn.state, d.conn.accepted_rcpts) == (State.RCPT, 2)


@pytest.mark.parametrize(("prelude", "code"), [
    (b"", (503, "5.5.1")),
    (b"EHLO x\r\n", (503, "5.5.1")),
    (b"EHLO x\r\nMAIL FROM:<a@example.com>\r\n", (554, "5.5.1")),
])
def test_data_needs_a_recipient(prelude, code):
    d = Driver()
    d.feed(prelude)
    events = d.feed(b"DATA\r\n")
    assert bad(events) == [code]
    assert d.conn.in_data is False


def test_data_after_only_refused_recipients():
    d = ready(answers={Rcpt: NO})
    d.feed(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
    events = d.feed(b"DATA\r\nSubject: x\r\n")
    assert bad(events) == [(554, "5.5.1"), (500, "5.5.2")]


def test_data_with_binarymime():
    d = ready(binarymime=True)
    d.feed(b"MAIL FROM:<a@example.com> BODY=BINARYMIME\r\nRCPT TO:<b@example.com>\r\n")
    assert bad(d.feed(b"DATA\r\n")) == [(503, "5.5.1")]


def test_refused_data_stays():
    d = in_transaction(answers={Data: Reply(451, "4.3.0", "Later")})
    events = d.feed(b"DATA\r\nNOOP\r\n")
    assert events == [Data(), Noop()]
    assert d.conn.state is State.RCPT


def test_data_accepted_and_finished():
    d = in_transaction()
    d.feed(b"DATA\r\n")
    assert (d.conn.state, d.conn.in_data) == (State.DATA, True)
    d.feed(b"x\r\n.\r\n")
    assert (d.conn.state, d.conn.in_data) == (State.READY, False)
    assert (d.conn.mail_from_accepted, d.conn.accepted_rcpts) == (False, 0)


@pytest.mark.parametrize("code", [250, 451, 554])
def test_any_reply_to_data_end_clears_the_transaction(code):
    d = in_transaction(answers={DataEnd: Reply(code, None, "x")})
    d.feed(b"DATA\r\nx\r\n.\r\n")
    assert d.conn.state is State.READY
    assert bad(d.feed(b"RCPT TO:<b@example.com>\r\n")) == [(503, "5.5.1")]
    assert d.feed(b"MAIL FROM:<a@example.com>\r\n") == [Mail("a@example.com")]


def test_commands_during_data_are_text():
    d = in_transaction()
    events = d.feed(b"DATA\r\nQUIT\r\nRSET\r\n.\r\n")
    assert [type(e) for e in events] == [Data, type(events[1]), DataEnd]
    assert events[1].data == b"QUIT\r\nRSET\r\n"


# --- RSET and the anytime commands ---------------------------------------------------


def test_rset():
    d = in_transaction()
    d.feed(b"RSET\r\n")
    assert (d.conn.state, d.conn.mail_from_accepted, d.conn.accepted_rcpts) == (
        State.READY, False, 0)
    d = Driver()
    d.feed(b"RSET\r\n")
    assert d.conn.state is State.GREETED


def test_refused_rset_keeps_the_transaction():
    d = in_transaction(answers={Rset: Reply(421, "4.3.2", "x")})
    d.answers[Rset] = Reply(500, "5.5.1", "no")
    d.feed(b"RSET\r\n")
    assert d.conn.state is State.RCPT


ANYTIME = [(b"NOOP", Noop()), (b"RSET", Rset()), (b"HELP", Help("")),
           (b"VRFY x", Vrfy("x")), (b"EXPN x", Expn("x"))]
PRELUDES = {
    "greeted": b"",
    "ready": b"EHLO x\r\n",
    "mail": b"EHLO x\r\nMAIL FROM:<a@example.com>\r\n",
    "rcpt": b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n",
    "bdat": b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nBDAT 1\r\nx",
}


@pytest.mark.parametrize("prelude", PRELUDES.values(), ids=PRELUDES.keys())
@pytest.mark.parametrize(("line", "event"), ANYTIME, ids=[a[0].decode() for a in ANYTIME])
def test_anytime_commands(prelude, line, event):
    d = Driver()
    d.feed(prelude)
    assert d.feed(line + b"\r\n") == [event]


@pytest.mark.parametrize("prelude", PRELUDES.values(), ids=PRELUDES.keys())
def test_quit_anytime(prelude):
    d = Driver()
    d.feed(prelude)
    assert d.feed(b"QUIT\r\nNOOP\r\n") == [Quit()]
    assert d.conn.closed and d.conn.state is State.CLOSED
    assert d.conn.next_event() == ConnectionClosed()


def test_refused_quit_stays():
    d = ready(answers={Quit: Reply(500, "5.5.1", "no")})
    assert d.feed(b"QUIT\r\nNOOP\r\n") == [Quit(), Noop()]


def test_bad_command_reply_does_not_move():
    d = in_transaction()
    d.feed(b"BOGUS\r\n")
    assert (d.conn.state, d.conn.accepted_rcpts) == (State.RCPT, 1)


# --- AUTH ----------------------------------------------------------------------------


def test_auth_exchange():
    d = ready(answers={AuthResponse: lambda e: Reply(334, None, "UGFzc3dvcmQ6")
                       if e.line == "dXNlcg==" else Reply(235, "2.7.0", "Ok")})
    assert d.feed(b"AUTH LOGIN\r\n") == [Auth("LOGIN")]
    assert d.conn.state is State.AUTH
    assert d.feed(b"dXNlcg==\r\n") == [AuthResponse("dXNlcg==")]
    assert d.conn.state is State.AUTH
    assert d.feed(b"cGFzcw==\r\n") == [AuthResponse("cGFzcw==")]
    assert (d.conn.state, d.conn.authenticated) == (State.READY, True)
    assert bad(d.feed(b"AUTH PLAIN\r\n")) == [(503, "5.5.1")]
    assert d.feed(b"MAIL FROM:<a@example.com>\r\n") == [Mail("a@example.com")]


def test_auth_lines_are_not_commands():
    d = ready(answers={AuthResponse: Reply(535, "5.7.8", "Bad")})
    events = d.feed(b"AUTH PLAIN\r\nMAIL FROM:<a@example.com>\r\nNOOP\r\n")
    assert events == [Auth("PLAIN"), AuthResponse("MAIL FROM:<a@example.com>"), Noop()]
    assert (d.conn.state, d.conn.authenticated) == (State.READY, False)


def test_auth_cancel_and_bare_lf():
    d = ready(answers={AuthResponse: Reply(501, "5.0.0", "Cancelled")})
    assert d.feed(b"AUTH LOGIN\r\n*\n") == [Auth("LOGIN"), AuthResponse("*")]
    assert d.conn.state is State.READY


def test_auth_with_initial_response_succeeds_at_once():
    d = ready(answers={Auth: Reply(235, "2.7.0", "Ok")})
    assert d.feed(b"AUTH PLAIN AGEAYg==\r\n") == [Auth("PLAIN", "AGEAYg==")]
    assert d.conn.authenticated and d.conn.state is State.READY


def test_failed_auth():
    d = ready(answers={Auth: Reply(535, "5.7.8", "No")})
    d.feed(b"AUTH PLAIN AGEAYg==\r\n")
    assert (d.conn.state, d.conn.authenticated) == (State.READY, False)
    assert d.feed(b"AUTH PLAIN AGEAYg==\r\n") == [Auth("PLAIN", "AGEAYg==")]


@pytest.mark.parametrize("prelude", [b"", b"HELO x\r\n"])
def test_auth_needs_ehlo(prelude):
    d = Driver()
    d.feed(prelude)
    assert bad(d.feed(b"AUTH PLAIN\r\n")) == [(503, "5.5.1")]


@pytest.mark.parametrize("prelude", [b"MAIL FROM:<a@example.com>\r\n",
                                     b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"])
def test_auth_not_during_a_transaction(prelude):
    d = ready()
    d.feed(prelude)
    assert bad(d.feed(b"AUTH PLAIN\r\n")) == [(503, "5.5.1")]


def test_auth_line_limit():
    d = ready(max_auth_line=100, answers={AuthResponse: Reply(334, None, "")})
    d.feed(b"AUTH LOGIN\r\n")
    ok = b"A" * 98 + b"\r\n"
    assert d.feed(ok) == [AuthResponse("A" * 98)]
    events = d.feed(b"A" * 99 + b"\r\nNOOP\r\n")
    assert bad(events) == [(500, "5.5.6")]
    assert events[0].reply.text == ("Authentication exchange line is too long",)
    assert events[1:] == [Noop()]  # the exchange is over: back to commands
    assert d.conn.state is State.READY


def test_auth_line_default_limit_and_bounded_memory():
    d = ready(answers={AuthResponse: Reply(334, None, "")})
    d.feed(b"AUTH PLAIN\r\n")
    assert d.feed(b"B" * 12286 + b"\r\n") == [AuthResponse("B" * 12286)]
    events = d.feed(*[b"C" * 65536] * 20, b"\r\n")
    assert bad(events) == [(500, "5.5.6")]
    assert d.max_buffered <= 12288 + 65536


def test_auth_line_with_invalid_bytes_aborts():
    d = ready()
    events = d.feed(b"AUTH PLAIN\r\n\xff\xfe\r\nNOOP\r\n")
    assert bad(events) == [(501, "5.5.2")]
    assert events[-1] == Noop()


# --- STARTTLS ------------------------------------------------------------------------


def test_starttls_discards_pipelined_plaintext():
    d = ready()
    injected = b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\n"
    assert d.feed(b"STARTTLS\r\n" + injected) == [StartTLS()]
    assert d.conn.state is State.TLS_PENDING
    assert d.conn.next_event() is NEED_DATA
    d.conn.receive_data(b"more plaintext\r\n")
    assert d.conn.next_event() is NEED_DATA
    assert d.conn.start_tls() == len(injected) + len(b"more plaintext\r\n")
    assert d.conn.state is State.GREETED
    assert (d.conn.tls_active, d.conn.has_helo, d.conn.extended) == (True, False, False)
    assert d.conn.next_event() is NEED_DATA


def test_starttls_resets_helo_and_auth():
    d = ready(answers={Auth: Reply(235, "2.7.0", "Ok")}, auto_tls=True)
    d.feed(b"AUTH PLAIN AGEAYg==\r\n")
    assert d.conn.authenticated
    d.feed(b"STARTTLS\r\n")
    assert d.discarded == [0]
    assert (d.conn.authenticated, d.conn.has_helo, d.conn.tls_active) == (False, False, True)
    assert bad(d.feed(b"MAIL FROM:<a@example.com>\r\n")) == [(503, "5.5.1")]
    assert d.feed(b"EHLO x\r\nMAIL FROM:<a@example.com>\r\n") == [Helo("x", True),
                                                                  Mail("a@example.com")]


def test_starttls_twice_and_with_argument():
    d = ready(auto_tls=True)
    assert bad(d.feed(b"STARTTLS now\r\n")) == [(501, "5.5.4")]
    d.feed(b"STARTTLS\r\nEHLO x\r\n")
    assert d.discarded == [len(b"EHLO x\r\n")]
    assert bad(d.feed(b"STARTTLS\r\n")) == [(503, "5.5.1")]
    assert bad(ready(tls_active=True).feed(b"STARTTLS\r\n")) == [(503, "5.5.1")]


def test_starttls_before_ehlo_is_allowed():
    d = Driver()
    assert d.feed(b"STARTTLS\r\n") == [StartTLS()]
    assert d.conn.state is State.TLS_PENDING


def test_refused_starttls_keeps_going():
    d = ready(answers={StartTLS: Reply(454, "4.7.0", "TLS not available")})
    assert d.feed(b"STARTTLS\r\nNOOP\r\n") == [StartTLS(), Noop()]
    assert not d.conn.tls_active


def test_start_tls_in_the_wrong_state():
    with pytest.raises(LocalProtocolError):
        ready().conn.start_tls()


def test_eof_while_tls_pending():
    d = ready()
    d.feed(b"STARTTLS\r\n")
    assert d.close() == [ConnectionClosed()]


# --- 554 greeting, 421 ---------------------------------------------------------------


def test_554_greeting_serves_only_quit():
    d = Driver(greeting=Reply(554, None, "mx.test no service"))
    assert d.conn.state is State.NO_SERVICE and not d.conn.closed
    events = d.feed(b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nNOOP\r\nBOGUS\r\nSTARTTLS\r\n")
    assert bad(events) == [(503, "5.7.1")] * 5
    assert all(e.reply.text == ("No SMTP service here",) for e in events)
    assert d.feed(b"QUIT\r\n") == [Quit()]
    assert d.conn.closed


def test_554_greeting_still_consumes_bdat():
    d = Driver(greeting=Reply(554, None, "no"))
    events = d.feed(b"BDAT 6\r\nNOOP\r\nQUIT\r\n")
    assert bad(events) == [(503, "5.7.1")]
    assert events[-1] == Quit()


def test_421_greeting_closes():
    d = Driver(greeting=Reply(421, None, "busy"))
    assert d.conn.closed
    assert d.feed(b"EHLO x\r\n") == [ConnectionClosed()]


@pytest.mark.parametrize("event_type", [Helo, Mail, Rcpt, Data, Noop])
def test_421_answer_closes(event_type):
    d = in_transaction(answers={event_type: Reply(421, "4.3.2", "Shutting down")})
    d.answers[event_type] = Reply(421, "4.3.2", "Shutting down")
    line = {Helo: b"EHLO x", Mail: b"MAIL FROM:<>", Rcpt: b"RCPT TO:<b@example.com>",
            Data: b"DATA", Noop: b"NOOP"}[event_type]
    if event_type is Mail:
        d.feed(b"RSET\r\n")
    d.feed(line + b"\r\nNOOP\r\n")
    assert d.conn.closed
    assert d.conn.next_event() == ConnectionClosed()


def test_unsolicited_421_in_the_middle_of_data():
    d = in_transaction()
    d.feed(b"DATA\r\nsome text\r\n")
    assert d.conn.in_data
    assert d.conn.send(Reply(421, "4.4.2", "Timeout")) == b"421 4.4.2 Timeout\r\n"
    assert d.conn.closed and not d.conn.in_data
    assert d.conn.next_event() == ConnectionClosed()


def test_421_while_an_answer_is_pending_and_after_close():
    conn = SMTPConnection()
    conn.send(Reply(220, None, "hi"))
    conn.receive_data(b"NOOP\r\n")
    assert conn.next_event() == Noop()
    conn.send(Reply(421, "4.3.2", "bye"))
    assert conn.closed
    conn.send(Reply(421, "4.3.2", "bye again"))  # a 421 is always allowed
    with pytest.raises(LocalProtocolError):
        conn.send(OK)


# --- EOF -----------------------------------------------------------------------------


def test_eof_drains_complete_events_first():
    conn = SMTPConnection()
    conn.send(Reply(220, None, "hi"))
    conn.receive_data(b"NOOP\r\nNOOP\r\nNOO")
    conn.receive_data(b"")
    for _ in range(2):
        assert conn.next_event() == Noop()
        conn.send(OK)
    assert conn.next_event() == ConnectionClosed()
    assert conn.next_event() == ConnectionClosed()
    assert conn.closed


def test_eof_in_data_is_connection_closed():
    d = in_transaction()
    d.feed(b"DATA\r\nSubject: unfinished\r\n")
    assert d.close() == [ConnectionClosed()]
    assert d.conn.next_event() == ConnectionClosed()


def test_eof_in_data_with_the_end_still_buffered():
    d = in_transaction()
    d.feed(b"DATA\r\n")
    d.conn.receive_data(b"x\r\n.\r\nQUIT\r\n")
    d.conn.receive_data(b"")
    events = d.drain()
    assert [type(e).__name__ for e in events] == ["DataChunk", "DataEnd", "Quit"]


def test_eof_inside_an_over_long_line():
    d = ready()
    d.feed(b"x" * 2000)
    assert d.close() == [ConnectionClosed()]


def test_state_is_printable():
    assert str(State.DATA) == "DATA"
