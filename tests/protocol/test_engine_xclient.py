"""XCLIENT and XFORWARD in the engine (Postfix's XCLIENT_README, XFORWARD_README):
their syntax, when they are admitted, and the fresh start after XCLIENT's 220."""

from __future__ import annotations

import pytest
from engine_helpers import GREETING, Driver, bad, in_transaction, ready

from appliance.protocol import Auth, BadCommand, Mail, Reply, State, Xclient, Xforward

NEW_GREETING = Reply(220, None, "mx.test ESMTP")
OK = Reply(250, "2.0.0", "Ok")


def driver(answers: dict | None = None, **kwargs) -> Driver:
    return Driver(answers={Xclient: NEW_GREETING, Xforward: OK, **(answers or {})}, **kwargs)


def test_xclient_attributes_are_parsed_and_xtext_decoded():
    d = driver()
    events = d.feed(b"XCLIENT addr=192.0.2.7 PORT=40001 NAME=host+2Eexample"
                    b" HELO=relay.example PROTO=ESMTP LOGIN=[UNAVAILABLE]"
                    b" DESTADDR=198.51.100.1 DESTPORT=25\r\n")
    assert events == [Xclient({"ADDR": "192.0.2.7", "PORT": "40001", "NAME": "host.example",
                               "HELO": "relay.example", "PROTO": "ESMTP",
                               "LOGIN": "[UNAVAILABLE]", "DESTADDR": "198.51.100.1",
                               "DESTPORT": "25"})]


def test_xforward_attributes():
    d = driver()
    events = d.feed(b"XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 PROTO=ESMTP"
                    b" IDENT=abc+2B1 SOURCE=REMOTE\r\n")
    assert events == [Xforward({"NAME": "spike.porcupine.org", "ADDR": "168.100.189.2",
                                "PROTO": "ESMTP", "IDENT": "abc+1", "SOURCE": "REMOTE"})]


@pytest.mark.parametrize("line", [
    b"XCLIENT", b"XCLIENT ADDR", b"XCLIENT FOO=bar", b"XCLIENT IDENT=x",
    b"XFORWARD LOGIN=x", b"XFORWARD ADDR=bad+ZZ", b"XCLIENT ADDR=a HELO",
])
def test_syntax_errors_are_501(line):
    events = driver().feed(line + b"\r\n")
    assert bad(events) == [(501, "5.5.4")]


def test_xclient_220_starts_the_session_anew():
    d = driver()
    d.feed(b"EHLO proxy.example\r\n")
    assert d.conn.state is State.READY
    d.feed(b"XCLIENT ADDR=192.0.2.7\r\n")
    assert d.conn.state is State.GREETED
    # a new EHLO is needed before MAIL, as after a connect
    assert bad(d.feed(b"MAIL FROM:<a@example.com>\r\n")) == [(503, "5.5.1")]
    d.feed(b"EHLO client.example\r\n")
    assert d.feed(b"MAIL FROM:<a@example.com>\r\n") == [Mail("a@example.com")]


def test_xclient_login_counts_as_authenticated():
    d = driver()
    d.feed(b"XCLIENT LOGIN=alice\r\n", b"EHLO client.example\r\n")
    assert bad(d.feed(b"AUTH PLAIN\r\n")) == [(503, "5.5.1")]  # already authenticated
    d = driver(answers={Auth: Reply(535, "5.7.8", "No")})
    d.feed(b"XCLIENT LOGIN=[UNAVAILABLE]\r\n", b"EHLO client.example\r\n")
    assert d.feed(b"AUTH PLAIN\r\n") == [Auth("PLAIN", None)]


def test_xclient_refused_leaves_the_state_alone():
    d = ready(answers={Xclient: Reply(550, "5.7.0", "Not authorized")})
    d.feed(b"XCLIENT ADDR=192.0.2.7\r\n")
    assert d.conn.state is State.READY


def test_xclient_554_greeting_leaves_only_quit():
    d = driver(answers={Xclient: Reply(554, "5.7.1", "mx.test Access denied")})
    d.feed(b"XCLIENT ADDR=192.0.2.66\r\n")
    assert d.conn.state is State.NO_SERVICE
    assert bad(d.feed(b"EHLO x\r\n")) == [(503, "5.7.1")]


@pytest.mark.parametrize("verb", [b"XCLIENT", b"XFORWARD"])
def test_not_in_a_mail_transaction(verb):
    d = in_transaction(answers={Xclient: NEW_GREETING, Xforward: OK})
    events = d.feed(verb + b" ADDR=192.0.2.7\r\n")
    assert isinstance(events[0], BadCommand)
    assert events[0].reply == Reply(503, "5.5.1", "Mail transaction in progress")
    assert d.conn.state is State.RCPT


def test_xforward_keeps_the_state():
    d = driver()
    d.feed(b"EHLO proxy.example\r\n", b"XFORWARD ADDR=192.0.2.7\r\n")
    assert d.conn.state is State.READY
    assert d.replies[-1] == OK and d.wire.startswith(GREETING.render())
