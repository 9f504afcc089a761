"""The running server's control socket: ``smtp-appliance bans``, ``stats``,
``status`` and ``reload`` reach the server there.

The bans of the ``local`` backend live in the server's shared memory, which only
the server's processes map. So the process that made the table (the only one, or
the supervisor) answers a unix socket ``state.sock`` (mode 0600) in the spool
directory, and the commands ask it there. Besides the ban operations it answers the
operations the server hands it (``appliance/server/operations.py``).

Each request and response is a 4-byte big-endian length and a JSON array:
``[op, *args]`` -> ``["ok", result]`` or ``["error", text]``.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from appliance import logs
from appliance.state.counters import StoreUnavailable

__all__ = ["BAN_OPERATIONS", "ControlClient", "ControlService", "connect"]

_HEADER = struct.Struct(">I")
_MAX_FRAME = 16 * 1024 * 1024
#: What the admin's command may do.
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
    return None if data is None else json.loads(data)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    parts = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            return None
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


class ControlService:
    """The server's side: answers the ban operations against one table, and the
    server's own ``operations`` (name -> function of the request's arguments; a
    ValueError is the refusal's text)."""

    def __init__(self, table: Any,
                 operations: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self.table = table
        self.operations = dict(operations or {})

    def serve(self, sock: socket.socket, _address: Any = None) -> None:
        """Answer ``sock`` until it closes."""
        try:
            while (request := _receive(sock)) is not None:
                _send(sock, self.answer(request))
        except (OSError, ValueError) as exc:
            logs.event("state_control_error", level=logging.WARNING, error=str(exc))
        finally:
            sock.close()

    def answer(self, request: Any) -> list[Any]:
        try:
            op, *args = request
            if op in self.operations:
                return ["ok", self.operations[op](*args)]
            if op not in BAN_OPERATIONS:
                return ["error", f"unknown operation {op!r}"]
            result = getattr(self.table, op)(*args)
        except (TypeError, ValueError) as exc:
            return ["error", str(exc)]
        if op == "bans":
            result = {k: list(v) for k, v in result.items()}
        return ["ok", result]


class ControlClient:
    """The command's side: the ban methods of the table, answered by the server.
    A server that went away raises :class:`StoreUnavailable`."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def call(self, op: str, *args: Any) -> Any:
        """Ask the server; its refusal raises ValueError with the server's text."""
        try:
            _send(self.sock, [op, *args])
            response = _receive(self.sock)
        except (OSError, ValueError) as exc:
            raise StoreUnavailable(str(exc) or type(exc).__name__) from None
        if response is None:
            raise StoreUnavailable("the server closed the control socket")
        status, result = response
        if status != "ok":
            raise ValueError(result)
        return result

    def banned(self, key: str) -> float:
        return float(self.call("banned", key))

    def bans(self) -> dict[str, tuple[float, str]]:
        return {k: (float(v[0]), v[1]) for k, v in self.call("bans").items()}

    def unban(self, key: str) -> bool:
        return bool(self.call("unban", key))


def connect(path: Path) -> ControlClient:
    """A client of the server answering on ``path``; OSError if none does."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return ControlClient(sock)
