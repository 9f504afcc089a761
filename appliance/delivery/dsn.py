"""Delivery status notifications (RFC 3464 multipart/report, RFC 3461's RET,
ENVID, NOTIFY and ORCPT): what the delivery service sends back to the sender.

A DSN is a new message from the null sender; the service commits it to the spool
like any other and delivers it through the same next hops. It is never sent to
the null sender (no DSN about a DSN, RFC 3461 6.2 and RFC 5321 6.1).
"""

from __future__ import annotations

import calendar
import email.utils
import secrets
import time
from pathlib import Path
from typing import Any

from attrs import frozen

from appliance.spool import FORMAT_VERSION

#: The headers of a returned message are enough for these; a failure returns the
#: whole message unless RET=HDRS (RFC 3461 4.3 leaves the default to the MTA).
HEADERS_ONLY_ACTIONS = ("delivered", "relayed", "delayed")
#: At most this much of the original message is returned.
MAX_RETURNED = 10 * 1024 * 1024

SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
}
EXPLANATIONS = {
    "failed": "I'm sorry to have to inform you that your message could not\r\n"
              "be delivered to one or more recipients.",
    "delayed": "This is a warning only: your message could not yet be delivered\r\n"
               "to one or more recipients. Delivery will be retried; you do not\r\n"
               "need to send it again.",
    "delivered": "Your message was successfully delivered to the recipients below.",
    "relayed": "Your message was successfully relayed to the recipients below;\r\n"
               "the next hop does not send delivery notifications.",
}


@frozen
class Entry:
    """One recipient in a DSN."""

    rcpt: dict[str, Any]  # the envelope's recipient: address, params (NOTIFY, ORCPT)
    action: str  # failed, delayed, delivered, relayed
    status: str  # an enhanced status code, 5.1.1
    diagnostic: str = ""  # the next hop's reply, "550 5.1.1 no such user"
    remote: str = ""  # the next hop that replied
    will_retry_until: float = 0.0


def wanted(rcpt: dict[str, Any], action: str) -> bool:
    """Does the recipient's NOTIFY ask for a DSN with this action? Without NOTIFY,
    failures and delays are reported (RFC 3461 4.1); NOTIFY=NEVER asks for none."""
    notify = rcpt.get("params", {}).get("NOTIFY")
    if not notify:
        return action in ("failed", "delayed")
    words = {w.upper() for w in (notify if isinstance(notify, list) else notify.split(","))}
    need = {"failed": "FAILURE", "delayed": "DELAY"}.get(action, "SUCCESS")
    return need in words


def compose(envelope: dict[str, Any], message_path: Path, entries: list[Entry],
            hostname: str) -> bytes:
    """The DSN for ``entries`` (all of one action) of the message ``envelope``."""
    action = entries[0].action
    boundary = f"{secrets.token_hex(8)}/{hostname}"
    sender = envelope["mail_from"]["address"]
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{sender}>",
        f"Subject: {SUBJECTS[action]}",
        f"Date: {email.utils.formatdate(localtime=False)}",
        f"Message-ID: <{envelope['queue_id']}.{secrets.token_hex(4)}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"This is the mail system at host {hostname}.",
        "",
        EXPLANATIONS[action],
        "",
    ]
    for e in entries:
        lines.append(f"<{e.rcpt['address']}>: {e.diagnostic or e.status}")
    lines += ["", f"--{boundary}", "Content-Type: message/delivery-status", ""]
    lines += _per_message(envelope, hostname)
    for e in entries:
        lines += [""] + _per_recipient(e)
    returned = _returned(envelope, message_path, action)
    kind = "message/rfc822" if returned[1] else "text/rfc822-headers"
    lines += ["", f"--{boundary}", f"Content-Type: {kind}", "", ""]
    text = "\r\n".join(lines).encode()
    return text + returned[0] + f"\r\n--{boundary}--\r\n".encode()


def _per_message(envelope: dict[str, Any], hostname: str) -> list[str]:
    fields = [f"Reporting-MTA: dns; {hostname}"]
    envid = (envelope.get("dsn") or {}).get("envid")
    if envid:
        fields.append(f"Original-Envelope-Id: {envid}")
    arrival = _time(envelope.get("received_at"))
    if arrival:
        fields.append(f"Arrival-Date: {email.utils.formatdate(arrival)}")
    return fields


def _per_recipient(e: Entry) -> list[str]:
    fields = []
    orcpt = e.rcpt.get("params", {}).get("ORCPT")
    if orcpt:
        kind, _, addr = str(orcpt).partition(";")
        fields.append(f"Original-Recipient: {kind.strip()}; {addr.strip()}")
    fields += [f"Final-Recipient: rfc822; {e.rcpt['address']}",
               f"Action: {e.action}",
               f"Status: {e.status}"]
    if e.remote:
        fields.append(f"Remote-MTA: dns; {e.remote}")
    if e.diagnostic:
        fields.append(f"Diagnostic-Code: smtp; {e.diagnostic}")
    fields.append(f"Last-Attempt-Date: {email.utils.formatdate()}")
    if e.will_retry_until:
        fields.append(f"Will-Retry-Until: {email.utils.formatdate(e.will_retry_until)}")
    return fields


def _returned(envelope: dict[str, Any], message_path: Path, action: str) -> tuple[bytes, bool]:
    """(what of the original message is returned, whether it is whole)."""
    ret = ((envelope.get("dsn") or {}).get("ret") or "").upper()
    whole = action not in HEADERS_ONLY_ACTIONS and ret != "HDRS"
    try:
        with open(message_path, "rb") as f:
            data = f.read(MAX_RETURNED + 1)
    except OSError:
        return b"", False
    if whole and len(data) <= MAX_RETURNED:
        return data, True
    end = data.find(b"\r\n\r\n")
    return (data[:end + 2] if end >= 0 else data[:MAX_RETURNED]), False


def _time(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


def envelope_for(original: dict[str, Any], queue_id: str) -> dict[str, Any]:
    """The spool envelope of a DSN about ``original``: from the null sender to the
    original sender, no DSN parameters of its own."""
    return {
        "version": FORMAT_VERSION,
        "queue_id": queue_id,
        "session_id": "",
        "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "listener": {"name": "delivery", "ip": "", "port": 0},
        "client": {"ip": "", "port": 0, "helo": "", "esmtp": False, "auth_user": None,
                   "tls": None},
        "mail_from": {"address": "", "params": {}},
        "recipients": [{"address": original["mail_from"]["address"], "params": {},
                        "folder": "INBOX", "relay_host": ""}],
        "dsn": {"ret": None, "envid": None},
        "dsn_of": original["queue_id"],
        "delay_until": None,
        "quarantine": None,
        "checks": {},
        "trace": [],
    }
