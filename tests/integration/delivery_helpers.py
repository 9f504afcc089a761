"""Shared by the delivery tests: the [delivery] config for a next hop, sending
through the appliance, and waiting for the spool to empty."""

from __future__ import annotations

import json
import smtplib
import time
from pathlib import Path

FAST = """
[delivery]
scan_interval = "100ms"
idle_timeout = "500ms"
minimal_backoff = "1s"
maximal_backoff = "2s"
"""


def lmtp_config(lmtp, extra: str = "", address: str | None = None, hop: str = "") -> str:
    """[delivery] with ``extra`` keys, everything to ``lmtp`` (with ``hop`` keys)."""
    return FAST + extra + f"""
default = "dovecot"
[delivery.next_hops.dovecot]
protocol = "lmtp"
address = "{address or lmtp.unix}"
{hop}
"""


def send(app, sender: str, rcpts: list[str], body: bytes, mail_options=(),
         rcpt_options=()) -> dict:
    with smtplib.SMTP("127.0.0.1", app.port, timeout=30) as c:
        return c.sendmail(sender, rcpts, body, mail_options=list(mail_options),
                          rcpt_options=list(rcpt_options))


def message(n: int | str, subject: str = "test") -> bytes:
    return (f"From: a@example.org\r\nTo: b@test.example\r\nSubject: {subject} {n}\r\n"
            f"Message-ID: <{n}.msg@example.org>\r\n\r\nbody {n}\r\n.leading dot\r\n"
            ).encode()


def wait_until(predicate, timeout: float = 30, what: str = "", log=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}\n{log()[-4000:]}")


def states(spool: Path) -> dict[str, list[dict]]:
    """Every message's state records, by queue id."""
    return {p.stem: [json.loads(line) for line in p.read_text().splitlines() if line]
            for p in (spool / "queue").glob("*.state")}
