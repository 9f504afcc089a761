"""One AUTH command in SMTP terms (RFC 4954): lines in, replies out.

The session feeds it the AUTH command's initial response and each client line;
it handles base64, ``=`` (empty initial response), ``*`` (cancel) and additional
data with success, and tells when the exchange is over and how it ended.
"""

from __future__ import annotations

import base64
import binascii

from attrs import frozen

from appliance.sasl.mechanism import Mechanism
from appliance.sasl.steps import Challenge, ExchangeOver, Failure, Step, Success

MAX_LINE = 12288  # RFC 4954 section 4: octets per line of the exchange, CRLF included


@frozen
class AuthReply:
    """An SMTP reply (same fields as the protocol engine's ``Reply``)."""

    code: int
    enhanced: str | None
    text: str

    def render(self) -> bytes:
        """``334 `` keeps its space even with nothing after it (RFC 4954)."""
        enhanced = f"{self.enhanced} " if self.enhanced else ""
        return f"{self.code} {enhanced}{self.text}\r\n".encode("ascii")


SUCCEEDED = AuthReply(235, "2.7.0", "Authentication successful")
LINE_TOO_LONG = Failure(500, "5.5.6", "Authentication exchange line is too long",
                        None, "line too long")


def decode(text: str | bytes) -> bytes | None:
    """Strict base64 (no stray characters), or None."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class AuthExchange:
    """Drives one mechanism through one AUTH command."""

    def __init__(self, mechanism: Mechanism) -> None:
        self.mechanism = mechanism
        self.result: Success | Failure | None = None
        self._pending: Success | None = None  # success sent as 334, waiting for ""

    @property
    def done(self) -> bool:
        return self.result is not None

    def start(self, initial_response: str | bytes | None) -> AuthReply:
        """``initial_response``: the AUTH command's second word as sent (``"="`` is
        an empty response), or None."""
        if initial_response is None:
            return self._step(self.mechanism.start(None))
        if initial_response in ("=", b"="):
            return self._step(self.mechanism.start(b""))
        data = decode(initial_response)
        if data is None:
            return self._end(Failure.bad_base64())
        return self._step(self.mechanism.start(data))

    def line(self, line: str | bytes) -> AuthReply:
        """One client line, without its CRLF."""
        if self.done:
            raise ExchangeOver("the AUTH exchange is over")
        if len(line) + 2 > MAX_LINE:
            return self._end(LINE_TOO_LONG)
        if line in ("*", b"*"):
            return self._end(Failure.cancelled(self.mechanism.user))
        data = decode(line)
        if data is None:
            return self._end(Failure.bad_base64())
        if self._pending is not None:  # the empty reply to additional data with success
            if data:
                return self._end(Failure.malformed("expected an empty line", self._pending.authcid))
            return self._end(self._pending)
        return self._step(self.mechanism.respond(data))

    def _step(self, step: Step) -> AuthReply:
        if isinstance(step, Challenge):
            return AuthReply(334, None, base64.b64encode(step.data).decode("ascii"))
        if isinstance(step, Success) and step.data is not None:
            self._pending = step
            return AuthReply(334, None, base64.b64encode(step.data).decode("ascii"))
        return self._end(step)

    def _end(self, result: Success | Failure) -> AuthReply:
        self.result = result
        if isinstance(result, Success):
            return SUCCEEDED
        return AuthReply(result.code, result.enhanced, result.text)
