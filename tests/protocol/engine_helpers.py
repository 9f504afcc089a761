"""Drive an SMTPConnection the way the session does, with plain bytes (h11's helpers)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from appliance.protocol import (
    NEED_DATA,
    Auth,
    AuthResponse,
    BadCommand,
    Bdat,
    ConnectionClosed,
    Data,
    DataChunk,
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
    SMTPConnection,
    StartTLS,
    Vrfy,
)

GREETING = Reply(220, None, "mx.test ESMTP")

#: What an accepting session answers to each event.
POSITIVE: dict[type, Reply] = {
    Helo: Reply(250, None, "mx.test"),
    Mail: Reply(250, "2.1.0", "Ok"),
    Rcpt: Reply(250, "2.1.5", "Ok"),
    Data: Reply(354, None, "End data with <CR><LF>.<CR><LF>"),
    DataEnd: Reply(250, "2.0.0", "Ok: queued"),
    Rset: Reply(250, "2.0.0", "Ok"),
    Noop: Reply(250, "2.0.0", "Ok"),
    Quit: Reply(221, "2.0.0", "Bye"),
    Help: Reply(214, "2.0.0", "Help"),
    Vrfy: Reply(252, "2.5.2", "Maybe"),
    Expn: Reply(502, "5.5.1", "No"),
    StartTLS: Reply(220, "2.0.0", "Ready to start TLS"),
    Auth: Reply(334, None, ""),
    AuthResponse: Reply(235, "2.7.0", "Authentication successful"),
}
NO_REPLY = (Bdat, DataChunk, ConnectionClosed)

Answer = Reply | Callable[[Event], Reply | None] | None


class Driver:
    """Feeds bytes, answers every event that takes an answer, records everything.

    ``answers`` overrides POSITIVE per event type (a Reply, or a function of the event).
    A BadCommand is answered with its own reply. After STARTTLS is answered 220 the
    driver calls ``start_tls()`` itself when ``auto_tls`` is set.
    """

    def __init__(self, *, greeting: Reply | None = GREETING,
                 answers: dict[type, Answer] | None = None, auto_tls: bool = False,
                 **kwargs) -> None:
        self.conn = SMTPConnection(**kwargs)
        self.answers: dict[type, Answer] = dict(POSITIVE)
        self.answers.update(answers or {})
        self.auto_tls = auto_tls
        self.events: list[Event] = []
        self.replies: list[Reply] = []
        self.wire = b""
        self.discarded: list[int] = []
        self.max_buffered = 0
        if greeting is not None:
            self.wire += self.conn.send(greeting)

    def feed(self, *pieces: bytes) -> list[Event]:
        """receive_data() each piece, draining events after each; return the new events.
        Empty pieces are skipped (use close() for EOF)."""
        start = len(self.events)
        for piece in pieces:
            if not piece:
                continue
            self.conn.receive_data(piece)
            self.max_buffered = max(self.max_buffered, self.conn.buffered)
            self.drain()
        return self.events[start:]

    def close(self) -> list[Event]:
        """EOF from the peer."""
        self.conn.receive_data(b"")
        return self.drain()

    def drain(self) -> list[Event]:
        start = len(self.events)
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                break
            self.events.append(event)
            if isinstance(event, ConnectionClosed):
                break
            self.reply_to(event)
            if self.conn.closed:
                break
        return self.events[start:]

    def reply_to(self, event: Event) -> None:
        if isinstance(event, NO_REPLY):
            return
        if isinstance(event, BadCommand):
            reply = event.reply
        else:
            answer = self.answers[type(event)]
            reply = answer(event) if callable(answer) else answer
        assert reply is not None, f"no answer configured for {event!r}"
        self.replies.append(reply)
        self.wire += self.conn.send(reply)
        if self.auto_tls and isinstance(event, StartTLS) and reply.code == 220:
            self.discarded.append(self.conn.start_tls())


def ready(**kwargs) -> Driver:
    """A driver past EHLO."""
    d = Driver(**kwargs)
    d.feed(b"EHLO client.test\r\n")
    return d


def in_transaction(**kwargs) -> Driver:
    """A driver with MAIL and one RCPT accepted."""
    d = ready(**kwargs)
    d.feed(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
    return d


def bad(events: Iterable[Event]) -> list[tuple[int, str | None]]:
    """(code, enhanced) of every BadCommand among ``events``."""
    return [(e.reply.code, e.reply.enhanced) for e in events if isinstance(e, BadCommand)]


def content(events: Iterable[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, DataChunk))


def without_chunks(events: Iterable[Event]) -> list[Event]:
    return [e for e in events if not isinstance(e, DataChunk)]


def data_ends(events: Iterable[Event]) -> list[DataEnd]:
    return [e for e in events if isinstance(e, DataEnd)]


def stuff(body: bytes) -> bytes:
    """Reference dot-stuffing encoder: body (CRLF lines) -> DATA text with terminator."""
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    lines = body.split(b"\r\n")[:-1] if body else []
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines) + b".\r\n"
