"""Banner variables and our Received trace field (RFC 5321 4.4)."""

from __future__ import annotations

import datetime as dt
import time
from email.utils import format_datetime

from appliance.mail.context import SessionContext, Transaction
from appliance.mail.headers import Headers


def expand_banner(text: str, ctx: SessionContext) -> str:
    """Axigen's banner variables: #HostName#, #ConnectedIP#, #Time#, #TimeUTC#,
    #UnixTime#."""
    now = time.time()
    values = {
        "#HostName#": ctx.hostname,
        "#ConnectedIP#": ctx.remote_ip,
        "#Time#": format_datetime(dt.datetime.fromtimestamp(now).astimezone()),
        "#TimeUTC#": format_datetime(dt.datetime.fromtimestamp(now, dt.UTC), usegmt=True),
        "#UnixTime#": str(int(now)),
    }
    for key, value in values.items():
        if key in text:
            text = text.replace(key, value)
    return text


def protocol_name(ctx: SessionContext, tx: Transaction) -> str:
    """RFC 3848 / RFC 6531 'with' keyword: ESMTP, ESMTPS, ESMTPSA, UTF8SMTPS…"""
    if not ctx.esmtp:
        return "SMTP"
    base = "UTF8SMTP" if tx.mail_params.get("SMTPUTF8") else "ESMTP"
    return base + ("S" if ctx.tls else "") + ("A" if ctx.auth_user else "")


def received_value(ctx: SessionContext, tx: Transaction,
                   forwarded: dict[str, str] | None = None) -> str:
    """``forwarded``: XFORWARD's NAME, ADDR, HELO, which stand for the client's."""
    forwarded = forwarded or {}
    remote = known(forwarded.get("ADDR")).removeprefix("IPV6:") or ctx.remote_ip
    literal = f"IPv6:{remote}" if ":" in remote else remote
    reverse = known(forwarded.get("NAME")) or ctx.reverse_name or "unknown"
    helo = known(forwarded.get("HELO")) or ctx.helo_name or "unknown"
    lines = [f"from {helo} ({reverse} [{literal}])"]
    if ctx.tls:
        lines.append(f"(using {ctx.tls.protocol} with cipher {ctx.tls.cipher}"
                     f" ({ctx.tls.bits}/{ctx.tls.bits} bits))")
    lines.append(f"by {ctx.hostname} (smtp-appliance) with {protocol_name(ctx, tx)}"
                 f" id {tx.queue_id}")
    when = format_datetime(dt.datetime.now().astimezone())
    if len(tx.recipients) == 1:
        lines.append(f"for <{tx.recipients[0].address}>; {when}")
    else:
        lines[-1] += ";"
        lines.append(when)
    return "\r\n\t".join(lines)


def known(value: str | None) -> str:
    """An XCLIENT/XFORWARD value; their "not known" values are empty."""
    return "" if value is None or value in ("[UNAVAILABLE]", "[TEMPUNAVAIL]") else value


def add_received(headers: Headers, ctx: SessionContext, tx: Transaction, policy: str,
                 forwarded: dict[str, str] | None = None) -> bool:
    """Prepend our Received field per ``smtp.received_header`` (all |
    non-authenticated | none); one is always added to a message that has none."""
    wanted = policy == "all" or (policy == "non-authenticated" and not ctx.auth_user)
    if not wanted and headers.exists("Received"):
        return False
    headers.add("Received", received_value(ctx, tx, forwarded), prepend=True)
    return True
