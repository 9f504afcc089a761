"""Scenario S4: hold many idle SMTP sessions open and measure the server meanwhile.

Each session connects, reads the 220 greeting, sends EHLO, reads the 250 reply and
then stays silent. One thread drives all sockets with ``selectors`` (epoll), at most
``concurrency`` handshakes in flight so the server's listen queue never overflows.
While every session is held, it measures

* the server's memory: sum of VmRSS and of Pss over its whole process tree;
* how long a NEW client waits for its greeting (``probes`` fresh connections,
  one after another), which must stay under one second;
* that the held sessions are still open (the server closed none of them).

Then it sends QUIT on every session and closes them all.
"""

from __future__ import annotations

import errno
import selectors
import socket
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

from procstat import tree_memory
from targets import LOOPBACK, banner_time

CONNECTING, GREETING, EHLO, IDLE = range(4)


@dataclass
class Session:
    sock: socket.socket
    state: int = CONNECTING
    buf: bytes = b""
    lines: list[bytes] = field(default_factory=list)


def _complete_reply(session: Session) -> int | None:
    """Consume one complete reply from the buffer; return its code, or None."""
    while b"\r\n" in session.buf:
        line, session.buf = session.buf.split(b"\r\n", 1)
        session.lines.append(line)
        if len(line) < 3 or not line[:3].isdigit():
            return -1
        if len(line) == 3 or line[3:4] == b" ":
            session.lines.clear()
            return int(line[:3])
    return None


class IdleSessions:
    def __init__(self, port: int, count: int, concurrency: int = 100) -> None:
        self.addr = (LOOPBACK, port)
        self.count = count
        self.concurrency = concurrency
        self.sel = selectors.DefaultSelector()
        self.established = 0
        self.in_flight = 0
        self.started = 0
        self.closed_by_server = 0
        self.errors: Counter[str] = Counter()
        self.sessions: list[Session] = []

    # -- driving ----------------------------------------------------------------------

    def _fail(self, s: Session, why: str) -> None:
        if s.state == IDLE:
            self.closed_by_server += 1
            self.established -= 1
        else:
            self.in_flight -= 1
        self.errors[why] += 1
        self.sel.unregister(s.sock)
        s.sock.close()
        s.state = -1

    def _open_more(self) -> None:
        while self.started < self.count and self.in_flight < self.concurrency:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            self.started += 1
            err = sock.connect_ex(self.addr)
            if err not in (0, errno.EINPROGRESS):
                self.errors[f"connect: {errno.errorcode.get(err, err)}"] += 1
                sock.close()
                continue
            s = Session(sock)
            self.sessions.append(s)
            self.in_flight += 1
            self.sel.register(sock, selectors.EVENT_WRITE, s)

    def _on_event(self, s: Session) -> None:
        if s.state == CONNECTING:
            err = s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._fail(s, f"connect: {errno.errorcode.get(err, err)}")
                return
            s.state = GREETING
            self.sel.modify(s.sock, selectors.EVENT_READ, s)
            return
        try:
            data = s.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(s, f"recv: {exc.strerror or exc}")
            return
        if not data:
            self._fail(s, "closed by server" if s.state == IDLE else "closed during handshake")
            return
        s.buf += data
        while (code := _complete_reply(s)) is not None:
            if s.state == GREETING:
                if code != 220:
                    self._fail(s, f"greeting {code}")
                    return
                s.sock.send(b"EHLO idle.bench.localhost\r\n")
                s.state = EHLO
            elif s.state == EHLO:
                if code != 250:
                    self._fail(s, f"EHLO reply {code}")
                    return
                s.state = IDLE
                self.in_flight -= 1
                self.established += 1
            else:
                # An idle session got a reply it did not ask for (e.g. 421 timeout).
                self.errors[f"unsolicited {code}"] += 1

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, _mask in self.sel.select(timeout=min(left, 0.2)):
                self._on_event(key.data)

    def establish(self, timeout: float) -> float:
        t0 = time.monotonic()
        deadline = t0 + timeout
        while (self.started < self.count or self.in_flight) and time.monotonic() < deadline:
            self._open_more()
            for key, _mask in self.sel.select(timeout=0.2):
                self._on_event(key.data)
        if self.in_flight:
            self.errors["handshake timed out"] += self.in_flight
        return time.monotonic() - t0

    def close_all(self) -> None:
        for s in self.sessions:
            if s.state == -1:
                continue
            try:
                if s.state == IDLE:
                    s.sock.send(b"QUIT\r\n")
            except OSError:
                pass
            try:
                self.sel.unregister(s.sock)
            except (KeyError, ValueError):
                pass
            s.sock.close()
            s.state = -1
        self.sel.close()


def run_idle(
    port: int,
    count: int,
    server_pid: int,
    *,
    probes: int = 5,
    timeout: float = 300,
    settle: float = 2.0,
) -> dict:
    """Hold ``count`` idle sessions on ``port``; return the S4 measurements."""
    before = tree_memory(server_pid)
    idle = IdleSessions(port, count)
    try:
        setup_s = idle.establish(timeout)
        idle.pump(settle)
        during = tree_memory(server_pid)
        latencies: list[float] = []
        probe_errors: list[str] = []
        for _ in range(probes):
            try:
                latencies.append(banner_time(port, timeout=10.0))
            except (OSError, ConnectionError) as exc:
                probe_errors.append(str(exc))
            idle.pump(0.2)
        idle.pump(1.0)
        held = idle.established
    finally:
        idle.close_all()
    worst = max(latencies) if latencies else None
    ok = held == count and not probe_errors and worst is not None and worst < 1.0
    per_session = (during.rss_kib - before.rss_kib) / held if held else None
    return {
        "ok": ok,
        "sessions_wanted": count,
        "sessions_held": held,
        "setup_s": round(setup_s, 2),
        "errors": dict(idle.errors),
        "memory_before": before.as_dict(),
        "memory_during": during.as_dict(),
        "rss_kib_per_session": round(per_session, 1) if per_session is not None else None,
        "banner_latency_s": {
            "median": round(statistics.median(latencies), 4) if latencies else None,
            "max": round(worst, 4) if worst is not None else None,
            "all": [round(x, 4) for x in latencies],
        },
        "probe_errors": probe_errors,
    }
