"""Session slots under a flood of slow clients, against the real server: the
``flow`` plugin's limit of concurrent sessions per network. Clients use 127.0.x.y
source addresses to be different clients and networks (Linux routes all of 127/8
to loopback)."""

from __future__ import annotations

import smtplib
import socket
import time

from .conftest import read_reply
from .test_receive import MSG, talk

HOST = b"mx.test.example"


def dial(app, src: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", app.port), timeout=10, source_address=(src, 0))
    assert read_reply(s).startswith(b"220 ")
    return s


def cut_within(s: socket.socket, seconds: float) -> tuple[bytes, float]:
    """What the server sent until it closed the connection, and how long that took."""
    t0 = time.monotonic()
    s.settimeout(seconds)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data, time.monotonic() - t0


def alive(s: socket.socket) -> bool:
    return talk(s, b"NOOP\r\n").startswith(b"250 ")


def send_message(app, src: str = "127.0.0.1") -> None:
    with smtplib.SMTP("127.0.0.1", app.port, timeout=10, source_address=(src, 0)) as c:
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}


# --- per network ----------------------------------------------------------------------------


NETWORK_LIMIT = """\
[flow]
exempt_networks = []
[flow.concurrent_connections_per_network]
limit = 2
"""


def test_concurrent_connections_per_network(make_appliance):
    app = make_appliance(NETWORK_LIMIT)
    held = [dial(app, "127.0.1.1"), dial(app, "127.0.1.2")]
    s = socket.create_connection(("127.0.0.1", app.port), timeout=10,
                                 source_address=("127.0.1.3", 0))
    reply, _ = cut_within(s, 5)
    assert reply == (b"421 4.7.0 " + HOST + b" Too many concurrent connections from"
                     b" 127.0.1.0/24 (limit 2), try again later\r\n")
    # Another network is served meanwhile, and the held sessions still work.
    send_message(app, "127.0.2.1")
    assert len(app.queued()) == 1
    assert all(alive(h) for h in held)
    # Ending one session of the network frees its place.
    assert talk(held[0], b"QUIT\r\n").startswith(b"221 ")
    deadline = time.monotonic() + 5
    while True:
        s = socket.create_connection(("127.0.0.1", app.port), timeout=10,
                                     source_address=("127.0.1.3", 0))
        if read_reply(s).startswith(b"220 ") or time.monotonic() > deadline:
            break
        s.close()
        time.sleep(0.05)
    assert alive(s)
    s.close()
    held[1].close()


def test_network_prefix_is_configurable(make_appliance):
    app = make_appliance(NETWORK_LIMIT.replace("[flow]\n", "[flow]\nnetwork_ipv4_prefix = 16\n"))
    held = [dial(app, "127.0.1.1"), dial(app, "127.0.2.1")]
    s = socket.create_connection(("127.0.0.1", app.port), timeout=10,
                                 source_address=("127.0.3.1", 0))
    reply, _ = cut_within(s, 5)
    assert reply.startswith(b"421 4.7.0 " + HOST + b" Too many concurrent connections from"
                            b" 127.0.0.0/16 (limit 2)")
    for h in held:
        h.close()
