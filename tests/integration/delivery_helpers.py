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


def fast(extra: str = "") -> str:
    """FAST with ``extra`` keys of [delivery], which replace FAST's own."""
    keys = {line.split("=")[0].strip() for line in extra.splitlines() if "=" in line}
    kept = [line for line in FAST.splitlines() if line.split("=")[0].strip() not in keys]
    return "\n".join(kept) + "\n" + extra


def lmtp_config(lmtp, extra: str = "", address: str | None = None, hop: str = "") -> str:
    """[delivery] with ``extra`` keys, everything to ``lmtp`` (with ``hop`` keys)."""
    return fast(extra) + f"""
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


def commit(spool_dir: Path, sender: str, rcpts: list[str], body: bytes, **fields) -> str:
    """Put a message into the spool as the server's queue commit does, with
    envelope ``fields`` (quarantine, delay_until...) a plugin would have set."""
    from appliance.mail.message import Message, MessageReader
    from appliance.spool import Spool, new_queue_id

    spool = Spool(spool_dir)
    spool.prepare()
    reader = MessageReader(str(spool.tmp), 10**7, 10**6)
    reader.feed(body)
    reader.finish()
    qid = new_queue_id()
    envelope = {
        "version": 2, "queue_id": qid, "session_id": "",
        "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "listener": {"name": "test", "ip": "127.0.0.1", "port": 25},
        "client": {"ip": "127.0.0.1", "port": 1, "helo": "test", "esmtp": True,
                   "auth_user": None, "tls": None},
        "mail_from": {"address": sender, "params": {}},
        "recipients": [{"address": r, "params": {}, "folder": "INBOX", "relay_host": ""}
                       for r in rcpts],
        "dsn": {"ret": None, "envid": None}, "delay_until": None, "quarantine": None,
        "checks": {}, "trace": [], **fields,
    }
    spool.commit(qid, Message(reader.headers, reader.body), envelope)
    return qid
