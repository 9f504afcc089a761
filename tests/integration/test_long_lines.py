"""Message lines longer than RFC 5321's 1000 octets through the real server: accepted
by default, as Postfix and Exim do; refused over ``[limits] max_message_line_length``.
Command lines stay limited to 512 octets (RFC 5321 4.5.3.1.4)."""

from __future__ import annotations

import json
import socket

from .conftest import read_reply

LONG = b"x" * 4998 + b"\r\n"  # 5000 octets with its CRLF


def _deliver(app, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
        assert read_reply(s).startswith(b"220 ")
        s.sendall(b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n"
                  b"RCPT TO:<b@example.net>\r\nDATA\r\n")
        replies = b""
        while not replies.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n"):
            replies += read_reply(s)
        s.sendall(b"Subject: long\r\n\r\n" + body + b".\r\n")
        return read_reply(s)


def test_5000_octet_body_line_is_accepted_by_default(appliance):
    reply = _deliver(appliance, b"short\r\n" + LONG + b"end\r\n")
    assert reply.startswith(b"250 2.0.0 Ok: queued"), reply
    [envelope] = appliance.queued()
    stored = envelope.with_suffix(".msg").read_bytes()
    assert stored.endswith(b"\r\n\r\nshort\r\n" + LONG + b"end\r\n")
    assert json.loads(envelope.read_text())["size"] == len(stored)


def test_line_over_the_configured_limit_is_refused(make_appliance):
    app = make_appliance("[limits]\nmax_message_line_length = 4999\n")
    assert _deliver(app, LONG) == b"500 5.5.6 Line too long\r\n"
    assert app.queued() == []
    app.stop()
    app = make_appliance("[limits]\nmax_message_line_length = 5000\n")
    assert _deliver(app, LONG).startswith(b"250 2.0.0 Ok: queued")


def test_command_lines_stay_at_512_octets(appliance):
    with socket.create_connection(("127.0.0.1", appliance.port), timeout=10) as s:
        assert read_reply(s).startswith(b"220 ")
        s.sendall(b"EHLO " + b"h" * 505 + b"\r\n")  # 512 octets
        assert read_reply(s).startswith(b"250")
        s.sendall(b"EHLO " + b"h" * 506 + b"\r\n")  # 513 octets
        assert read_reply(s) == b"500 5.5.2 Line too long\r\n"
