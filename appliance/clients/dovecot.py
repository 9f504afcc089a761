"""SMTP AUTH checked by Dovecot's auth server, as Postfix's ``smtpd_sasl_type = dovecot``.

Dovecot never hands out secrets: the client's SASL exchange is relayed, step by
step, over Dovecot's auth-client protocol (v1: ``AUTH``/``CONT`` out, ``CONT``/
``OK``/``FAIL`` back; https://doc.dovecot.org/developer_manual/design/auth_protocol).
One connection per process and socket carries the requests of every session,
told apart by id. Plain sockets and ``threading``: under the server's gevent
monkey-patching the reader is a greenlet and a waiting session yields.
"""

from __future__ import annotations

import base64
import binascii
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import ClassVar

from appliance.clients.endpoints import parse_socket
from appliance.sasl.mechanism import Mechanism, SASLOptions
from appliance.sasl.steps import BackendUnavailable, Challenge, Failure, Step, Success

PROTOCOL_MAJOR, PROTOCOL_MINOR = 1, 2
MAX_LINE = 65536  # Dovecot expects lines to fit 16 KiB; be generous, but bounded
# After a failed connect, fail at once for this long instead of making every EHLO
# and AUTH wait for a Dovecot that is down (or a host that drops packets).
RETRY_AFTER = 2.0


def escape(value: str) -> str:
    """Dovecot's tab-escaping (\\001 is the escape character)."""
    return (value.replace("\x01", "\x011").replace("\0", "\x010").replace("\t", "\x01t")
            .replace("\r", "\x01r").replace("\n", "\x01n"))


def unescape(value: str) -> str:
    if "\x01" not in value:
        return value
    out, chars = [], iter(value)
    for c in chars:
        if c == "\x01":
            c = next(chars, "")
            c = {"0": "\0", "1": "\x01", "t": "\t", "r": "\r", "n": "\n"}.get(c, c)
        out.append(c)
    return "".join(out)


def parse_params(fields: list[str]) -> dict[str, str]:
    """``name=value`` and bare boolean parameters (value ``""``)."""
    params = {}
    for f in fields:
        name, _, value = f.partition("=")
        params[name] = unescape(value)
    return params


class _Pending:
    """One request waiting for Dovecot's next line about it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: list[str] | None = None  # None after the wake-up: connection lost


class Connection:
    """One handshaken auth-client connection and its reader."""

    def __init__(self, spec: str, timeout: float) -> None:
        family, address = parse_socket(spec)
        self.spec, self.timeout = spec, timeout
        self.mechanisms: dict[str, frozenset[str]] = {}
        self.alive = True
        self._buffer = b""
        self._write_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._cancelled: list[int] = []  # ids of abandoned requests, sent with the next write
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(address)
            self.sock.sendall(f"VERSION\t{PROTOCOL_MAJOR}\t{PROTOCOL_MINOR}\n"
                              f"CPID\t{os.getpid()}\n".encode())
            self._handshake()
        except BaseException:
            self.sock.close()
            raise
        self.sock.settimeout(None)  # the reader waits as long as the connection lives
        threading.Thread(target=self._read_loop, name="dovecot-auth", daemon=True).start()

    def _handshake(self) -> None:
        while True:
            line = self._read_line()
            if line is None:
                raise OSError("Dovecot closed the connection during the handshake")
            verb, *args = line.split("\t")
            if verb == "VERSION" and (not args or args[0] != str(PROTOCOL_MAJOR)):
                raise OSError(f"Dovecot speaks auth protocol {args[:2]}, not {PROTOCOL_MAJOR}.x")
            if verb == "MECH" and args:
                self.mechanisms[args[0].upper()] = frozenset(args[1:])
            elif verb == "DONE":
                return

    def _read_line(self) -> str | None:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise OSError("Dovecot sent an over-long line")
            chunk = self.sock.recv(16384)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def _read_loop(self) -> None:
        try:
            while (line := self._read_line()) is not None:
                verb, *args = line.split("\t")
                if verb in ("OK", "CONT", "FAIL") and args and args[0].isdigit():
                    waiter = self._pending.pop(int(args[0]), None)
                    if waiter is not None:  # else: a request we gave up on
                        waiter.reply = [verb, *args[1:]]
                        waiter.event.set()
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Mark dead, wake every waiting request (they fail temporarily)."""
        self.alive = False
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.event.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def cancel(self, request_id: int) -> None:
        """Forget a request (safe from a finalizer: only notes it)."""
        self._pending.pop(request_id, None)
        self._cancelled.append(request_id)

    def ask(self, request_id: int, line: str) -> list[str]:
        """Send one line for ``request_id`` and wait for Dovecot's answer to it:
        ``[verb, params...]``. BackendUnavailable if the connection breaks or
        Dovecot does not answer within the timeout."""
        waiter = self._pending[request_id] = _Pending()
        try:
            with self._write_lock:
                cancels, self._cancelled = self._cancelled, []
                data = "".join(f"CANCEL\t{i}\n" for i in cancels) + line + "\n"
                self.sock.sendall(data.encode())
        except OSError as exc:
            self.close()
            raise BackendUnavailable(f"Dovecot at {self.spec}: {exc}") from None
        if not waiter.event.wait(self.timeout):
            self.cancel(request_id)
            raise BackendUnavailable(f"Dovecot at {self.spec} did not answer in time")
        if waiter.reply is None:
            raise BackendUnavailable(f"Dovecot at {self.spec} closed the connection")
        return waiter.reply


class DovecotAuth:
    """The client of one Dovecot auth socket, shared by every session of the
    process (``shared()``); reconnects on the next request after a failure."""

    _instances: ClassVar[dict[tuple[str, float], DovecotAuth]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, spec: str, timeout: float = 10.0) -> None:
        parse_socket(spec)
        self.spec, self.timeout = spec, timeout
        self.last_mechanisms: dict[str, frozenset[str]] | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._failed: tuple[float, str] | None = None  # (monotonic time, why)

    @classmethod
    def shared(cls, spec: str, timeout: float) -> DovecotAuth:
        with cls._instances_lock:
            key = (spec, float(timeout))
            if key not in cls._instances:
                cls._instances[key] = cls(spec, timeout)
            return cls._instances[key]

    def connection(self) -> Connection:
        """The live connection, connecting (and handshaking) if needed."""
        with self._lock:
            if self._conn is None or not self._conn.alive:
                self._conn = None
                if self._failed and time.monotonic() - self._failed[0] < RETRY_AFTER:
                    raise BackendUnavailable(self._failed[1])
                try:
                    self._conn = Connection(self.spec, self.timeout)
                except (OSError, ValueError) as exc:
                    why = f"cannot talk to Dovecot at {self.spec}: {exc or type(exc).__name__}"
                    self._failed = (time.monotonic(), why)
                    raise BackendUnavailable(why) from None
                self._failed = None
                self.last_mechanisms = self._conn.mechanisms
            return self._conn

    def mechanisms(self) -> dict[str, frozenset[str]] | None:
        """What Dovecot announces (name -> flags such as ``plaintext``), or, when it
        cannot be reached, what it announced last (None if never)."""
        try:
            return self.connection().mechanisms
        except BackendUnavailable:
            return self.last_mechanisms

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def request_params(*, local_ip: str = "", remote_ip: str = "", local_port: int = 0,
                   remote_port: int = 0, secured: bool = False, local_name: str = "",
                   penalty: bool = True, service: str = "smtp") -> list[str]:
    """The optional AUTH parameters Postfix sends: ``nologin`` (only check, no
    login process), addresses (Dovecot's penalty and logs use ``rip``) and
    ``secured`` over TLS (Dovecot refuses plaintext mechanisms without it unless
    ``disable_plaintext_auth = no``); ``no-penalty`` turns off Dovecot's delay
    for client IPs that recently failed."""
    params = [f"service={escape(service)}", "nologin"]
    if not penalty:
        params.append("no-penalty")
    for name, value in (("lip", local_ip), ("rip", remote_ip), ("lport", local_port),
                        ("rport", remote_port), ("local_name", local_name)):
        if value:
            params.append(f"{name}={escape(str(value))}")
    if secured:
        params.append("secured")
    return params


class DovecotMechanism(Mechanism):
    """One AUTH command relayed to Dovecot: same interface as the built-in
    mechanisms, so the session's ``AuthExchange`` drives it unchanged."""

    client_first = True  # Dovecot itself refuses an initial response it cannot take

    def __init__(self, options: SASLOptions, *, client: DovecotAuth, name: str,
                 params: list[str] | None = None) -> None:
        super().__init__(options)
        self.name = name  # an instance attribute: the name Dovecot announced
        self.client = client
        self.params = params if params is not None else request_params()
        self.plaintext = "plaintext" in (client.last_mechanisms or {}).get(name, ())
        self._conn: Connection | None = None
        self._id = 0
        self._finalizer: weakref.finalize | None = None

    def _first_challenge(self) -> Step:
        return self._begin(None)

    def _respond(self, data: bytes) -> Step:
        if self._conn is None:  # start() with an initial response
            return self._begin(data)
        if not self._conn.alive:
            raise BackendUnavailable("the Dovecot connection was lost mid-exchange")
        return self._answer(self._conn.ask(self._id, f"CONT\t{self._id}\t{_b64(data)}"))

    def _begin(self, initial: bytes | None) -> Step:
        self._conn = self.client.connection()
        self._id = self._conn.new_id()
        self._finalizer = weakref.finalize(self, self._conn.cancel, self._id)
        line = "\t".join(["AUTH", str(self._id), self.name, *self.params])
        if initial is not None:
            line += f"\tresp={_b64(initial)}"
        return self._answer(self._conn.ask(self._id, line))

    def _answer(self, reply: list[str]) -> Step:
        verb, args = reply[0], reply[1:]
        if verb == "CONT":
            data = _unb64(args[0] if args else "")
            if data is None:
                return self._end(Failure.temporary(self.user, "Dovecot sent bad base64"))
            return Challenge(data)
        params = parse_params(args)
        self.user = params.get("user") or self.user
        if verb == "OK":
            if not self.user:
                return self._end(Failure.temporary(None, "Dovecot's OK named no user"))
            extra = _unb64(params["resp"]) if "resp" in params else None
            return self._end(Success(identity=self.user, authcid=self.user, data=extra))
        reason = "dovecot: " + (params.get("reason") or "authentication failed")
        if "temp" in params:
            return self._end(Failure.temporary(self.user, reason))
        return self._end(Failure.bad_credentials(self.user, reason))

    def _end(self, step: Step) -> Step:
        if self._finalizer is not None:
            self._finalizer.detach()  # finished: nothing to cancel
        return step

    def _run(self, fn: Callable[..., Step], *args: bytes) -> Step:
        try:
            return super()._run(fn, *args)
        except Exception as exc:  # noqa: BLE001 - a protocol surprise is not a crash
            return self._finish(Failure.temporary(self.user, f"dovecot: {exc!r}"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
