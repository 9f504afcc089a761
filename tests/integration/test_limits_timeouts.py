"""The session-wide and DATA timeouts of ``[limits]`` and a listener's own
``max_sessions``, through the real server: what the client hears, that nothing is
stored from a cut message, and that other clients are still served."""

from __future__ import annotations

import re
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
    assert re.search(r" info timeout session=\w+ state=READY\n", app.log())
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
