"""How long a session may wait for its client: the rest of ``session_timeout``,
``command_timeout`` per read (in DATA/BDAT ``data_timeout``, and the rest of
``message_timeout`` for the whole data of the message, so that a client trickling
it line by line is cut too), and under stress (``stress.py``) at most the stress
timeout from the start of the wait for this command, so a client that trickles a
command byte by byte is cut too (docs/configuration.md, ``[limits]``, ``[server]``)."""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.server.stress import Stress

#: The most a session reads from its socket at once.
READ_SIZE = 65536


class Waits:
    def __init__(self, limits: Any, stress: Stress) -> None:
        self.limits = limits
        self.stress = stress
        self.deadline = time.monotonic() + float(limits.session_timeout)
        self.data_deadline: float | None = None  # message_timeout, from DATA or BDAT on
        self.since: float | None = None  # when the wait for this command began
        self.reading = False
        self.cut_short = False  # the stress watcher ended the wait
        self._bound = ""  # the setting the current read waits under

    @property
    def limit(self) -> str:
        """The setting a timeout came from, for its log line."""
        return "stress" if self.cut_short else self._bound

    def next_command(self) -> None:
        """A command arrived: the next read waits for the next one."""
        self.since = None

    def begin_data(self) -> None:
        """DATA or the first BDAT of a message: ``message_timeout`` starts."""
        self.data_deadline = time.monotonic() + float(self.limits.message_timeout)

    def end_data(self) -> None:
        self.data_deadline = None

    def start_read(self, busy: bool) -> float:
        """The timeout for the read about to start (``busy``: in DATA/BDAT); raises
        TimeoutError when no time is left."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        wait, self._bound = self._allowed(now, busy)
        if wait <= 0:
            raise TimeoutError
        self.reading = True
        return wait

    def _allowed(self, now: float, busy: bool) -> tuple[float, str]:
        waits = [(self.deadline - now, "session_timeout")]
        if busy:
            waits.append((float(self.limits.data_timeout), "data_timeout"))
            if self.data_deadline is not None:
                waits.append((self.data_deadline - now, "message_timeout"))
        else:
            waits.append((float(self.limits.command_timeout), "command_timeout"))
        if self.stress.active:
            waits.append((self.since + self.stress.timeout(busy) - now, "stress"))
        return min(waits)

    def overdue(self, now: float, busy: bool) -> bool:
        """Waiting in a read for longer than stress allows (for the stress watcher)."""
        return (self.reading and self.since is not None
                and now - self.since >= self.stress.timeout(busy))

    def cut(self, sock: socket.socket) -> None:
        """End the current wait as a timeout: shut the socket's read side (through a
        duplicate descriptor, which leaves a TLS layer intact for the 421)."""
        self.cut_short = True
        try:
            with socket.socket(fileno=os.dup(sock.fileno())) as dup:
                dup.shutdown(socket.SHUT_RD)
        except OSError:
            pass
