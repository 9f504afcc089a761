"""``tests.peers.free_port``: the ports test listeners bind are never handed out twice,
neither in one test process nor across test runs at the same time on one machine."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.peers import free_port

ROOT = Path(__file__).resolve().parents[2]


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except OSError:
        return 32768


def test_never_the_same_port_twice_in_one_process():
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)


def test_ports_are_below_the_kernel_ephemeral_range():
    """The kernel never picks such a port for an outgoing connection or a bind to
    port 0, so nothing else takes it between free_port() and the listener's bind."""
    ports = [free_port() for _ in range(50)] + [free_port("::1") for _ in range(5)]
    assert all(1024 < port < _ephemeral_start() for port in ports)


def test_a_port_in_use_is_skipped():
    """Something outside the test suite listening on the next ports: they are passed
    over, and the port handed out can be bound."""
    last = free_port()
    busy = []
    try:
        for port in range(last + 1, last + 21):
            s = socket.socket()
            busy.append(s)
            try:
                s.bind(("127.0.0.1", port))
                s.listen()
            except OSError:
                pass  # in use already: busy all the same
        port = free_port()
        assert port not in range(last, last + 21)
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
    finally:
        for s in busy:
            s.close()


def test_another_test_run_at_the_same_time_gets_other_ports():
    mine = [free_port() for _ in range(200)]
    other = subprocess.run(
        [sys.executable, "-c", "import json; from tests.peers import free_port; "
                               "print(json.dumps([free_port() for _ in range(200)]))"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    theirs = json.loads(other.stdout)
    assert len(set(theirs)) == 200
    assert not set(mine) & set(theirs)
