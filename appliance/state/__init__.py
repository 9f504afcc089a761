"""The counters store of one process, across configuration generations.

:class:`StateKeeper` belongs to the server object. It keeps the process's local
counters (a :class:`LocalCounters` whose table is in this process, or, in a worker
of a multi-worker server, in the supervisor) and hands each configuration
generation its :class:`~appliance.counters.Counters`: the same object again when
``[server.state]`` did not change, so counts and Redis connections survive reloads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

from .. import logs
from ..config import State
from ..counters import Counters
from .sharing import BAN_OPERATIONS, TableClient, TableService
from .table import LocalTable

__all__ = ["LocalCounters", "StateKeeper", "control_path", "open_counters"]

#: The control socket's name in the spool directory (``[queue] directory``).
CONTROL_SOCKET = "state.sock"


def control_path(spool_directory: str | Path) -> Path:
    """Where the running server answers ``smtp-appliance bans`` for its local table."""
    return Path(spool_directory) / CONTROL_SOCKET


class LocalCounters:
    """The ``local`` backend as plugins see it: a stable object whose table can
    move to the supervisor when the server forks its workers."""

    def __init__(self, target: LocalTable | TableClient) -> None:
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

    def resize(self, max_keys: int) -> None:
        self.target.resize(max_keys)


def open_counters(settings: State, local: LocalCounters | None) -> Counters:
    """The store ``settings`` ask for. With Redis, ``local`` is the fail-open
    fallback; ``None`` makes every Redis outage raise StoreUnavailable (the CLI)."""
    if settings.backend == "redis":
        from .redis_store import RedisCounters

        return RedisCounters(settings, fallback=local)
    return local if local is not None else LocalCounters(LocalTable(settings.max_keys))


class StateKeeper:
    """This process's counters; owned by the server object."""

    def __init__(self) -> None:
        self.local = LocalCounters(LocalTable())
        self._current: tuple[State, Counters] | None = None
        self._service: TableService | None = None
        self._channels: list[socket.socket] = []
        self._greenlets: list[Any] = []
        self._owners = 0
        self._control: Any = None
        self._control_path: Path | None = None

    def counters_for(self, settings: State) -> Counters:
        """The store of a new configuration generation (the previous one if
        ``[server.state]`` is unchanged)."""
        if self._current is not None and self._current[0] == settings:
            return self._current[1]
        self.local.resize(settings.max_keys)
        store = open_counters(settings, self.local)
        self._current = (settings, store)
        return store

    # --- process model: the supervisor serves the table to its workers ------------

    def channel(self) -> tuple[socket.socket, socket.socket]:
        """A (supervisor end, worker end) pair; call before forking a worker."""
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def serve_worker(self, supervisor_end: socket.socket) -> None:
        """In the supervisor, after the fork: answer that worker's requests."""
        import gevent

        if self._service is None:
            assert isinstance(self.local.target, LocalTable)
            self._service = TableService(self.local.target)
        self._owners += 1
        self._channels.append(supervisor_end)
        glet = gevent.spawn(self._service.serve, supervisor_end, self._owners)
        self._greenlets.append(glet)
        glet.link(lambda g: self._forget(g, supervisor_end))

    def _forget(self, glet: Any, sock: socket.socket) -> None:
        if glet in self._greenlets:
            self._greenlets.remove(glet)
        if sock in self._channels:
            self._channels.remove(sock)

    def open_control(self, path: Path) -> None:
        """Answer the admin's ``bans`` commands on a unix socket (mode 0600) in the
        process that holds the local table (the supervisor, or the only process)."""
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
            logs.event("bans_control_unavailable", level=logging.WARNING, path=str(path),
                       error=str(exc), note="smtp-appliance bans cannot reach this server")
            return
        assert isinstance(self.local.target, LocalTable)
        service = TableService(self.local.target, BAN_OPERATIONS)

        def handle(sock: socket.socket, _address: Any) -> None:
            self._owners += 1
            service.serve(sock, -self._owners)

        self._control = StreamServer(listener, handle=handle)
        self._control.start()
        self._control_path = path

    def close_control(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
            with contextlib.suppress(OSError):
                self._control_path.unlink()

    def become_worker(self, worker_end: socket.socket) -> None:
        """In a freshly forked worker: count in the supervisor's table. The
        supervisor's channels to the other workers were inherited by the fork:
        close them here (only this process's copies) so they are not read here."""
        if self._control is not None:  # the supervisor's; keep its socket file
            self._control.close()
            self._control = None
        if self._service is not None:
            self._service.closing = True
        for sock in self._channels:
            sock.close()
        for glet in self._greenlets:
            glet.kill(block=False)
        self._channels, self._greenlets, self._service = [], [], None
        self.local.target = TableClient(worker_end, self.local.target.max_keys)
