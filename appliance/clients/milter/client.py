"""One connection to one milter for one SMTP session: sockets and timeouts around
the codec. Under the server, sockets are gevent's (monkey-patched), so a slow
milter delays only its own session.

Every wait is bounded twice: by the milter's own timeout for the step (connect,
command, end of message) and by the caller's deadline (what is left of the
plugin's time budget). Anything that goes wrong (refused, timed out, closed,
garbage) raises :class:`MilterFailure`; the caller applies the default action.
"""

from __future__ import annotations

import socket
import time
from typing import BinaryIO

from attrs import field, frozen

from appliance.clients.endpoints import parse_socket
from appliance.clients.milter import codec
from appliance.clients.milter.codec import Decision, Modification, Negotiated


class MilterFailure(Exception):
    """The milter is down, timed out, closed the connection or broke the protocol."""


@frozen
class MilterSpec:
    """One configured milter (``[[milter.milters]]``), times in seconds."""

    name: str
    socket: str
    connect_timeout: float = 5.0
    command_timeout: float = 10.0
    eom_timeout: float = 20.0
    default_action: str = "tempfail"  # tempfail | reject | accept
    macros: dict[str, list[str]] = field(factory=dict)  # step -> names
    macro_values: dict[str, str] = field(factory=dict)  # fixed values
    on_demand: bool = False  # only when a rule adds it


class MilterClient:
    """The MTA side of one milter connection."""

    def __init__(self, spec: MilterSpec) -> None:
        self.spec = spec
        self.sock: socket.socket | None = None
        self.neg: Negotiated | None = None
        self._decoder = codec.FrameDecoder()

    # --- connection ----------------------------------------------------------------

    def open(self, deadline: float) -> Negotiated:
        family, address = parse_socket(self.spec.socket)
        try:
            if family == socket.AF_UNIX:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self._left(deadline, self.spec.connect_timeout))
                sock.connect(address)
            else:
                sock = socket.create_connection(
                    address, timeout=self._left(deadline, self.spec.connect_timeout))
        except OSError as exc:
            raise MilterFailure(f"cannot connect to {self.spec.socket}: {exc}") from None
        self.sock = sock
        self._send(codec.encode_optneg(), deadline)
        try:
            self.neg = codec.negotiate(self._read(deadline, self.spec.command_timeout))
        except codec.ProtocolError as exc:
            self.close()
            raise MilterFailure(f"negotiation failed: {exc}") from None
        return self.neg

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def quit(self) -> None:
        """Say goodbye without waiting for anything (the milter does not answer)."""
        if self.sock is not None:
            try:
                self.sock.settimeout(1.0)
                self.sock.sendall(codec.encode_simple(codec.QUIT))
            except OSError:
                pass
        self.close()

    # --- steps ---------------------------------------------------------------------

    def step(self, stage: str, data: bytes, nr_flag: int, macros: dict[str, str],
             deadline: float) -> Decision | None:
        """Send one command (after its macros); its decision, or None when the
        milter negotiated not to answer this step."""
        out = b""
        if macros:
            out += codec.encode_macros(codec.STAGE_COMMAND[stage], macros)
        self._send(out + data, deadline)
        if nr_flag and not self.neg.answers(nr_flag):
            return None
        return self._decision(deadline, self.spec.command_timeout)

    def send_body(self, body: BinaryIO, deadline: float) -> Decision | None:
        """Body chunks; stops early at a decision that is not continue (a SKIP
        means: no more body, go on to end of message)."""
        answers = self.neg.answers(codec.P_NR_BODY)
        while chunk := body.read(codec.CHUNK_SIZE):
            self._send(codec.encode_body(chunk), deadline)
            if not answers:
                continue
            decision = self._decision(deadline, self.spec.eom_timeout)
            if decision.action == "skip":
                return None
            if decision.action != "continue":
                return decision
        return None

    def end_of_message(self, macros: dict[str, str], deadline: float
                       ) -> tuple[Decision, list[Modification]]:
        """End of message: the modifications the milter asks for, then its decision."""
        out = b""
        if macros:
            out += codec.encode_macros(codec.EOM, macros)
        self._send(out + codec.encode_simple(codec.EOM), deadline)
        mods: list[Modification] = []
        while True:
            item = self._interpret(deadline, self.spec.eom_timeout)
            if isinstance(item, Modification):
                mods.append(item)
            elif item.action != "skip":
                return item, mods

    def abort(self, deadline: float) -> None:
        """Forget the message in progress (RSET, refused, the client left)."""
        self._send(codec.encode_simple(codec.ABORT), deadline)

    # --- I/O -----------------------------------------------------------------------

    def _left(self, deadline: float, timeout: float) -> float:
        left = min(timeout, deadline - time.monotonic())
        if left <= 0:
            raise MilterFailure("out of time")
        return left

    def _send(self, data: bytes, deadline: float) -> None:
        if self.sock is None:
            raise MilterFailure("not connected")
        try:
            self.sock.settimeout(self._left(deadline, self.spec.command_timeout))
            self.sock.sendall(data)
        except OSError as exc:
            self.close()
            raise MilterFailure(f"send failed: {exc}") from None

    def _read(self, deadline: float, timeout: float) -> codec.Response:
        """The next frame; each PROGRESS restarts ``timeout`` (not the deadline)."""
        while True:
            try:
                resp = self._decoder.next()
            except codec.ProtocolError as exc:
                self.close()
                raise MilterFailure(str(exc)) from None
            if resp is not None:
                return resp
            if self.sock is None:
                raise MilterFailure("not connected")
            try:
                self.sock.settimeout(self._left(deadline, timeout))
                data = self.sock.recv(65536)
            except TimeoutError:
                self.close()
                raise MilterFailure("timed out") from None
            except OSError as exc:
                self.close()
                raise MilterFailure(f"receive failed: {exc}") from None
            if not data:
                self.close()
                raise MilterFailure("connection closed by the milter")
            self._decoder.feed(data)

    def _interpret(self, deadline: float, timeout: float) -> Decision | Modification:
        while True:
            resp = self._read(deadline, timeout)
            try:
                item = codec.interpret(resp)
            except codec.ProtocolError as exc:
                self.close()
                raise MilterFailure(str(exc)) from None
            if item is not None:  # None: PROGRESS, wait again with a fresh timeout
                return item

    def _decision(self, deadline: float, timeout: float) -> Decision:
        item = self._interpret(deadline, timeout)
        if isinstance(item, Modification):
            self.close()
            raise MilterFailure(f"{item.kind} outside end of message")
        return item
