"""The sans-IO SMTP engine (appliance/protocol/) under arbitrary client bytes.

The input's first four bytes choose the engine's options and seed the choice of
answers (accepting or refusing) and of read boundaries; the rest is what the
client sends. Checked: no exception, the buffer stays under the largest line
limit (bounded memory), every rendered reply well-formed, EOF closes.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import check_reply, main  # noqa: E402

from appliance import protocol as p  # noqa: E402
from appliance.protocol import Reply  # noqa: E402

LIMITS = dict(max_command_line=64, max_auth_line=96, max_text_line=80)
BOUND = max(LIMITS.values())

AUTH_ANSWERS = [Reply(334, None, ""), Reply(235, "2.7.0", "Ok"), Reply(535, "5.7.8", "no")]
#: Answers a session might give, accepting or refusing.
CHOICES: dict[type, list[Reply]] = {
    p.Helo: [Reply(250, None, ["mx.test", "PIPELINING", "CHUNKING"]), Reply(550, None, "no")],
    p.Mail: [Reply(250, "2.1.0", "Ok"), Reply(550, "5.7.1", "no")],
    p.Rcpt: [Reply(250, "2.1.5", "Ok"), Reply(550, "5.1.1", "no")],
    p.Data: [Reply(354, None, "go"), Reply(554, "5.5.1", "no")],
    p.DataEnd: [Reply(250, "2.0.0", "Ok"), Reply(552, "5.3.4", "too big"),
                Reply(451, "4.3.0", "try later")],
    p.Auth: AUTH_ANSWERS,
    p.AuthResponse: AUTH_ANSWERS,
    p.StartTLS: [Reply(220, "2.0.0", "go"), Reply(454, "4.7.0", "no")],
    p.Quit: [Reply(221, "2.0.0", "bye")],
    p.Rset: [Reply(250, "2.0.0", "Ok")],
    p.Noop: [Reply(250, "2.0.0", "Ok"), Reply(421, "4.4.2", "timeout")],
    p.Help: [Reply(214, "2.0.0", "help")],
    p.Vrfy: [Reply(252, "2.5.2", "maybe")],
    p.Expn: [Reply(502, "5.5.1", "no")],
}
NO_REPLY = (p.Bdat, p.DataChunk, p.ConnectionClosed)


def _drain(conn: p.SMTPConnection, rng: random.Random) -> None:
    while True:
        event = conn.next_event()
        if event is p.NEED_DATA or isinstance(event, p.ConnectionClosed):
            return
        if isinstance(event, NO_REPLY):
            continue
        if isinstance(event, p.BadCommand):
            reply = event.reply
        else:
            reply = rng.choice(CHOICES[type(event)])
        check_reply(conn.send(reply))
        if conn.state is p.State.TLS_PENDING:
            conn.start_tls()
        if conn.closed:
            return


def one_input(data: bytes) -> None:
    if len(data) < 4:
        return
    flags, rng = data[0], random.Random(data[1:4])
    conn = p.SMTPConnection(tls_active=bool(flags & 1), smtputf8=bool(flags & 2),
                            binarymime=bool(flags & 4),
                            bare_linefeed="normalize" if flags & 8 else "reject", **LIMITS)
    check_reply(conn.send(Reply(220, None, "mx.test ESMTP")))
    stream, pos = data[4:], 0
    while pos < len(stream) and not conn.closed:
        step = rng.randint(1, 2 * BOUND)
        conn.receive_data(stream[pos:pos + step])
        pos += step
        _drain(conn, rng)
        assert conn.closed or conn.buffered < BOUND, conn.buffered
    if not conn.closed:
        conn.receive_data(b"")
        _drain(conn, rng)
        assert conn.next_event() == p.ConnectionClosed()


if __name__ == "__main__":
    main(one_input)
