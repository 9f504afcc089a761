"""Session slots under a flood of slow clients, against the real server: stress
mode (shorter timeouts from ``server.stress_threshold`` of ``server.max_sessions``)
at its exact boundary, for waits that began before and after stress, and the
``flow`` plugin's limit of concurrent sessions per network. Clients use 127.0.x.y
source addresses to be different clients and networks (Linux routes all of 127/8
to loopback)."""

from __future__ import annotations

import smtplib
import socket
import threading
import time

from .conftest import read_reply
from .test_receive import MSG, talk

HOST = b"mx.test.example"

# Stress from 3 of 6 sessions; 30 s to wait normally, 1 s under stress.
STRESS = """\
[server]
max_sessions = 6
stress_threshold = 50
stress_command_timeout = "1s"
stress_data_timeout = "1s"
[limits]
command_timeout = "30s"
data_timeout = "30s"
"""


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


class Talker(threading.Thread):
    """A session that keeps talking (NOOP every 0.2 s): never cut, keeps its slot."""

    def __init__(self, app) -> None:
        super().__init__(daemon=True)
        self.sock = dial(app)
        self.stop = threading.Event()
        self.ok = True

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.ok = self.ok and alive(self.sock)

    def done(self) -> bool:
        self.stop.set()
        self.join()
        self.sock.close()
        return self.ok


def test_stress_begins_at_its_threshold_and_cuts_slow_sessions(make_appliance):
    app = make_appliance(STRESS)
    early = dial(app)
    talkers = [Talker(app)]
    talkers[0].start()
    # Two of six sessions: below 50 %, the normal timeouts hold.
    time.sleep(1.6)
    assert alive(early)
    assert "stress_begins" not in app.log()

    # The third session reaches 50 %: stress. `early` has been waiting for its next
    # command since before: the watcher cuts it.
    talkers += [Talker(app), Talker(app)]
    for t in talkers[1:]:
        t.start()
    reply, waited = cut_within(early, 5)
    assert reply.startswith(b"421 4.4.2 ")
    assert waited < 3.5
    assert "stress_begins sessions=3 max_sessions=6 threshold=50%" in app.log()

    # A wait that starts under stress is a deadline for the whole command: bytes
    # that trickle in do not extend it.
    slow = dial(app)
    assert alive(slow)
    t0 = time.monotonic()
    slow.sendall(b"NO")
    time.sleep(0.5)
    slow.sendall(b"O")
    reply, _ = cut_within(slow, 5)
    assert reply.startswith(b"421 4.4.2 ")
    assert 0.9 < time.monotonic() - t0 < 2.5

    # A client that talks at normal speed is served meanwhile.
    send_message(app)
    assert len(app.queued()) == 1
    assert "stress_ends" not in app.log()

    # Below the threshold again: normal timeouts.
    assert talkers.pop().done() and talkers.pop().done()
    deadline = time.monotonic() + 5
    while "stress_ends" not in app.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "stress_ends sessions=2 " in app.log()
    later = dial(app)
    time.sleep(1.6)
    assert alive(later)
    later.close()
    assert all(t.done() for t in talkers)


def test_stress_cuts_a_slow_data_phase(make_appliance):
    app = make_appliance(STRESS)
    held = [Talker(app) for _ in range(3)]
    for h in held:
        h.start()
    s = dial(app)
    for line in (b"EHLO slow.example\r\n", b"MAIL FROM:<a@example.org>\r\n",
                 b"RCPT TO:<b@example.net>\r\n", b"DATA\r\n"):
        assert talk(s, line)[:1] in b"23"
    s.sendall(b"Subject: slow\r\n")
    reply, waited = cut_within(s, 5)
    assert reply.startswith(b"421 4.4.2 ")
    assert waited < 2.5
    assert app.queued() == []
    assert all(h.done() for h in held)


def test_stress_off_when_threshold_is_zero(make_appliance):
    app = make_appliance(STRESS.replace("stress_threshold = 50", "stress_threshold = 0"))
    held = [dial(app) for _ in range(6)]
    time.sleep(1.6)
    assert all(alive(h) for h in held)
    assert "stress_begins" not in app.log()
    for h in held:
        h.close()


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
