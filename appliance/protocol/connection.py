"""The sans-IO SMTP server engine: bytes in, events out, replies rendered.

The session feeds what it reads to :meth:`SMTPConnection.receive_data`, takes events
from :meth:`SMTPConnection.next_event` until it gets ``NEED_DATA``, and answers every
event that takes an answer with :meth:`SMTPConnection.send`. No I/O happens here.
"""

from __future__ import annotations

from appliance.protocol._commands import (
    AUTH_BAD_CHARACTERS,
    AUTH_LINE_TOO_LONG,
    LINE_TOO_LONG,
    UNRECOGNIZED,
    VERBS,
    CommandError,
    Offered,
    decode_line,
    parse_bdat,
    parse_command,
    split_command,
)
from appliance.protocol._data import ChunkReader, DotReader
from appliance.protocol._state import ConnectionState, State, reply_key
from appliance.protocol.events import (
    NEED_DATA,
    AuthResponse,
    BadCommand,
    Bdat,
    ConnectionClosed,
    DataChunk,
    DataEnd,
    Event,
    Reply,
)

_GREETINGS = (220, 554, 421)


class LocalProtocolError(Exception):
    """The session used the engine wrongly (h11's name): a reply with nothing to
    answer, ``next_event()`` before answering the previous event, data after EOF."""


class SMTPConnection:
    """One server side SMTP connection.

    Args:
        tls_active: the connection is already encrypted (implicit TLS).
        smtputf8: SMTPUTF8 (RFC 6531) is offered; without it non-ASCII addresses and
            the SMTPUTF8 parameter are refused.
        binarymime: BINARYMIME (RFC 3030 3) is offered; without it
            ``BODY=BINARYMIME`` is refused with 555 5.5.4.
        bare_linefeed: ``"reject"`` or ``"normalize"`` bare CR/LF in DATA text.
        max_command_line: octets per command line including CRLF (RFC 5321 4.5.3.1.4).
        max_text_line: octets per DATA text line including CRLF (4.5.3.1.6); ``None``:
            no limit (Postfix's smtpd takes any length; memory stays bounded).
        max_auth_line: octets per AUTH exchange line including CRLF (RFC 4954 4).
    """

    def __init__(self, *, tls_active: bool = False, smtputf8: bool = True,
                 binarymime: bool = False, bare_linefeed: str = "reject",
                 max_command_line: int = 512, max_text_line: int | None = 1000,
                 max_auth_line: int = 12288) -> None:
        if bare_linefeed not in ("reject", "normalize"):
            raise ValueError(f"bare_linefeed must be 'reject' or 'normalize', "
                             f"not {bare_linefeed!r}")
        for name, value in (("max_command_line", max_command_line),
                            ("max_text_line", max_text_line),
                            ("max_auth_line", max_auth_line)):
            if value is not None and value < 8:
                raise ValueError(f"{name} must be at least 8, not {value}")
        self._offered = Offered(smtputf8=smtputf8, binarymime=binarymime)
        self._normalize = bare_linefeed == "normalize"
        self._max_command_line = max_command_line
        self._max_text_line = max_text_line
        self._max_auth_line = max_auth_line
        self._st = ConnectionState(tls_active=tls_active)
        self._buf = bytearray()
        self._eof = False
        # Rarely more than one: a list costs a tenth of a deque per idle session.
        self._events: list[Event] = []
        self._pending: tuple[str, Event] | None = None  # what the next reply answers
        self._greeting_done = False
        self._reader: DotReader | ChunkReader | None = None
        self._skipping = False  # discarding the rest of an over-long line

    # --- read-only state ------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._st.state

    @property
    def tls_active(self) -> bool:
        return self._st.tls_active

    @property
    def has_helo(self) -> bool:
        return self._st.has_helo

    @property
    def extended(self) -> bool:
        """EHLO (not HELO) was accepted."""
        return self._st.extended

    @property
    def authenticated(self) -> bool:
        return self._st.authenticated

    @property
    def mail_from_accepted(self) -> bool:
        return self._st.mail is not None

    @property
    def accepted_rcpts(self) -> int:
        return self._st.rcpts

    @property
    def in_data(self) -> bool:
        """Reading DATA text or BDAT chunk octets."""
        return self._reader is not None

    @property
    def closed(self) -> bool:
        return self._st.state is State.CLOSED

    @property
    def buffered(self) -> int:
        """Octets received and not yet turned into events."""
        return len(self._buf)

    # --- the API ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the peer; ``b""`` means the peer closed (EOF)."""
        if data:
            if self._eof:
                raise LocalProtocolError("received data after EOF")
            if self._st.state is not State.CLOSED:  # else nothing would ever read it
                self._buf += data
        else:
            self._eof = True

    def next_event(self) -> Event | object:
        """The next event, or ``NEED_DATA``. After EOF, once the buffer is used up,
        ``ConnectionClosed`` every time. Every event except Bdat, DataChunk and
        ConnectionClosed must be answered with :meth:`send` before the next call.
        """
        if self._pending is not None:
            raise LocalProtocolError(
                f"answer {type(self._pending[1]).__name__} with send() first")
        if not self._events:
            self._produce()
        if not self._events:
            return NEED_DATA
        event = self._events.pop(0)
        self._greeting_done = True
        key = reply_key(event)
        if key is not None:
            self._pending = (key, event)
        elif isinstance(event, ConnectionClosed):
            self._st.peer_closed()
            self._reader = None
            self._buf.clear()
        return event

    def send(self, reply: Reply) -> bytes:
        """Render ``reply`` and move the state by what it answers.

        The first reply before any command is the greeting (220, 554 or 421). A 421
        may be sent at any time and closes. Anything else must answer an event.
        """
        if not isinstance(reply, Reply):
            raise TypeError(f"send() takes a Reply, not {type(reply).__name__}")
        if not 200 <= reply.code <= 599:
            raise LocalProtocolError(f"{reply.code} is not a server reply code")
        if self._pending is not None:
            key, event = self._pending
        elif not self._greeting_done:
            if reply.code not in _GREETINGS:
                raise LocalProtocolError(f"{reply.code} is not a greeting")
            key, event = "GREETING", None
        elif reply.code == 421:
            key, event = "UNSOLICITED", None
        else:
            raise LocalProtocolError(f"nothing to answer with {reply.code}")
        self._pending = None
        self._greeting_done = True
        self._st.answer(key, reply.code, event)
        state = self._st.state
        if state is State.DATA and self._reader is None:
            self._reader = DotReader(max_line=self._max_text_line,
                                     normalize=self._normalize)
        elif state is State.CLOSED:
            self._reader = None
            self._events.clear()
            self._buf.clear()
        return reply.render()

    def start_tls(self) -> int:
        """TLS is up after the 220 to STARTTLS: drop the plaintext the client sent
        after STARTTLS (RFC 3207 4.2, aiosmtpd#380) and start over without HELO.
        Returns how many octets were dropped."""
        if self._st.state is not State.TLS_PENDING:
            raise LocalProtocolError(f"start_tls() in state {self._st.state}")
        dropped = len(self._buf)
        self._buf.clear()
        self._skipping = False
        self._st.tls_started()
        return dropped

    # --- turning bytes into events ----------------------------------------------------

    def _produce(self) -> None:
        """Step until there is an event or no step can make progress without more data
        (a step may consume octets silently: a refused BDAT chunk, an over-long line)."""
        while not self._events:
            size, reader = len(self._buf), self._reader
            self._step()
            if len(self._buf) == size and self._reader is reader:
                return

    def _step(self) -> None:
        state = self._st.state
        if state is State.CLOSED or (state is State.TLS_PENDING and self._eof):
            self._events.append(ConnectionClosed())
        elif state is State.TLS_PENDING:
            return
        elif self._reader is not None:
            self._read_content()
        else:
            self._read_line()

    def _read_content(self) -> None:
        reader = self._reader
        data, ended = reader.step(self._buf)
        if data:
            self._events.append(DataChunk(data))
        if ended:
            self._reader = None
            if isinstance(reader, ChunkReader) and reader.refusal is not None:
                self._events.append(BadCommand(reader.refusal, "BDAT"))
            else:
                self._events.append(DataEnd(error=reader.error, last=reader.last))
        elif not data and self._eof:
            self._events.append(ConnectionClosed())  # message incomplete

    def _read_line(self) -> None:
        auth = self._st.state is State.AUTH
        limit = self._max_auth_line if auth else self._max_command_line
        buf = self._buf
        end = buf.find(b"\n")
        if self._skipping or end + 1 > limit or (end < 0 and len(buf) >= limit):
            if end < 0:  # still inside the over-long line: drop it, bounded memory
                buf.clear()
                self._skipping = True
                if self._eof:
                    self._events.append(ConnectionClosed())
                return
            del buf[:end + 1]
            self._skipping = False
            if auth:
                self._st.abort_auth()
                self._events.append(BadCommand(AUTH_LINE_TOO_LONG, "AUTH"))
            else:
                self._events.append(BadCommand(LINE_TOO_LONG))
            return
        if end < 0:
            if self._eof:  # an unfinished line at EOF is dropped
                buf.clear()
                self._events.append(ConnectionClosed())
            return
        cut = end - 1 if end and buf[end - 1] == 0x0D else end  # CRLF, or a bare LF
        line = bytes(buf[:cut])
        del buf[:end + 1]
        if auth:
            self._auth_line(line)
        else:
            self._command(line)

    def _auth_line(self, line: bytes) -> None:
        try:
            text = decode_line(line)
        except CommandError:
            self._st.abort_auth()
            self._events.append(BadCommand(AUTH_BAD_CHARACTERS, "AUTH"))
            return
        self._events.append(AuthResponse(text))

    def _command(self, line: bytes) -> None:
        try:
            verb, args = split_command(line)
        except CommandError as exc:
            self._events.append(BadCommand(exc.reply))
            return
        st = self._st
        if verb not in VERBS and st.state is not State.NO_SERVICE:
            self._events.append(BadCommand(UNRECOGNIZED))  # the verb is client data
            return
        if verb == "BDAT":
            self._bdat(args)
            return
        refusal = st.refusal(verb)
        if refusal is not None:
            self._events.append(BadCommand(refusal, verb if verb in VERBS else ""))
            return
        context = self._offered if verb == "MAIL" else st.mail_utf8
        try:
            self._events.append(parse_command(verb, args, context))
        except CommandError as exc:
            self._events.append(BadCommand(exc.reply, verb))

    def _bdat(self, args: str) -> None:
        """A valid BDAT line always reads its chunk, even when refused (RFC 3030 2)."""
        refusal = self._st.refusal("BDAT")
        try:
            size, last = parse_bdat(args)
        except CommandError as exc:  # nothing is consumed: the size is unknown
            self._events.append(BadCommand(refusal if self._st.state is State.NO_SERVICE
                                           else exc.reply, "BDAT"))
            return
        self._reader = ChunkReader(size, last, refusal)
        if refusal is None:
            self._st.start_chunk()
            self._events.append(Bdat(size, last))
