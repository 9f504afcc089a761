"""MAIL parameters through the real server: only what EHLO advertised is accepted
(RFC 5321 4.1.1.11, RFC 3030 3)."""

from __future__ import annotations

import socket

from .conftest import read_reply


def _session(app) -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", app.port), timeout=10)
    assert read_reply(s).startswith(b"220 ")
    s.sendall(b"EHLO client.example\r\n")
    return s, read_reply(s)


def test_binarymime_not_advertised_is_refused_555(appliance):
    s, ehlo = _session(appliance)
    with s:
        assert b"CHUNKING" in ehlo and b"BINARYMIME" not in ehlo
        s.sendall(b"MAIL FROM:<a@example.org> BODY=BINARYMIME\r\n")
        assert read_reply(s) == b"555 5.5.4 BODY=BINARYMIME not supported\r\n"
        s.sendall(b"MAIL FROM:<a@example.org> BODY=8BITMIME\r\n")
        assert read_reply(s).startswith(b"250 2.1.0")
