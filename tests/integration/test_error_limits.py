"""The per-session error limits through the real server, at their exact boundary:
N-1 errors leave the session open, the Nth is answered and then, without
waiting for another command, ``421 4.7.0`` and the connection is closed (as
Postfix's smtpd_hard_error_limit)."""

from __future__ import annotations

import socket

from .test_flow import BAD_RCPT, flow
from .test_receive import connect, talk

ERRORS = b"421 4.7.0 Too many errors, closing connection\r\n"


def until_closed(s: socket.socket) -> bytes:
    """Everything the server still says, up to its close."""
    s.settimeout(10)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_the_bad_command_that_reaches_the_limit_closes_at_once(make_appliance):
    app = make_appliance("[limits]\nmax_bad_commands = 3\n")
    s = connect(app)
    for _ in range(2):
        assert talk(s, b"FOO\r\n").startswith(b"500 5.5.2")
    assert talk(s, b"NOOP\r\n").startswith(b"250")  # two errors: still served
    s.sendall(b"FOO\r\n")  # the third: its answer, then 421 and the close
    last = until_closed(s)
    assert last.startswith(b"500 5.5.2") and last.endswith(b"\r\n" + ERRORS), last
    assert "too_many_errors" in app.log() and " bad_commands=3" in app.log()


def test_the_bad_recipient_that_reaches_the_limit_closes_at_once(make_appliance):
    app = make_appliance(flow("[flow.bad_recipients]\nlimit = 3") + BAD_RCPT)
    s = connect(app)
    talk(s, b"EHLO harvester.example\r\n")
    assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")
    for i in range(2):
        assert talk(s, b"RCPT TO:<bad%d@example.net>\r\n" % i).startswith(b"550 5.1.1")
    assert talk(s, b"RCPT TO:<good@example.net>\r\n").startswith(b"250")
    s.sendall(b"RCPT TO:<bad3@example.net>\r\n")
    assert until_closed(s) == (
        b"550 5.1.1 No such user\r\n"
        b"421 4.7.0 Too many bad recipients (limit 3), closing connection\r\n")
    assert " bad_recipients=3" in app.log()


def test_bad_recipients_in_monitor_mode_close_nothing(make_appliance):
    app = make_appliance(flow("[flow.bad_recipients]\nlimit = 2\nmode = \"monitor\"")
                         + BAD_RCPT)
    s = connect(app)
    talk(s, b"EHLO harvester.example\r\nMAIL FROM:<a@example.org>\r\n")
    for i in range(4):
        assert talk(s, b"RCPT TO:<bad%d@example.net>\r\n" % i).startswith(b"550 5.1.1")
    assert talk(s, b"RCPT TO:<good@example.net>\r\n").startswith(b"250")
    assert "flow_would_refuse" in app.log()
