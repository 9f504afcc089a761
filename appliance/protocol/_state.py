"""The SMTP engine's states and every transition between them.

Rule 1: everything that decides which command is allowed when, and which state a
reply moves the connection to, lives in this file: as tables where it fits, as the
few lines of code right below the tables where it does not (h11 ``_state.py``).

Rule 2: the state moves when the session *answers* (``send(reply)``), not when the
engine parses a command: the session may refuse anything. The only exceptions are
the engine-triggered moves at the bottom of :class:`ConnectionState` (a valid BDAT
starts its chunk at once, an over-long AUTH line aborts the exchange, the TLS
upgrade, the peer closing).
"""

from __future__ import annotations

import enum

from appliance.protocol.events import (
    Auth,
    AuthResponse,
    BadCommand,
    Data,
    DataEnd,
    Event,
    Expn,
    Helo,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    StartTLS,
    Vrfy,
    Xclient,
    Xforward,
)


class State(enum.Enum):
    GREETED = "GREETED"  # greeting sent (or about to be); no HELO/EHLO yet
    READY = "READY"  # HELO/EHLO done, no mail transaction
    MAIL = "MAIL"  # MAIL accepted, no RCPT accepted yet
    RCPT = "RCPT"  # at least one RCPT accepted
    DATA = "DATA"  # 354 sent: reading the message text
    BDAT = "BDAT"  # BDAT transaction: reading a chunk, or between chunks
    AUTH = "AUTH"  # 334 sent: the next line is an AuthResponse
    TLS_PENDING = "TLS_PENDING"  # 220 sent to STARTTLS: nothing more until start_tls()
    NO_SERVICE = "NO_SERVICE"  # 554 greeting: only QUIT is served (RFC 5321 3.1)
    CLOSED = "CLOSED"  # 221 or 421 sent, or the peer closed

    def __str__(self) -> str:
        return self.value


#: A transition target meaning "READY if HELO/EHLO was done, else GREETED".
IDLE = "IDLE"

BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
NO_SERVICE_REPLY = Reply(503, "5.7.1", "No SMTP service here")

# --- Table 1: the commands each state admits -----------------------------------------
# Commands are only parsed in these states; in DATA, AUTH, TLS_PENDING and CLOSED the
# bytes are message text, an AUTH line, or ignored. A verb missing from its state's set
# is a BadCommand with the reply from Table 2 (default: 503 5.5.1).

_ANYTIME = frozenset({"HELO", "EHLO", "NOOP", "RSET", "QUIT", "HELP", "VRFY", "EXPN"})

#: XCLIENT and XFORWARD: outside a mail transaction (Postfix's READMEs); whether the
#: client may use them at all is the session's decision (smtp.xclient_hosts).
_PROXYING = frozenset({"XCLIENT", "XFORWARD"})

COMMANDS: dict[State, frozenset[str]] = {
    State.GREETED: _ANYTIME | _PROXYING | {"STARTTLS"},
    State.READY: _ANYTIME | _PROXYING | {"MAIL", "AUTH", "STARTTLS"},
    State.MAIL: _ANYTIME | {"RCPT"},
    State.RCPT: _ANYTIME | {"RCPT", "DATA", "BDAT"},
    State.BDAT: _ANYTIME | {"BDAT"},
    State.NO_SERVICE: frozenset({"QUIT"}),
}

# --- Table 2: the reply to a command its state does not admit -------------------------

_TRANSACTION = (State.MAIL, State.RCPT, State.BDAT)
_NOT_YET = (State.GREETED, State.READY)


def _each(verb: str, states: tuple[State, ...], reply: Reply) -> dict:
    return {(verb, s): reply for s in states}


SEQUENCE_ERRORS: dict[tuple[str, State], Reply] = {
    ("MAIL", State.GREETED): Reply(503, "5.5.1", "Send HELO/EHLO first"),
    **_each("MAIL", _TRANSACTION, Reply(503, "5.5.1", "Nested MAIL command")),
    **_each("RCPT", _NOT_YET, Reply(503, "5.5.1", "Need MAIL command")),
    ("RCPT", State.BDAT): Reply(503, "5.5.1", "RCPT not allowed after BDAT"),
    **_each("DATA", _NOT_YET, Reply(503, "5.5.1", "Need MAIL and RCPT commands")),
    ("DATA", State.MAIL): Reply(554, "5.5.1", "No valid recipients"),
    ("DATA", State.BDAT): Reply(503, "5.5.1", "DATA not allowed during a BDAT transaction"),
    **_each("BDAT", _NOT_YET, Reply(503, "5.5.1", "Need MAIL and RCPT commands")),
    ("BDAT", State.MAIL): Reply(503, "5.5.1", "No valid recipients"),
    ("AUTH", State.GREETED): Reply(503, "5.5.1", "Send EHLO first"),
    **_each("AUTH", _TRANSACTION,
            Reply(503, "5.5.1", "AUTH not permitted during a mail transaction")),
    **_each("STARTTLS", _TRANSACTION,
            Reply(503, "5.5.1", "STARTTLS not permitted during a mail transaction")),
    **_each("XCLIENT", _TRANSACTION, Reply(503, "5.5.1", "Mail transaction in progress")),
    **_each("XFORWARD", _TRANSACTION, Reply(503, "5.5.1", "Mail transaction in progress")),
}

# Guards: admitted by Table 1, refused on a flag (checked in ConnectionState.refusal).
AUTH_NEEDS_EHLO = Reply(503, "5.5.1", "Send EHLO first")
AUTH_TWICE = Reply(503, "5.5.1", "Already authenticated")
TLS_TWICE = Reply(503, "5.5.1", "TLS already active")
DATA_BINARYMIME = Reply(503, "5.5.1", "BODY=BINARYMIME requires BDAT, not DATA")

# --- Table 3: reply-triggered transitions ---------------------------------------------
# Keyed by what the reply answers (see reply_key), then by the exact code, the class
# ("2xx") or "*" (anything else), in that order of preference. No match: stay.
# A 421 closes whatever it answers (RFC 5321 3.8); a reply to a BadCommand never moves.

REPLY_TRANSITIONS: dict[str, dict[int | str, State | str]] = {
    "GREETING": {220: State.GREETED, 554: State.NO_SERVICE},
    "HELO": {"2xx": State.READY},
    "EHLO": {"2xx": State.READY},
    "MAIL": {"2xx": State.MAIL},
    "RCPT": {"2xx": State.RCPT},
    "DATA": {354: State.DATA},
    "RSET": {"2xx": IDLE},
    "AUTH": {334: State.AUTH, 235: State.READY},
    "AUTH_RESPONSE": {334: State.AUTH, 235: State.READY, "*": State.READY},
    "STARTTLS": {220: State.TLS_PENDING},
    # A new greeting: the session starts anew (a 554 one: only QUIT, RFC 5321 3.1).
    "XCLIENT": {220: State.GREETED, 554: State.NO_SERVICE},
    "QUIT": {221: State.CLOSED},
    "DATA_END": {"*": State.READY},  # end of DATA text or of the LAST BDAT chunk
    "CHUNK_END": {"2xx": State.BDAT, "*": State.READY},  # end of a non-LAST chunk
}

_SIMPLE_KEYS: dict[type, str] = {
    Mail: "MAIL", Rcpt: "RCPT", Data: "DATA", Rset: "RSET", Noop: "NOOP", Quit: "QUIT",
    Help: "HELP", Vrfy: "VRFY", Expn: "EXPN", StartTLS: "STARTTLS", Auth: "AUTH",
    AuthResponse: "AUTH_RESPONSE", BadCommand: "BAD_COMMAND", Xclient: "XCLIENT",
    Xforward: "XFORWARD",
}


def reply_key(event: Event) -> str | None:
    """What a reply to ``event`` answers, or None if the event takes no reply
    (Bdat, DataChunk, ConnectionClosed)."""
    if isinstance(event, Helo):
        return "EHLO" if event.extended else "HELO"
    if isinstance(event, DataEnd):
        return "DATA_END" if event.last else "CHUNK_END"
    return _SIMPLE_KEYS.get(type(event))


def target_of(key: str, code: int) -> State | str | None:
    if code == 421:
        return State.CLOSED
    row = REPLY_TRANSITIONS.get(key)
    if row is None:
        return None
    for selector in (code, f"{code // 100}xx", "*"):
        if selector in row:
            return row[selector]
    return None


#: XCLIENT's values for "not known" (Postfix's XCLIENT_README).
_UNSET = ("", "[UNAVAILABLE]", "[TEMPUNAVAIL]")


class ConnectionState:
    """The protocol state plus the flags the tables' guards read."""

    def __init__(self, *, tls_active: bool) -> None:
        self.state = State.GREETED
        self.tls_active = tls_active
        self.has_helo = False
        self.extended = False
        self.authenticated = False
        self.mail: Mail | None = None  # the accepted MAIL of the open transaction
        self.rcpts = 0

    @property
    def mail_utf8(self) -> bool:
        return self.mail is not None and bool(self.mail.params.get("SMTPUTF8"))

    def refusal(self, verb: str) -> Reply | None:
        """The BadCommand reply for ``verb`` in the current state, or None if allowed."""
        state = self.state
        if state is State.NO_SERVICE and verb != "QUIT":
            return NO_SERVICE_REPLY
        if verb not in COMMANDS.get(state, ()):
            return SEQUENCE_ERRORS.get((verb, state), BAD_SEQUENCE)
        if verb == "AUTH":
            if not self.extended:
                return AUTH_NEEDS_EHLO
            if self.authenticated:
                return AUTH_TWICE
        elif verb == "STARTTLS" and self.tls_active:
            return TLS_TWICE
        elif verb == "DATA" and self.mail is not None \
                and self.mail.params.get("BODY") == "BINARYMIME":
            return DATA_BINARYMIME
        return None

    def answer(self, key: str, code: int, event: Event | None) -> None:
        """Move on the reply ``code`` to what ``key`` names (Table 3)."""
        target = target_of(key, code)
        if target is None:
            return
        if target == IDLE:
            target = State.READY if self.has_helo else State.GREETED
        if key in ("HELO", "EHLO") and target is State.READY:
            self.has_helo = True
            self.extended = key == "EHLO"
        elif key == "MAIL" and target is State.MAIL:
            assert isinstance(event, Mail)
            self.mail = event
        elif key == "RCPT" and target is State.RCPT:
            self.rcpts += 1
        elif key in ("AUTH", "AUTH_RESPONSE") and code == 235:
            self.authenticated = True
        elif key == "XCLIENT" and target is State.GREETED:
            assert isinstance(event, Xclient)
            self.has_helo = self.extended = False
            # XCLIENT LOGIN=user: the relayed client authenticated with the proxy.
            self.authenticated = event.attributes.get("LOGIN", "") not in _UNSET
        if target in (State.READY, State.GREETED, State.CLOSED):
            self._clear_transaction()
        self.state = target

    # --- engine-triggered transitions -----------------------------------------------

    def start_chunk(self) -> None:
        """A BDAT that passed refusal(): its chunk is read at once (RFC 3030)."""
        self.state = State.BDAT

    def abort_auth(self) -> None:
        """An AUTH exchange line was too long: the exchange is over."""
        self.state = State.READY

    def tls_started(self) -> None:
        """RFC 3207 4.2: forget everything learnt before TLS."""
        self.state = State.GREETED
        self.tls_active = True
        self.has_helo = self.extended = self.authenticated = False
        self._clear_transaction()

    def peer_closed(self) -> None:
        self.state = State.CLOSED
        self._clear_transaction()

    def _clear_transaction(self) -> None:
        self.mail = None
        self.rcpts = 0
