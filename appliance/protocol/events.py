"""Events the SMTP engine produces, and the Reply the session answers with.

The engine turns bytes into these events; the session decides what to answer and
hands a :class:`Reply` back to the engine, which renders it and moves its state.
Nothing here does I/O.
"""

from __future__ import annotations

from attrs import field, frozen


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: ``next_event()`` returns this when it needs more bytes from the peer.
NEED_DATA = _Sentinel("NEED_DATA")


#: CR, LF and NUL inside a reply line would end the line early or smuggle a line of
#: the server's own to the client (RFC 5321 4.2): a text from a milter, a policy
#: server or a plugin may hold them, so they become spaces here, where every reply
#: is made.
_ONE_LINE = str.maketrans("\r\n\x00", "   ")


def _lines(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    lines = (text,) if isinstance(text, str) else tuple(text)
    return tuple(line.translate(_ONE_LINE) for line in lines)


@frozen
class Reply:
    """An SMTP reply: code, RFC 3463 enhanced code (or ``None``), one or more lines."""

    code: int
    enhanced: str | None
    text: tuple[str, ...] = field(converter=_lines)

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    def render(self) -> bytes:
        """Wire form: ``250-first`` ... ``250 last``, each line CRLF-terminated."""
        out = []
        last = len(self.text) - 1
        for i, line in enumerate(self.text):
            sep = " " if i == last else "-"
            prefix = f"{self.code}{sep}"
            if self.enhanced:
                prefix += self.enhanced + " "
            out.append(prefix + line + "\r\n")
        return "".join(out).encode("utf-8", "surrogateescape")


# --- commands ---------------------------------------------------------------


@frozen
class Helo:
    """HELO (``extended=False``) or EHLO (``extended=True``)."""

    hostname: str
    extended: bool


@frozen
class Mail:
    """MAIL FROM. ``address`` is ``""`` for the null sender ``<>``.

    ``params`` holds validated ESMTP parameters with upper-case keys:
    SIZE -> int, BODY -> "7BIT"|"8BITMIME"|"BINARYMIME", SMTPUTF8 -> True,
    AUTH -> str (xtext-decoded, "<>" kept as is), RET -> "FULL"|"HDRS",
    ENVID -> str (xtext-decoded).
    """

    address: str
    params: dict = field(factory=dict)


@frozen
class Rcpt:
    """RCPT TO. ``params``: NOTIFY -> tuple of "NEVER"|"SUCCESS"|"FAILURE"|"DELAY",
    ORCPT -> str (``addr-type;xtext-decoded-address``)."""

    address: str
    params: dict = field(factory=dict)


@frozen
class Data:
    """DATA. If the session answers 354, the engine switches to reading message text."""


@frozen
class Bdat:
    """BDAT <size> [LAST]. The chunk's bytes follow as DataChunk events, then DataEnd."""

    size: int
    last: bool


@frozen
class DataChunk:
    """Message content: dot-unstuffed, CRLF line endings, terminator removed."""

    data: bytes


@frozen
class DataEnd:
    """End of the DATA text or of one BDAT chunk.

    ``error`` is set when the content broke a rule (text line over the limit,
    bare CR/LF under the "reject" policy): the session must reject the message
    with that reply. ``last`` is False only for a non-final BDAT chunk.
    """

    error: Reply | None = None
    last: bool = True


@frozen
class Rset:
    pass


@frozen
class Noop:
    pass


@frozen
class Quit:
    pass


@frozen
class Help:
    topic: str = ""


@frozen
class Vrfy:
    argument: str


@frozen
class Expn:
    argument: str


@frozen
class StartTLS:
    """STARTTLS. After answering 220 the session upgrades and calls ``start_tls()``."""


@frozen
class Auth:
    """AUTH <mechanism> [initial-response]. ``initial_response`` is the raw base64
    text (``"="`` means empty), or ``None`` when absent."""

    mechanism: str
    initial_response: str | None = None


@frozen
class AuthResponse:
    """A client line during an AUTH exchange (after a 334); ``"*"`` cancels."""

    line: str


@frozen
class Xclient:
    """XCLIENT name=value... (Postfix's XCLIENT_README): a trusted proxy names the
    client it relays; values are xtext-decoded, names upper-case. Answered with a
    new 220 greeting, the session starts anew (as after the connect)."""

    attributes: dict = field(factory=dict)


@frozen
class Xforward:
    """XFORWARD name=value... (Postfix's XFORWARD_README): the original client of
    the next message, for its log lines and Received header. Answered with 250."""

    attributes: dict = field(factory=dict)


@frozen
class BadCommand:
    """Unknown verb, bad syntax, bad parameter, out-of-sequence command or over-long
    line. The session sends ``reply`` and counts it against the bad-command limit."""

    reply: Reply
    verb: str = ""


@frozen
class ConnectionClosed:
    """The peer closed its side (``receive_data(b"")`` was called)."""


Event = (
    Helo | Mail | Rcpt | Data | Bdat | DataChunk | DataEnd | Rset | Noop | Quit | Help
    | Vrfy | Expn | StartTLS | Auth | AuthResponse | Xclient | Xforward | BadCommand
    | ConnectionClosed
)
