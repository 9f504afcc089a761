"""The per-session error limits through the real server, at their exact boundary:
N-1 errors leave the session open, the Nth is answered and then, without
waiting for another command, ``421 4.7.0`` and the connection is closed (as
Postfix's smtpd_hard_error_limit)."""

from __future__ import annotations

import socket

from tests.peers import wait_for

from .conftest import read_reply
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


def rcpts_until_closed(s: socket.socket, how_many: int) -> list[bytes]:
    """RCPT after RCPT until the server closes: the reply lines it sent."""
    data = b""
    for i in range(how_many):
        s.sendall(b"RCPT TO:<r%d@example.net>\r\n" % i)
        data += read_reply(s)
        if b"421 " in data:
            data += until_closed(s)
            break
    return data.splitlines()


def test_recipients_over_the_limit_count_as_errors_after_the_overshoot(make_appliance):
    app = make_appliance("[limits]\nmax_recipients = 2\nrecipient_overshoot = 5\n"
                         "max_bad_commands = 4\n")
    s = connect(app)
    talk(s, b"EHLO many.example\r\nMAIL FROM:<a@example.org>\r\n")
    lines = rcpts_until_closed(s, 500)
    # 2 accepted, 5 refused free of charge, then 4 errors: the fourth closes
    assert lines[:2] == [b"250 2.1.5 Ok"] * 2
    assert lines[2:-1] == [b"452 4.5.3 Too many recipients"] * (5 + 4)
    assert lines[-1] == ERRORS.rstrip()
    assert "too_many_errors" in app.log()


def test_repeated_refusals_are_logged_a_bounded_number_of_times(make_appliance):
    app = make_appliance("[limits]\nmax_recipients = 1\nmax_bad_commands = 1000\n")
    s = connect(app)
    talk(s, b"EHLO many.example\r\nMAIL FROM:<a@example.org>\r\n")
    answers = [talk(s, b"RCPT TO:<r%d@example.net>\r\n" % i) for i in range(501)]
    assert answers[0].startswith(b"250") and answers[-1].startswith(b"452 4.5.3")
    assert talk(s, b"QUIT\r\n").startswith(b"221")
    until_closed(s)
    log = wait_for(lambda: (lg := app.log()).count(" disconnect ") >= 2 and lg, "the end")
    refusals = [line for line in log.splitlines() if " reply " in line and "code=452" in line]
    assert 1 <= len(refusals) <= 10, len(refusals)
    [summary] = [line for line in log.splitlines() if " replies_not_logged " in line]
    assert f"count={500 - len(refusals)}" in summary and "command=RCPT" in summary
    assert "code=452" in summary
