"""The session-wide and DATA timeouts of ``[limits]`` and a listener's own
``max_sessions``, through the real server: what the client hears, that nothing is
stored from a cut message, and that other clients are still served."""

from __future__ import annotations

import re
import select
import smtplib
import socket
import time

from .conftest import read_reply
from .test_receive import MSG, connect, talk

TIMEOUT_REPLY = b"421 4.4.2 Timeout exceeded, closing connection\r\n"
TOO_BUSY = b"421 4.3.2 Too many connections, try again later\r\n"


def closed(sock: socket.socket) -> bool:
    """The server has closed the connection (EOF, or a reset after its last words)."""
    sock.settimeout(5)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def still_serves(app, port: int | None = None) -> None:
    with smtplib.SMTP("127.0.0.1", port or app.port, timeout=10) as c:
        assert c.sendmail("other@example.org", ["b@example.net"], MSG) == {}


def test_session_timeout_cuts_a_talking_client_with_421_4_4_2(make_appliance):
    # command_timeout is far away: only the whole session's limit can end this one
    app = make_appliance('[limits]\nsession_timeout = "1500ms"\ncommand_timeout = "20s"\n')
    started = time.monotonic()
    s = connect(app)
    assert talk(s, b"EHLO busy.example\r\n").startswith(b"250")
    for _ in range(3):  # an active client, answered every time until the limit
        time.sleep(0.25)
        assert talk(s, b"NOOP\r\n").startswith(b"250 2.0.0")
    assert read_reply(s, timeout=10) == TIMEOUT_REPLY
    elapsed = time.monotonic() - started
    assert 1.4 <= elapsed < 8, elapsed
    assert closed(s)
    assert re.search(r" info timeout session=\w+ limit=session_timeout state=READY\n", app.log())
    still_serves(app)
    assert len(app.queued()) == 1


def test_data_timeout_421_4_4_2_and_nothing_stored(make_appliance):
    app = make_appliance('[limits]\ndata_timeout = "1s"\ncommand_timeout = "20s"\n')
    s = connect(app)
    talk(s, b"EHLO slow.example\r\n")
    assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<b@example.net>\r\n").startswith(b"250")
    assert talk(s, b"DATA\r\n").startswith(b"354")
    s.sendall(b"Subject: never finished\r\n\r\nthe first half of a bo")
    stopped = time.monotonic()
    assert read_reply(s, timeout=10) == TIMEOUT_REPLY
    assert 0.9 <= time.monotonic() - stopped < 8
    assert closed(s)
    assert app.queued() == []
    assert [p.name for p in (app.spool / "tmp").iterdir()] == []  # the spilled body too
    still_serves(app)
    assert len(app.queued()) == 1


def test_data_timeout_applies_to_bdat_chunks(make_appliance):
    app = make_appliance('[limits]\ndata_timeout = "1s"\ncommand_timeout = "20s"\n')
    s = connect(app)
    talk(s, b"EHLO slow.example\r\nMAIL FROM:<a@example.org>\r\n")
    assert talk(s, b"RCPT TO:<b@example.net>\r\n").startswith(b"250")
    s.sendall(b"BDAT 100 LAST\r\nSubject: short by half\r\n\r\n")
    assert read_reply(s, timeout=10) == TIMEOUT_REPLY
    assert closed(s)
    assert app.queued() == []


def spoke_within(s: socket.socket, seconds: float) -> bool:
    """Wait ``seconds`` for the client's next turn: True if the server spoke first."""
    return bool(select.select([s], [], [], seconds)[0])


def _trickle(s: socket.socket, pieces, every: float) -> bytes:
    """Send ``pieces`` one by one, ``every`` seconds apart, until the server speaks
    (or closes): what it said."""
    s.settimeout(every)
    for piece in pieces:
        try:
            s.sendall(piece)
            reply = s.recv(1000)
        except TimeoutError:
            continue
        except OSError:
            return b""
        return reply + (read_reply(s) if reply and not reply.endswith(b"\r\n") else b"")
    return b""


MESSAGE_TIMEOUT = ('[limits]\nmessage_timeout = "2s"\ndata_timeout = "20s"\n'
                   'command_timeout = "20s"\n')


def test_message_timeout_cuts_data_trickled_line_by_line(make_appliance):
    app = make_appliance(MESSAGE_TIMEOUT)
    s = connect(app)
    talk(s, b"EHLO trickle.example\r\n")
    assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<b@example.net>\r\n").startswith(b"250")
    assert talk(s, b"DATA\r\n").startswith(b"354")
    started = time.monotonic()
    # a line every 0.3 s: far within data_timeout each time, never done
    lines = (b"X-Line-%d: trickled\r\n" % i for i in range(100))
    assert _trickle(s, lines, 0.3) == TIMEOUT_REPLY
    assert 1.9 <= time.monotonic() - started < 6
    assert closed(s)
    assert app.queued() == []
    assert [p.name for p in (app.spool / "tmp").iterdir()] == []
    assert re.search(r" info timeout session=\w+ limit=message_timeout state=DATA\b", app.log())
    still_serves(app)


def test_message_timeout_counts_every_bdat_chunk_of_the_message(make_appliance):
    app = make_appliance(MESSAGE_TIMEOUT)
    s = connect(app)
    talk(s, b"EHLO trickle.example\r\nMAIL FROM:<a@example.org>\r\n")
    assert talk(s, b"RCPT TO:<b@example.net>\r\n").startswith(b"250")
    started = time.monotonic()
    replies = []
    for _ in range(40):  # one small chunk every 0.2 s, each answered, never LAST
        replies.append(talk(s, b"BDAT 4\r\nab\r\n"))
        if not replies[-1].startswith(b"250"):
            break
        if spoke_within(s, 0.2):
            replies.append(read_reply(s))
            break
    assert replies[-1] == TIMEOUT_REPLY, replies[-3:]
    assert 1.9 <= time.monotonic() - started < 6
    assert closed(s)
    assert app.queued() == []
    assert "limit=message_timeout" in app.log()


def test_message_timeout_is_per_message(make_appliance):
    # two messages of 1.2 s each in one session: neither reaches 2 s
    app = make_appliance(MESSAGE_TIMEOUT)
    s = connect(app)
    talk(s, b"EHLO patient.example\r\n")
    for _ in range(2):
        assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")
        assert talk(s, b"RCPT TO:<b@example.net>\r\n").startswith(b"250")
        assert talk(s, b"DATA\r\n").startswith(b"354")
        for i in range(4):
            s.sendall(b"X-Line-%d: slow\r\n" % i)
            time.sleep(0.3)
        assert talk(s, b"\r\nbody\r\n.\r\n").startswith(b"250 2.0.0 Ok: queued as")
    assert len(app.queued()) == 2


def test_session_timeout_holds_against_a_noop_every_half_second(make_appliance):
    app = make_appliance('[limits]\nsession_timeout = "2s"\ncommand_timeout = "20s"\n')
    s = connect(app)
    started = time.monotonic()
    answers = []
    for _ in range(20):  # valid commands, each answered, for 10 s if nobody stops it
        answers.append(talk(s, b"NOOP\r\n"))
        if answers[-1] != b"250 2.0.0 Ok\r\n":
            break
        if spoke_within(s, 0.5):
            answers.append(read_reply(s))
            break
    assert answers[-1] == TIMEOUT_REPLY, answers
    assert 1.9 <= time.monotonic() - started < 4
    assert closed(s)
    assert "limit=session_timeout" in app.log()


def _wait_for_no_sessions(app, timeout: float = 10) -> None:
    """The readiness probes of the fixture are sessions too: wait until they are over."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = app.log()
        if log.count(" info connect ") == log.count(" info disconnect "):
            return
        time.sleep(0.05)
    raise AssertionError("sessions still open:\n" + app.log())


def test_listener_max_sessions_exact_boundary(make_appliance):
    app = make_appliance('[listeners.mta]\nmax_sessions = 2\n',
                         listeners={"mta": {}, "other": {}})
    _wait_for_no_sessions(app)
    first, second = connect(app, app.ports["mta"]), connect(app, app.ports["mta"])
    third = socket.create_connection(("127.0.0.1", app.ports["mta"]), timeout=10)
    assert read_reply(third) == TOO_BUSY
    assert closed(third)
    # the cap is this listener's: another listener still serves
    other = connect(app, app.ports["other"])
    assert talk(other, b"EHLO other.example\r\n").startswith(b"250")
    assert talk(second, b"NOOP\r\n").startswith(b"250")  # the two admitted ones work
    assert talk(first, b"QUIT\r\n").startswith(b"221")
    assert closed(first)
    # one place free: exactly one more is served, the next is refused again
    again = connect(app, app.ports["mta"])
    assert talk(again, b"EHLO again.example\r\n").startswith(b"250")
    refused = socket.create_connection(("127.0.0.1", app.ports["mta"]), timeout=10)
    assert read_reply(refused) == TOO_BUSY
    assert closed(refused)
    assert "too_busy listener=mta" in app.log()
    assert "too_busy listener=other" not in app.log()
    for s in (second, other, again):
        s.close()
