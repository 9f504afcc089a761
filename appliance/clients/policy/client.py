"""Connections to one policy server, kept open and reused as Postfix does.

Postfix's smtpd keeps its connection to a policy server across requests and
sessions and closes it after ``max_idle`` unused or ``max_ttl`` in total. Here
many sessions of one worker run at once, so each request takes an idle
connection (or opens one) and gives it back when the reply has arrived. The
whole exchange (connect, send, reply) must finish within ``timeout``.
"""

from __future__ import annotations

import socket
import time

from appliance.clients.endpoints import parse_socket
from appliance.clients.policy.codec import PolicyProtocolError, ReplyReader, encode_request

#: Idle connections kept per server; a burst beyond this opens and closes.
MAX_IDLE_CONNECTIONS = 16


class PolicyUnavailable(Exception):
    """The server could not be reached, did not answer in time or answered
    something that is not a policy reply."""


class _Closed(Exception):
    """The server closed the connection before it replied."""


class Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.opened = time.monotonic()
        self.last_used = self.opened

    def exchange(self, request: bytes, deadline: float) -> dict[str, str]:
        self._settimeout(deadline)
        self.sock.sendall(request)
        reader = ReplyReader()
        while True:
            self._settimeout(deadline)
            data = self.sock.recv(4096)
            if not data:
                raise _Closed
            reply = reader.feed(data)
            if reply is not None:
                self.last_used = time.monotonic()
                return reply

    def _settimeout(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class PolicyClient:
    """Asks one policy server; raises :class:`PolicyUnavailable` on any failure."""

    def __init__(self, address: str, timeout: float, max_idle: float, max_ttl: float) -> None:
        self.address = address
        self.family, self.sockaddr = parse_socket(address)
        self.timeout = timeout
        self.max_idle = max_idle
        self.max_ttl = max_ttl
        self._idle: list[Connection] = []

    def ask(self, attributes: dict[str, object]) -> dict[str, str]:
        request = encode_request(attributes)
        deadline = time.monotonic() + self.timeout
        conn = self._idle_connection()
        if conn is not None:
            try:
                return self._exchange(conn, request, deadline)
            except _Closed:
                pass  # it closed an idle connection meanwhile: once more on a new one
        try:
            conn = self._connect(deadline)
        except TimeoutError:
            raise PolicyUnavailable(f"no connection within {self.timeout:g}s") from None
        except OSError as exc:
            raise PolicyUnavailable(f"cannot connect: {exc}") from None
        try:
            return self._exchange(conn, request, deadline)
        except _Closed:
            raise PolicyUnavailable("connection closed before the reply") from None

    def _exchange(self, conn: Connection, request: bytes, deadline: float) -> dict[str, str]:
        try:
            reply = conn.exchange(request, deadline)
        except _Closed:
            conn.close()
            raise
        except TimeoutError:
            conn.close()
            raise PolicyUnavailable(f"no reply within {self.timeout:g}s") from None
        except (BrokenPipeError, ConnectionResetError):
            conn.close()
            raise _Closed from None
        except OSError as exc:
            conn.close()
            raise PolicyUnavailable(f"connection failed: {exc}") from None
        except PolicyProtocolError as exc:
            conn.close()
            raise PolicyUnavailable(f"bad reply: {exc}") from None
        except BaseException:  # a time budget ran out mid-exchange: the stream is lost
            conn.close()
            raise
        self._give_back(conn)
        return reply

    def _idle_connection(self) -> Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.last_used < self.max_idle and now - conn.opened < self.max_ttl:
                return conn
            conn.close()
        return None

    def _give_back(self, conn: Connection) -> None:
        if len(self._idle) < MAX_IDLE_CONNECTIONS and \
                time.monotonic() - conn.opened < self.max_ttl:
            self._idle.append(conn)
        else:
            conn.close()

    def _connect(self, deadline: float) -> Connection:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.connect(self.sockaddr)
        except BaseException:
            sock.close()
            raise
        return Connection(sock)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
