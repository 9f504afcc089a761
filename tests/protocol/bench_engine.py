"""Micro-benchmark of the protocol engine's DATA and BDAT paths (not a pytest module).

Feeds a 1 MiB message in 64 KiB pieces, N times, through a fresh transaction each
time, and prints MB/s. Run: ``.venv/bin/python tests/protocol/bench_engine.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere

from appliance.protocol import (  # noqa: E402
    NEED_DATA,
    Bdat,
    Data,
    DataChunk,
    DataEnd,
    Helo,
    Mail,
    Rcpt,
    Reply,
    SMTPConnection,
)

MIB = 1 << 20
PIECE = 64 * 1024
ANSWERS = {
    Helo: Reply(250, None, "ok"),
    Mail: Reply(250, "2.1.0", "Ok"),
    Rcpt: Reply(250, "2.1.5", "Ok"),
    Data: Reply(354, None, "go ahead"),
    DataEnd: Reply(250, "2.0.0", "Ok: queued"),
}


def make_message(size: int = MIB) -> bytes:
    """Header lines plus 76-column body lines, some starting with a dot (stuffed)."""
    lines = [b"Subject: benchmark", b"From: a@example.com", b""]
    i = 0
    total = 0
    while total < size:
        line = (b"." if i % 50 == 0 else b"") + b"%06d " % i + b"x" * 69
        lines.append(line)
        total += len(line) + 2
        i += 1
    return b"\r\n".join(lines) + b"\r\n"


def stuff(body: bytes) -> bytes:
    body = body.replace(b"\r\n.", b"\r\n..")
    return (b"." + body if body.startswith(b".") else body) + b".\r\n"


def drive(conn: SMTPConnection, wire: bytes) -> int:
    """Feed ``wire`` in PIECE-sized reads; answer like a session; return content octets."""
    got = 0
    pos = 0
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            if pos >= len(wire):
                return got
            conn.receive_data(wire[pos:pos + PIECE])
            pos += PIECE
        elif isinstance(event, DataChunk):
            got += len(event.data)
        elif isinstance(event, DataEnd):
            assert event.error is None, event.error
            conn.send(ANSWERS[DataEnd])
        elif isinstance(event, Bdat):
            pass
        else:
            conn.send(ANSWERS[type(event)])


def run(kind: str, rounds: int, normalize: bool) -> float:
    body = make_message()
    conn = SMTPConnection(bare_linefeed="normalize" if normalize else "reject")
    conn.send(Reply(220, None, "bench"))
    drive(conn, b"EHLO bench\r\n")
    if kind == "data":
        wire = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n" + stuff(body)
    else:
        wire = (b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                b"BDAT %d LAST\r\n" % len(body) + body)
    start = time.perf_counter()
    for _ in range(rounds):
        got = drive(conn, wire)
        assert got == len(body), (got, len(body))
    elapsed = time.perf_counter() - start
    return rounds * len(body) / MIB / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    for kind, normalize in (("data", False), ("data", True), ("bdat", False)):
        label = f"{kind}{' (normalize)' if normalize else ''}"
        rate = run(kind, args.rounds, normalize)
        print(f"{label:18} {args.rounds} x 1 MiB in 64 KiB pieces: {rate:8.1f} MB/s")


if __name__ == "__main__":
    main()
