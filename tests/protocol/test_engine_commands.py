"""Command lines: verbs, arguments, addresses, ESMTP parameters, command line limits."""

from __future__ import annotations

import pytest
from engine_helpers import Driver, bad, in_transaction, ready

from appliance.protocol import (
    NEED_DATA,
    Auth,
    BadCommand,
    Data,
    Expn,
    Helo,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    SMTPConnection,
    StartTLS,
    Vrfy,
)

# --- every verb ---------------------------------------------------------------------


@pytest.mark.parametrize(("line", "event"), [
    (b"HELO client.test", Helo("client.test", False)),
    (b"EHLO client.test", Helo("client.test", True)),
    (b"ehlo [192.0.2.1]", Helo("[192.0.2.1]", True)),
    (b"NOOP", Noop()),
    (b"NOOP whatever text", Noop()),
    (b"RSET", Rset()),
    (b"HELP", Help("")),
    (b"HELP MAIL", Help("MAIL")),
    (b"VRFY postmaster", Vrfy("postmaster")),
    (b"EXPN staff", Expn("staff")),
    (b"STARTTLS", StartTLS()),
    (b"QUIT", Quit()),
])
def test_verbs_before_helo(line, event):
    d = Driver()
    assert d.feed(line + b"\r\n") == [event]


@pytest.mark.parametrize(("line", "event"), [
    (b"MAIL FROM:<a@example.com>", Mail("a@example.com")),
    (b"AUTH PLAIN", Auth("PLAIN", None)),
    (b"auth plain AGEAYg==", Auth("PLAIN", "AGEAYg==")),
    (b"AUTH PLAIN =", Auth("PLAIN", "=")),
    (b"AUTH cram-md5", Auth("CRAM-MD5", None)),
])
def test_verbs_after_ehlo(line, event):
    d = ready(answers={Auth: Reply(535, "5.7.8", "No")})
    assert d.feed(line + b"\r\n") == [event]


def test_rcpt_data_verbs():
    d = ready()
    events = d.feed(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    assert events == [Mail("a@example.com"), Rcpt("b@example.com"), Data()]


@pytest.mark.parametrize("verb", [b"helo", b"Helo", b"hElO", b"HELO"])
def test_verbs_are_case_insensitive(verb):
    assert Driver().feed(verb + b" x.test\r\n") == [Helo("x.test", False)]


@pytest.mark.parametrize("line", [b"FOO", b"MAILFROM:<a@b.c>", b"", b" HELO x", b"H\xc3\xa9LO x"])
def test_unknown_verb(line):
    events = Driver().feed(line + b"\r\n")
    assert bad(events) == [(500, "5.5.2")]
    assert events[0].reply.text == ("Command unrecognized",)


@pytest.mark.parametrize("line", [b"HELO a\x00b", b"HELO \xff\xfe", b"HELO a\rb", b"NOOP \xc3"])
def test_nul_cr_and_invalid_utf8_are_refused(line):
    assert bad(Driver().feed(line + b"\r\n")) == [(500, "5.5.2")]


@pytest.mark.parametrize(("line", "code"), [
    (b"HELO", (501, "5.5.4")),
    (b"EHLO", (501, "5.5.4")),
    (b"EHLO   ", (501, "5.5.4")),
    (b"DATA now", (501, "5.5.4")),
    (b"RSET all", (501, "5.5.4")),
    (b"QUIT now", (501, "5.5.4")),
    (b"STARTTLS now", (501, "5.5.4")),
    (b"VRFY", (501, "5.5.4")),
    (b"EXPN", (501, "5.5.4")),
])
def test_argument_errors(line, code):
    d = in_transaction() if line.startswith(b"DATA") else ready()
    assert bad(d.feed(line + b"\r\n")) == [code]


@pytest.mark.parametrize("line", [b"AUTH", b"AUTH PLAIN a b", b"AUTH PL@IN",
                                  b"AUTH ABCDEFGHIJKLMNOPQRSTU"])
def test_auth_syntax(line):
    assert bad(ready().feed(line + b"\r\n")) == [(501, "5.5.4")]


def test_bare_lf_ends_a_command_line():
    d = ready()
    assert d.feed(b"NOOP\nMAIL FROM:<a@example.com>\n") == [Noop(), Mail("a@example.com")]


def test_command_split_over_many_reads():
    d = ready()
    assert d.feed(b"MA", b"IL FR", b"OM:<a@exa", b"mple.com>\r", b"\n") == [Mail("a@example.com")]


def test_pipelined_commands_come_out_one_by_one():
    d = Driver()
    events = d.feed(b"EHLO c.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                    b"RCPT TO:<c@example.com>\r\nNOOP\r\nRSET\r\nQUIT\r\n")
    assert events == [Helo("c.test", True), Mail("a@example.com"), Rcpt("b@example.com"),
                      Rcpt("c@example.com"), Noop(), Rset(), Quit()]
    assert [r.code for r in d.replies] == [250, 250, 250, 250, 250, 250, 221]


def test_next_event_needs_data_for_a_partial_line():
    conn = SMTPConnection()
    conn.receive_data(b"EHLO x")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"\r\n")
    assert conn.next_event() == Helo("x", True)


# --- command line limits -------------------------------------------------------------


def _noop_line(total: int, end: bytes = b"\r\n") -> bytes:
    return b"NOOP " + b"x" * (total - 5 - len(end)) + end


@pytest.mark.parametrize("end", [b"\r\n", b"\n"])
def test_command_line_at_limit(end):
    line = _noop_line(512, end)
    assert len(line) == 512
    assert ready().feed(line) == [Noop()]


@pytest.mark.parametrize("end", [b"\r\n", b"\n"])
def test_command_line_over_limit(end):
    line = _noop_line(513, end)
    d = ready()
    events = d.feed(line + b"NOOP\r\n")
    assert bad(events) == [(500, "5.5.2")]
    assert events[0].reply.text == ("Line too long",)
    assert events[1:] == [Noop()]


def test_command_line_limit_is_configurable():
    d = ready(max_command_line=64)
    assert d.feed(_noop_line(64)) == [Noop()]
    assert bad(d.feed(_noop_line(65))) == [(500, "5.5.2")]


def test_over_long_line_split_over_reads():
    d = ready()
    pieces = [b"NOOP "] + [b"y" * 100] * 10 + [b"\r\nNOOP\r\n"]
    events = d.feed(*pieces)
    assert bad(events) == [(500, "5.5.2")]
    assert events[1:] == [Noop()]


def test_huge_line_without_crlf_keeps_memory_bounded():
    d = ready()
    piece = b"z" * 65536
    for _ in range(160):  # 10 MiB
        assert d.feed(piece) == []
        assert d.conn.buffered <= 512 + 65536
    assert d.max_buffered <= 512 + 65536
    events = d.feed(b"tail\r\nNOOP\r\n")
    assert bad(events) == [(500, "5.5.2")]
    assert events[1:] == [Noop()]


# --- MAIL FROM -----------------------------------------------------------------------


@pytest.mark.parametrize(("line", "address"), [
    (b"MAIL FROM:<a@example.com>", "a@example.com"),
    (b"MAIL FROM: <a@example.com>", "a@example.com"),
    (b"mail from:<a@example.com>", "a@example.com"),
    (b"MAIL FROM:<>", ""),
    (b"MAIL FROM: <>", ""),
    (b'MAIL FROM:<"john doe"@example.com>', '"john doe"@example.com'),
    (b'MAIL FROM:<"a\\"b>c"@example.com>', '"a\\"b>c"@example.com'),
    (b"MAIL FROM:<@relay.test:a@example.com>", "a@example.com"),
    (b"MAIL FROM:<@r1.test,@[192.0.2.1]:a@example.com>", "a@example.com"),
    (b"MAIL FROM:<a.b+tag@sub.example.com>", "a.b+tag@sub.example.com"),
    (b"MAIL FROM:<a@[192.0.2.1]>", "a@[192.0.2.1]"),
    (b"MAIL FROM:<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]"),
    (b"MAIL FROM:<a@[ipv6:::ffff:192.0.2.1]>", "a@[ipv6:::ffff:192.0.2.1]"),
    (b"MAIL FROM:<a@localhost>", "a@localhost"),
    (b"MAIL FROM:<a@x-y.example>", "a@x-y.example"),
])
def test_mail_addresses(line, address):
    assert ready().feed(line + b"\r\n") == [Mail(address)]


@pytest.mark.parametrize(("line", "code"), [
    (b"MAIL FROM:a@example.com", (501, "5.5.2")),
    (b"MAIL FROM:<a@example.com", (501, "5.5.2")),
    (b"MAIL FROM:  <a@example.com>", (501, "5.5.2")),
    (b"MAIL TO:<a@example.com>", (501, "5.5.2")),
    (b"MAIL <a@example.com>", (501, "5.5.2")),
    (b"MAIL", (501, "5.5.2")),
    (b"MAIL FROM:<a@example.com>SIZE=1", (501, "5.5.2")),
    (b'MAIL FROM:<"unterminated@example.com>', (501, "5.5.2")),
    (b"MAIL FROM:<a@>", (501, "5.1.7")),
    (b"MAIL FROM:<@example.com>", (501, "5.1.7")),
    (b"MAIL FROM:<a>", (501, "5.1.7")),
    (b"MAIL FROM:<Postmaster>", (501, "5.1.7")),
    (b"MAIL FROM:<a@-bad.example>", (501, "5.1.7")),
    (b"MAIL FROM:<a@bad-.example>", (501, "5.1.7")),
    (b"MAIL FROM:<a@example..com>", (501, "5.1.7")),
    (b"MAIL FROM:<a@example.com.>", (501, "5.1.7")),
    (b"MAIL FROM:<a@exa_mple.com>", (501, "5.1.7")),
    (b"MAIL FROM:<a b@example.com>", (501, "5.1.7")),
    (b"MAIL FROM:<a..b@example.com>", (501, "5.1.7")),
    (b"MAIL FROM:<.a@example.com>", (501, "5.1.7")),
    (b"MAIL FROM:<a@[300.1.1.1]>", (501, "5.1.7")),
    (b"MAIL FROM:<a@[IPv6:2001:db8::zz]>", (501, "5.1.7")),
    (b"MAIL FROM:<a@[IPv6:fe80::1%eth0]>", (501, "5.1.7")),
    (b"MAIL FROM:<a@[foo:bar]>", (501, "5.1.7")),
    (b"MAIL FROM:<@:a@example.com>", (501, "5.1.7")),
    (b"MAIL FROM:<@relay.test a@example.com>", (501, "5.1.7")),
    (b"MAIL FROM:<a@" + b"x" * 64 + b".example>", (501, "5.1.7")),
])
def test_mail_address_errors(line, code):
    assert bad(ready().feed(line + b"\r\n")) == [code]


def test_address_length_limit():
    domain = b".".join([b"d" * 60] * 4)  # 243 octets
    ok = b"a" * (256 - 1 - len(domain)) + b"@" + domain
    assert len(ok) == 256
    assert ready().feed(b"MAIL FROM:<" + ok + b">\r\n") == [Mail(ok.decode())]
    events = ready().feed(b"MAIL FROM:<a" + ok + b">\r\n")
    assert bad(events) == [(501, "5.1.7")]
    d = ready()
    d.feed(b"MAIL FROM:<>\r\n")
    assert bad(d.feed(b"RCPT TO:<a" + ok + b">\r\n")) == [(501, "5.1.3")]


# --- RCPT TO -------------------------------------------------------------------------


def _rcpt(line: bytes, **kwargs) -> list:
    d = ready(**kwargs)
    assert d.feed(b"MAIL FROM:<a@example.com>\r\n") == [Mail("a@example.com")]
    return d.feed(line + b"\r\n")


@pytest.mark.parametrize(("line", "address"), [
    (b"RCPT TO:<b@example.com>", "b@example.com"),
    (b"RCPT TO: <b@example.com>", "b@example.com"),
    (b"rcpt to:<b@example.com>", "b@example.com"),
    (b"RCPT TO:<Postmaster>", "Postmaster"),
    (b"RCPT TO:<postmaster>", "postmaster"),
    (b"RCPT TO:<postmaster@example.com>", "postmaster@example.com"),
    (b'RCPT TO:<"john doe"@example.com>', '"john doe"@example.com'),
    (b"RCPT TO:<@a.test,@b.test:b@example.com>", "b@example.com"),
])
def test_rcpt_addresses(line, address):
    assert _rcpt(line) == [Rcpt(address)]


@pytest.mark.parametrize(("line", "code"), [
    (b"RCPT TO:<>", (501, "5.1.3")),
    (b"RCPT TO:b@example.com", (501, "5.5.2")),
    (b"RCPT FROM:<b@example.com>", (501, "5.5.2")),
    (b"RCPT TO:<b>", (501, "5.1.3")),
    (b"RCPT TO:<b@bad_domain.example>", (501, "5.1.3")),
    (b"RCPT TO:<b@[1.2.3]>", (501, "5.1.3")),
])
def test_rcpt_address_errors(line, code):
    assert bad(_rcpt(line)) == [code]


# --- SMTPUTF8 ------------------------------------------------------------------------

UTF8_SENDER = "jös@exämple.com".encode()
UTF8_RCPT = "用户@例子.广告".encode()


def test_utf8_sender_with_smtputf8():
    events = ready().feed(b"MAIL FROM:<" + UTF8_SENDER + b"> SMTPUTF8\r\n")
    assert events == [Mail(UTF8_SENDER.decode(), {"SMTPUTF8": True})]


def test_utf8_sender_without_smtputf8_param():
    assert bad(ready().feed(b"MAIL FROM:<" + UTF8_SENDER + b">\r\n")) == [(553, "5.6.7")]


def test_utf8_sender_when_smtputf8_not_offered():
    d = ready(smtputf8=False)
    assert bad(d.feed(b"MAIL FROM:<" + UTF8_SENDER + b"> SMTPUTF8\r\n")) == [(553, "5.6.7")]
    assert bad(d.feed(b"MAIL FROM:<a@example.com> SMTPUTF8\r\n")) == [(555, "5.5.4")]


def test_utf8_recipient_needs_smtputf8_on_the_mail():
    d = ready()
    d.feed(b"MAIL FROM:<a@example.com>\r\n")
    assert bad(d.feed(b"RCPT TO:<" + UTF8_RCPT + b">\r\n")) == [(553, "5.6.7")]
    d.feed(b"RSET\r\nMAIL FROM:<a@example.com> SMTPUTF8\r\n")
    assert d.feed(b"RCPT TO:<" + UTF8_RCPT + b">\r\n") == [Rcpt(UTF8_RCPT.decode())]


def test_utf8_recipient_after_refused_utf8_mail():
    d = ready(answers={Mail: Reply(550, "5.7.1", "No")})
    d.feed(b"MAIL FROM:<a@example.com> SMTPUTF8\r\n")
    d.answers[Mail] = Reply(250, "2.1.0", "Ok")
    d.feed(b"MAIL FROM:<a@example.com>\r\n")
    assert bad(d.feed(b"RCPT TO:<" + UTF8_RCPT + b">\r\n")) == [(553, "5.6.7")]


def test_utf8_quoted_local_part():
    line = 'MAIL FROM:<"ü ü"@example.com> SMTPUTF8\r\n'.encode()
    assert ready().feed(line) == [Mail('"ü ü"@example.com', {"SMTPUTF8": True})]


# --- MAIL parameters -----------------------------------------------------------------


@pytest.mark.parametrize(("params", "expected"), [
    (b"SIZE=0", {"SIZE": 0}),
    (b"SIZE=1048576", {"SIZE": 1048576}),
    (b"size=12", {"SIZE": 12}),
    (b"BODY=7BIT", {"BODY": "7BIT"}),
    (b"BODY=8bitmime", {"BODY": "8BITMIME"}),
    (b"SMTPUTF8", {"SMTPUTF8": True}),
    (b"AUTH=<>", {"AUTH": "<>"}),
    (b"AUTH=user+40example.com", {"AUTH": "user@example.com"}),
    (b"AUTH=a+2Bb", {"AUTH": "a+b"}),
    (b"RET=FULL", {"RET": "FULL"}),
    (b"RET=hdrs", {"RET": "HDRS"}),
    (b"ENVID=QQ314159", {"ENVID": "QQ314159"}),
    (b"ENVID=a+3Db", {"ENVID": "a=b"}),
    (b"ENVID=" + b"e" * 100, {"ENVID": "e" * 100}),
    (b"SIZE=10 BODY=8BITMIME RET=HDRS ENVID=x SMTPUTF8 AUTH=<>",
     {"SIZE": 10, "BODY": "8BITMIME", "RET": "HDRS", "ENVID": "x", "SMTPUTF8": True,
      "AUTH": "<>"}),
    (b"SIZE=10  BODY=7BIT", {"SIZE": 10, "BODY": "7BIT"}),
])
def test_mail_parameters(params, expected):
    events = ready().feed(b"MAIL FROM:<a@example.com> " + params + b"\r\n")
    assert events == [Mail("a@example.com", expected)]


@pytest.mark.parametrize(("params", "code"), [
    (b"SIZE=abc", (501, "5.5.4")),
    (b"SIZE=-1", (501, "5.5.4")),
    (b"SIZE=1.5", (501, "5.5.4")),
    (b"SIZE", (501, "5.5.4")),
    (b"SIZE=", (501, "5.5.4")),
    (b"SIZE=\xd9\xa3", (501, "5.5.4")),  # ARABIC-INDIC DIGIT THREE is not a digit here
    (b"SIZE=1 SIZE=2", (501, "5.5.4")),
    (b"SIZE=1 size=1", (501, "5.5.4")),
    (b"BODY=9BIT", (555, "5.5.4")),
    (b"BODY=BINARYMIME", (555, "5.5.4")),
    (b"BODY", (501, "5.5.4")),
    (b"SMTPUTF8=yes", (501, "5.5.4")),
    (b"AUTH", (501, "5.5.4")),
    (b"AUTH=a+4", (501, "5.5.4")),
    (b"AUTH=a+ZZb", (501, "5.5.4")),
    (b"AUTH=+FF", (501, "5.5.4")),  # not UTF-8 once decoded
    (b"RET=ALL", (501, "5.5.4")),
    (b"ENVID=" + b"e" * 101, (501, "5.5.4")),
    (b"ENVID=a+b", (501, "5.5.4")),
    (b"=1", (501, "5.5.4")),
    (b"-SIZE=1", (501, "5.5.4")),
    (b"SIZE==1", (501, "5.5.4")),
    (b"FOO=bar", (555, "5.5.4")),
    (b"NOTIFY=NEVER", (555, "5.5.4")),
    (b"XYZ", (555, "5.5.4")),
])
def test_mail_parameter_errors(params, code):
    events = ready().feed(b"MAIL FROM:<a@example.com> " + params + b"\r\n")
    assert bad(events) == [code]
    if code[0] == 555 and params.startswith(b"BODY="):
        assert "not supported" in events[0].reply.text[0]
    elif code[0] == 555:
        assert "parameter not recognised" in events[0].reply.text[0]


def test_binarymime_only_when_offered():
    """RFC 3030 3: BODY=BINARYMIME only after EHLO advertised BINARYMIME."""
    events = ready(binarymime=True).feed(b"MAIL FROM:<a@example.com> BODY=binarymime\r\n")
    assert events == [Mail("a@example.com", {"BODY": "BINARYMIME"})]
    events = ready().feed(b"MAIL FROM:<a@example.com> BODY=BINARYMIME\r\n")
    assert bad(events) == [(555, "5.5.4")]
    assert events[0].reply.text == ("BODY=BINARYMIME not supported",)


# --- RCPT parameters -----------------------------------------------------------------


@pytest.mark.parametrize(("params", "expected"), [
    (b"NOTIFY=NEVER", {"NOTIFY": ("NEVER",)}),
    (b"NOTIFY=never", {"NOTIFY": ("NEVER",)}),
    (b"NOTIFY=SUCCESS", {"NOTIFY": ("SUCCESS",)}),
    (b"NOTIFY=SUCCESS,FAILURE,DELAY", {"NOTIFY": ("SUCCESS", "FAILURE", "DELAY")}),
    (b"NOTIFY=delay,failure", {"NOTIFY": ("DELAY", "FAILURE")}),
    (b"ORCPT=rfc822;b@example.com", {"ORCPT": "rfc822;b@example.com"}),
    (b"ORCPT=rfc822;b+2Bx@example.com", {"ORCPT": "rfc822;b+x@example.com"}),
    (b"ORCPT=utf-8;b@example.com NOTIFY=FAILURE",
     {"ORCPT": "utf-8;b@example.com", "NOTIFY": ("FAILURE",)}),
])
def test_rcpt_parameters(params, expected):
    assert _rcpt(b"RCPT TO:<b@example.com> " + params) == [Rcpt("b@example.com", expected)]


@pytest.mark.parametrize(("params", "code"), [
    (b"NOTIFY=NEVER,SUCCESS", (501, "5.5.4")),
    (b"NOTIFY=SUCCESS,SUCCESS", (501, "5.5.4")),
    (b"NOTIFY=SOMETIMES", (501, "5.5.4")),
    (b"NOTIFY=", (501, "5.5.4")),
    (b"NOTIFY", (501, "5.5.4")),
    (b"NOTIFY=SUCCESS,", (501, "5.5.4")),
    (b"ORCPT=b@example.com", (501, "5.5.4")),
    (b"ORCPT=rfc822;", (501, "5.5.4")),
    (b"ORCPT=;b@example.com", (501, "5.5.4")),
    (b"ORCPT=rfc822;b+zz", (501, "5.5.4")),
    (b"NOTIFY=NEVER NOTIFY=NEVER", (501, "5.5.4")),
    (b"SIZE=10", (555, "5.5.4")),
    (b"BODY=8BITMIME", (555, "5.5.4")),
    (b"FOO", (555, "5.5.4")),
])
def test_rcpt_parameter_errors(params, code):
    assert bad(_rcpt(b"RCPT TO:<b@example.com> " + params)) == [code]


def test_bad_command_names_its_verb():
    events = ready().feed(b"MAIL FROM:<a@example.com> FOO=1\r\n")
    assert events == [BadCommand(Reply(555, "5.5.4", "FOO parameter not recognised"), "MAIL")]
