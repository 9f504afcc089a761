"""What every fixture that starts a real peer (redis-server, dovecot, krb5kdc, the
appliance) needs: a free loopback port, and a stop that cannot hang."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

#: Ports are handed out from blocks below the kernel's ephemeral range.
FIRST_PORT = 10000
BLOCK = 2000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class _Ports:
    """Ports for test listeners, never the same one twice.

    Binding port 0 and closing hands out a port the kernel may give again at once, to
    the next caller or to any outgoing connection, so two listeners could get the same
    port. Instead each test process claims a block of ports below the ephemeral range
    (the kernel never picks those by itself) with a lock file that other test runs on
    the machine respect, hands them out in turn, and skips any that something else
    has bound.
    """

    def __init__(self) -> None:
        self._pid = 0
        self._first = FIRST_PORT
        self._next = 0
        self._lock: IO[str] | None = None

    def _claim(self) -> None:
        blocks = max(1, (_ephemeral_start() - FIRST_PORT) // BLOCK)
        directory = Path(tempfile.gettempdir()) / f"smtp-appliance-test-ports-{os.getuid()}"
        directory.mkdir(exist_ok=True)
        self._pid, self._next = os.getpid(), 0
        for i in range(blocks):
            block = (self._pid + i) % blocks
            lock = open(directory / f"block-{block}.lock", "w")  # held while we run
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self._lock, self._first = lock, FIRST_PORT + block * BLOCK
            return
        # Every block taken by other runs: share one; the bind check still guards.
        self._first = FIRST_PORT + self._pid % blocks * BLOCK

    def take(self, host: str) -> int:
        if self._pid != os.getpid():  # first use, or a forked child: its own block
            self._claim()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(BLOCK):
            port = self._first + self._next % BLOCK
            self._next += 1
            with socket.socket(family) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
        raise RuntimeError(f"no free port in {self._first}-{self._first + BLOCK - 1}")


_ports = _Ports()


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that no other caller of this function gets (see _Ports)."""
    return _ports.take(host)


def stop_process(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not gone within ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for(predicate, what: str = "a condition", timeout: float = 10):
    """Poll ``predicate`` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
