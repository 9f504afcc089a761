"""One local table for all worker processes: the supervisor serves it over sockets.

With ``server.workers > 1`` the supervisor creates a unix socketpair for each worker
before forking it. The worker's end becomes a :class:`TableClient` (the worker's
``local`` counters); the supervisor's end is served by :class:`TableService`, one
greenlet per worker, against the one :class:`~appliance.state.table.LocalTable`.
So a per-IP limit holds for the whole appliance whichever worker a connection
lands on. When a worker exits, its gauges (its open sessions) are dropped.

Each request and response is a 4-byte big-endian length and a JSON array:
``[seq, "hit", key, interval, amount]`` -> ``[seq, "ok", result]`` or
``[seq, "error", text]``; responses come back in order. ``hit_many`` carries the
limits of one SMTP command in one frame: ``[seq, "hit_many", [[key, interval,
amount], ...]]`` -> ``[seq, "ok", [count, ...]]``. The supervisor answers from
memory without yielding, so a round trip costs two small socket writes.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
from typing import Any

from .. import logs
from ..counters import StoreUnavailable
from .table import LocalTable

__all__ = ["BAN_OPERATIONS", "TableClient", "TableService"]

_HEADER = struct.Struct(">I")
_MAX_FRAME = 64 * 1024 * 1024
#: The operations a client may ask for, with the owner-aware ones marked.
_OPERATIONS = {"hit", "hit_many", "count", "enter", "leave", "ban", "banned", "bans",
               "unban", "resize"}
_OWNED = {"enter", "leave"}
#: What the admin's command may do through the control socket.
BAN_OPERATIONS = frozenset({"banned", "bans", "unban"})


def _send(sock: socket.socket, message: Any) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    sock.sendall(_HEADER.pack(len(data)) + data)


def _receive(sock: socket.socket) -> Any:
    """The next message, or None at end of stream."""
    header = _read_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > _MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    data = _read_exactly(sock, size)
    if data is None:
        return None
    return json.loads(data)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    parts = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            return None
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


class TableService:
    """The supervisor's side: answers requests against one table."""

    def __init__(self, table: LocalTable, operations: frozenset[str] | set[str] = _OPERATIONS,
                 ) -> None:
        self.table = table
        self.operations = operations
        self.closing = False  # set in a forked worker, which closes its copies

    def serve(self, sock: socket.socket, owner: int) -> None:
        """Answer ``sock`` until it closes; then drop the gauges of ``owner``."""
        try:
            while True:
                request = _receive(sock)
                if request is None:
                    return
                _send(sock, self.answer(request, owner))
        except (OSError, ValueError) as exc:
            if self.closing:
                return
            logs.event("state_channel_error", level=logging.WARNING, owner=owner,
                       error=str(exc))
        finally:
            self.table.drop_owner(owner)
            sock.close()

    def answer(self, request: Any, owner: int) -> list[Any]:
        """``[seq, op, *args]`` -> ``[seq, "ok", result]`` or ``[seq, "error", text]``."""
        seq = request[0] if isinstance(request, list) and request else None
        try:
            seq, op, *args = request
            if op not in self.operations:
                return [seq, "error", f"unknown operation {op!r}"]
            extra = {"owner": owner} if op in _OWNED else {}
            result = getattr(self.table, op)(*args, **extra)
        except (TypeError, ValueError) as exc:
            return [seq, "error", str(exc)]
        if op == "bans":
            result = {k: list(v) for k, v in result.items()}
        return [seq, "ok", result]


class TableClient:
    """A worker's side: the same methods as the table, answered by the supervisor.

    Requests are numbered and pipelined: a reader greenlet hands each response to
    the greenlet waiting for it, so a session killed while it waits (a plugin's time
    budget) leaves the channel in step for the others. If the supervisor is gone
    (the appliance is shutting down), the worker goes on with a table of its own and
    says so once in the log; with ``fallback=False`` (the admin's command) it raises
    StoreUnavailable instead.
    """

    def __init__(self, sock: socket.socket, max_keys: int, fallback: bool = True) -> None:
        from gevent.lock import Semaphore

        self.sock = sock
        self._sending = Semaphore()
        self._waiting: dict[int, Any] = {}   # seq -> gevent AsyncResult
        self._seq = 0
        self._reader: Any = None
        self._lost = ""                      # why the channel is gone, once it is
        self._own: LocalTable | None = None
        self._max_keys = max_keys
        self._fallback = fallback

    def _call(self, op: str, *args: Any) -> Any:
        if not self._lost:
            import gevent
            from gevent.event import AsyncResult

            if self._reader is None:
                self._reader = gevent.spawn(self._read_responses)
            self._seq += 1
            seq, response = self._seq, AsyncResult()
            self._waiting[seq] = response
            try:
                with self._sending:
                    _send(self.sock, [seq, op, *args])
                status, result = response.get()
            except OSError as exc:
                self._channel_lost(str(exc))
            else:
                if status == "lost":
                    pass
                elif status != "ok":
                    raise ValueError(result)
                else:
                    return result
            finally:
                self._waiting.pop(seq, None)
        if not self._fallback:
            raise StoreUnavailable(self._lost)
        if self._own is None:
            logs.event("state_supervisor_lost", level=logging.WARNING, error=self._lost,
                       note="counting in this worker only from now on")
            self._own = LocalTable(self._max_keys)
        return getattr(self._own, op)(*args)

    def _read_responses(self) -> None:
        try:
            while True:
                message = _receive(self.sock)
                if message is None:
                    self._channel_lost("the supervisor closed the channel")
                    return
                seq, status, result = message
                waiter = self._waiting.pop(seq, None)
                if waiter is not None:  # None: its caller gave up waiting
                    waiter.set((status, result))
        except (OSError, ValueError) as exc:
            self._channel_lost(str(exc) or type(exc).__name__)

    def _channel_lost(self, why: str) -> None:
        if not self._lost:
            self._lost = why
        for waiter in list(self._waiting.values()):
            waiter.set(("lost", why))
        self._waiting.clear()

    def hit(self, key: str, interval: float, amount: int = 1, fail: str = "open") -> int:
        return self._call("hit", key, float(interval), int(amount))

    def hit_many(self, hits: list, fail: str = "open") -> list[int]:
        return self._call("hit_many", [[str(k), float(i), int(a)] for k, i, a in hits])

    def count(self, key: str, interval: float, fail: str = "open") -> int:
        return self._call("count", key, float(interval))

    def enter(self, key: str, fail: str = "open") -> int:
        return self._call("enter", key)

    def leave(self, key: str) -> None:
        self._call("leave", key)

    def ban(self, key: str, seconds: float, reason: str) -> None:
        self._call("ban", key, float(seconds), str(reason))

    def banned(self, key: str) -> float:
        return float(self._call("banned", key))

    def bans(self) -> dict[str, tuple[float, str]]:
        return {k: (float(v[0]), v[1]) for k, v in self._call("bans").items()}

    def unban(self, key: str) -> bool:
        return bool(self._call("unban", key))

    def resize(self, max_keys: int) -> None:
        self._max_keys = max_keys
        self._call("resize", int(max_keys))
