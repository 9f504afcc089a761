"""Stress: the server is near its session cap. From ``server.stress_threshold``
percent of the sessions this process may hold (its share of
``server.max_sessions``), shorter timeouts are in force, as in Postfix's smtpd
under stress (STRESS_README: ``smtpd_timeout = ${stress?{10}:{300}}s``, with
``smtpd_per_request_deadline`` on): a client that holds a session by trickling
bytes is cut early, a client that talks at normal speed does not notice.

A wait that starts under stress uses the short timeout at once (``Session._recv``);
a wait that began before stress is cut by a watcher that runs only under stress."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import gevent

from appliance import logs
from appliance.config import Server as ServerConfig


class Cuttable(Protocol):
    """What the watcher needs of a session."""

    def overdue(self, now: float) -> bool: ...
    def cut(self) -> None: ...


class Stress:
    """Whether this server process is under stress, and the timeouts then."""

    def __init__(self, sessions: Callable[[], Iterable[Cuttable]]) -> None:
        self.active = False
        self.command_timeout = 10.0
        self.data_timeout = 10.0
        self._sessions = sessions
        self._since = 0.0
        self._watcher: gevent.Greenlet | None = None

    def timeout(self, busy: bool) -> float:
        """The wait allowed under stress: for a whole command, or (``busy``, in
        DATA/BDAT) for the next chunk of the message."""
        return self.data_timeout if busy else self.command_timeout

    def update(self, in_use: int, limit: int, config: ServerConfig) -> None:
        """Called when a session starts or ends: ``in_use`` of ``limit`` sessions."""
        self.command_timeout = float(config.stress_command_timeout)
        self.data_timeout = float(config.stress_data_timeout)
        percent = config.stress_threshold
        stressed = bool(percent) and in_use * 100 >= limit * percent
        if stressed == self.active:
            return
        self.active = stressed
        if stressed:
            self._since = time.monotonic()
            logs.event("stress_begins", level=logging.WARNING, sessions=in_use,
                       max_sessions=limit, threshold=f"{percent}%",
                       command_timeout=self.command_timeout, data_timeout=self.data_timeout)
            self._watcher = gevent.spawn(self._watch)
        else:
            logs.event("stress_ends", level=logging.WARNING, sessions=in_use,
                       max_sessions=limit, seconds=round(time.monotonic() - self._since, 1))
            if self._watcher is not None:
                self._watcher.kill(block=False)
                self._watcher = None

    def _watch(self) -> None:
        """Cut the sessions whose wait began before stress and is over by now."""
        while True:
            gevent.sleep(min(1.0, self.command_timeout / 2, self.data_timeout / 2))
            now = time.monotonic()
            for session in list(self._sessions()):
                if session.overdue(now):
                    session.cut()
