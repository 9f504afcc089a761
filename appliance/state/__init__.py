"""The counters store of one process, across configuration generations.

:class:`StateKeeper` belongs to the server object. It keeps the appliance's local
table (shared memory, so the workers forked later count in it too) and hands each
configuration generation its :class:`~appliance.state.counters.Counters`: the same
object again when ``[server.state]`` did not change, so counts and Redis
connections survive reloads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

from appliance import logs
from appliance.config import State
from appliance.state.control import ControlService
from appliance.state.counters import Counters
from appliance.state.table import LocalTable

__all__ = ["LocalCounters", "StateKeeper", "control_path", "open_counters"]

#: The control socket's name in the spool directory (``[queue] directory``).
CONTROL_SOCKET = "state.sock"


def control_path(spool_directory: str | Path) -> Path:
    """Where the running server answers ``smtp-appliance bans`` for its local table."""
    return Path(spool_directory) / CONTROL_SOCKET


class LocalCounters:
    """The ``local`` backend as plugins see it: a stable object whose table is
    made anew, with a gauge column per worker, just before the workers are forked."""

    def __init__(self, target: LocalTable) -> None:
        self.target = target

    def hit(self, key: str, interval: float, amount: int = 1, fail: str = "open") -> int:
        return self.target.hit(key, interval, amount)

    def hit_many(self, hits: list, fail: str = "open") -> list[int]:
        return self.target.hit_many(hits)

    def count(self, key: str, interval: float, fail: str = "open") -> int:
        return self.target.count(key, interval)

    def enter(self, key: str, fail: str = "open") -> int:
        return self.target.enter(key)

    def leave(self, key: str) -> None:
        self.target.leave(key)

    def ban(self, key: str, seconds: float, reason: str) -> None:
        self.target.ban(key, seconds, reason)

    def banned(self, key: str) -> float:
        return self.target.banned(key)

    def bans(self) -> dict[str, tuple[float, str]]:
        return self.target.bans()

    def unban(self, key: str) -> bool:
        return self.target.unban(key)


def open_counters(settings: State, local: LocalCounters | None) -> Counters:
    """The store ``settings`` ask for. With Redis, ``local`` is the fail-open
    fallback; ``None`` makes every Redis outage raise StoreUnavailable (the CLI)."""
    if settings.backend == "redis":
        from appliance.clients.redis import RedisCounters

        return RedisCounters(settings, fallback=local)
    return local if local is not None else LocalCounters(LocalTable(settings.max_keys))


class StateKeeper:
    """This process's counters; owned by the server object."""

    def __init__(self) -> None:
        self.local: LocalCounters | None = None  # made at the first configuration
        self._current: tuple[State, Counters] | None = None
        self._control: Any = None
        self._control_path: Path | None = None

    def counters_for(self, settings: State) -> Counters:
        """The store of a new configuration generation (the previous one if
        ``[server.state]`` is unchanged)."""
        if self._current is not None and self._current[0] == settings:
            return self._current[1]
        if self.local is None:
            self.local = LocalCounters(LocalTable(settings.max_keys))
        elif settings.max_keys != self.local.target.max_keys:
            logs.event("state_max_keys_at_restart", level=logging.WARNING,
                       max_keys=self.local.target.max_keys, configured=settings.max_keys,
                       note="the local table keeps its size until the server restarts")
        store = open_counters(settings, self.local)
        self._current = (settings, store)
        return store

    # --- process model: workers forked later share the table ------------------------

    def prefork(self, workers: int) -> None:
        """In the supervisor, before forking: a table with a gauge column per worker
        (nothing has been counted yet: no session has started)."""
        assert self.local is not None
        self.local.target = LocalTable(self.local.target.max_keys, owners=workers)

    def become_worker(self, index: int) -> None:
        """In a freshly forked worker: count the gauges in column ``index``; the
        supervisor's control socket is not this process's to answer."""
        if self._control is not None:
            self._control.close()  # this process's copy; the socket file stays
            self._control = None
        self.local.target.owner = index

    def worker_gone(self, index: int) -> None:
        """In the supervisor: worker ``index`` exited, its sessions with it."""
        self.local.target.drop_owner(index)

    def open_control(self, path: Path, operations: dict[str, Any] | None = None) -> None:
        """Answer the admin's ``bans`` commands, and the server's ``operations``
        (stats, status, reload), on a unix socket (mode 0600) in the process that
        made the table (the supervisor, or the only process)."""
        from gevent.server import StreamServer

        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # left by a server that was killed
            listener.bind(str(path))
            os.chmod(path, 0o600)
            listener.listen(16)
        except OSError as exc:  # e.g. a path longer than a unix socket allows
            listener.close()
            logs.event("control_unavailable", level=logging.WARNING, path=str(path),
                       error=str(exc), note="smtp-appliance bans, stats, status and reload "
                       "cannot reach this server")
            return
        self._control = StreamServer(listener,
                                     handle=ControlService(self.local, operations).serve)
        self._control.start()
        self._control_path = path

    def close_control(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
            with contextlib.suppress(OSError):
                self._control_path.unlink()
