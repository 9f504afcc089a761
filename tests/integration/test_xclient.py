"""XCLIENT and XFORWARD against the real server (Postfix's XCLIENT_README and
XFORWARD_README semantics): offered and allowed only to ``smtp.xclient_hosts`` /
``xforward_hosts``; after XCLIENT the named client stands for a new session (the
access list decides on it, a new greeting, the spool and Received show it);
XFORWARD names the client in the next message's Received header."""

from __future__ import annotations

import socket

import pytest

from .conftest import read_reply
from .test_proxy_protocol import RELAY, send_message
from .test_receive import stored, talk

TRUSTED = RELAY + """
[smtp]
xclient_hosts = ["127.0.0.1"]
xforward_hosts = ["127.0.0.1"]
[access]
deny = ["192.0.2.66"]
"""


def dial(app, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", app.port), timeout=10,
                                 source_address=(source, 0))
    assert read_reply(s).startswith(b"220 ")
    return s


def test_only_trusted_clients_see_and_may_use_them(make_appliance):
    app = make_appliance(TRUSTED)
    with dial(app) as s:
        ehlo = talk(s, b"EHLO proxy.example\r\n")
        assert b"250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT\r\n" in ehlo
        assert b"XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n" in ehlo
    with dial(app, "127.0.0.2") as s:
        assert b"XCLIENT" not in talk(s, b"EHLO other.example\r\n")
        assert talk(s, b"XCLIENT ADDR=192.0.2.7\r\n") == b"550 5.7.0 XCLIENT not authorized\r\n"
        assert talk(s, b"XFORWARD ADDR=192.0.2.7\r\n") == \
            b"550 5.7.0 XFORWARD not authorized\r\n"
        assert talk(s, b"NOOP\r\n").startswith(b"250")  # the session goes on


def test_xclient_starts_a_new_session_for_the_named_client(make_appliance):
    app = make_appliance(TRUSTED)
    with dial(app) as s:
        assert talk(s, b"EHLO proxy.example\r\n").startswith(b"250")
        greeting = talk(s, b"XCLIENT ADDR=192.0.2.7 PORT=40001 NAME=client.example"
                           b" HELO=client.example PROTO=ESMTP\r\n")
        assert greeting.startswith(b"220 mx.test.example")
        assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"503")  # EHLO again
        assert b"Hello client.example [192.0.2.7]" in talk(s, b"RSET\r\n") + talk(
            s, b"EHLO client.example\r\n")
        assert talk(s, b"RSET\r\n").startswith(b"250")
        assert send_message(s).startswith(b"250")
    env, text = stored(app)
    assert (env["client"]["ip"], env["client"]["port"]) == ("192.0.2.7", 40001)
    assert b"[192.0.2.7]" in text.split(b"\r\n\r\n")[0]
    assert "xclient session=" in app.log() and "client=[192.0.2.7]:40001" in app.log()


def test_xclient_named_client_denied_by_the_access_list(make_appliance):
    app = make_appliance(TRUSTED)
    with dial(app) as s:
        reply = talk(s, b"XCLIENT ADDR=192.0.2.66\r\n")
        assert reply.startswith(b"554 5.7.1")
        assert talk(s, b"EHLO x\r\n").startswith(b"503")  # only QUIT now
    assert "access_refused" in app.log() and "client=192.0.2.66" in app.log()


def test_xclient_refusals(make_appliance):
    app = make_appliance(TRUSTED)
    with dial(app) as s:
        assert talk(s, b"XCLIENT ADDR=not-an-ip\r\n").startswith(b"501 5.5.4 Bad XCLIENT")
        assert talk(s, b"XCLIENT PORT=70000\r\n").startswith(b"501 5.5.4")
        assert talk(s, b"XCLIENT FOO=bar\r\n").startswith(b"501 5.5.4")
        assert talk(s, b"EHLO proxy.example\r\n").startswith(b"250")
        assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")
        assert talk(s, b"XCLIENT ADDR=192.0.2.7\r\n") == \
            b"503 5.5.1 Mail transaction in progress\r\n"
        # IPv6 with its prefix, and unknown values keep what was there
        assert talk(s, b"RSET\r\n").startswith(b"250")
        assert talk(s, b"XCLIENT ADDR=IPV6:2001:db8::7 PORT=[UNAVAILABLE]\r\n").startswith(
            b"220")
        assert b"[2001:db8::7]" in talk(s, b"EHLO client.example\r\n")


def test_xforward_names_the_client_in_received(make_appliance):
    app = make_appliance(TRUSTED)
    with dial(app) as s:
        assert talk(s, b"EHLO relay.example\r\n").startswith(b"250")
        assert talk(s, b"XFORWARD NAME=origin.example ADDR=192.0.2.9 PORT=1234\r\n") == \
            b"250 2.0.0 Ok\r\n"
        assert talk(s, b"XFORWARD HELO=origin-helo.example PROTO=ESMTP"
                       b" IDENT=ABC123 SOURCE=REMOTE\r\n").startswith(b"250")
        assert send_message(s, ehlo=False).startswith(b"250")
        assert send_message(s, ehlo=False).startswith(b"250")  # the next one: no XFORWARD
    first, second = (stored(app, i)[1].split(b"\r\n\r\n")[0] for i in (0, 1))
    forwarded = b"from origin-helo.example (origin.example [192.0.2.9])"
    assert (forwarded in first) != (forwarded in second)
    assert b"from relay.example (unknown [127.0.0.1])" in first + second
    assert "xforward" in app.log() and "IDENT=ABC123" in app.log()


def test_a_real_postfix_sends_xforward(make_appliance):
    """Postfix's SMTP client with smtp_send_xforward_command = yes: it sees XFORWARD
    in the EHLO reply, sends what it knows of a locally submitted message
    (SOURCE=LOCAL), and the message is spooled."""
    from .postfix import PostfixRelay, unavailable_reason

    if unavailable_reason():
        pytest.skip(unavailable_reason())
    app = make_appliance(TRUSTED, tls=False)
    relay = PostfixRelay(f"[127.0.0.1]:{app.port}")
    try:
        relay.start("smtp_send_xforward_command = yes\n")
        relay.send("alice@relay.test.example", ["bob@example.net"],
                   b"Subject: xforward\nMessage-ID: <xforward-1@relay.test.example>\n\nhi\n")
        relay.flush()
        relay.wait_log("status=sent")
    finally:
        relay.stop()
    assert len(app.queued()) == 1
    log = app.log()
    assert 'xforward session=' in log and 'attributes="SOURCE=LOCAL"' in log


def test_xclient_moves_the_per_ip_count_to_the_named_client(make_appliance):
    """The old client's session ends for the flow plugin (its count is released),
    the named client's begins (counted, and refused over the limit)."""
    app = make_appliance(TRUSTED + """
        [flow]
        exempt_networks = []
        [flow.concurrent_connections_per_ip]
        limit = 1
    """)
    first = dial(app)
    assert talk(first, b"XCLIENT ADDR=192.0.2.7\r\n").startswith(b"220 ")
    second = dial(app)  # 127.0.0.1 no longer holds a session: served
    reply = talk(second, b"XCLIENT ADDR=192.0.2.7\r\n")  # 192.0.2.7 does
    assert reply.startswith(b"421 4.7.0") and b"192.0.2.7 (limit 1)" in reply
    assert second.recv(10) == b""
    assert b"[192.0.2.7]" in talk(first, b"EHLO client.example\r\n")
    first.close()
    second.close()
