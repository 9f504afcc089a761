"""The command transcript (the ``transcript`` event class, off by default): each
command as the client sent it and each reply, for debugging a client.

AUTH data never reaches it: an AUTH command is logged with its mechanism only, the
client's lines of an AUTH exchange and any command the engine refused (which may be
a mistyped AUTH) are logged without their text.
"""

from __future__ import annotations

from appliance.protocol import (
    Auth,
    AuthResponse,
    BadCommand,
    Bdat,
    ConnectionClosed,
    DataChunk,
    DataEnd,
    Expn,
    Helo,
    Mail,
    Rcpt,
    Reply,
    Vrfy,
)


def command(event: object) -> str | None:
    """What the client sent, as far as it may be logged; None: nothing to log
    (message data, end of data, the connection closing)."""
    if isinstance(event, DataChunk | DataEnd | ConnectionClosed):
        return None
    if isinstance(event, Helo):
        return f"{'EHLO' if event.extended else 'HELO'} {event.hostname}"
    if isinstance(event, Mail | Rcpt):
        verb = "MAIL FROM" if isinstance(event, Mail) else "RCPT TO"
        params = "".join(f" {k}={v}" if v is not True else f" {k}"
                         for k, v in event.params.items())
        return f"{verb}:<{event.address}>{params}"
    if isinstance(event, Bdat):
        return f"BDAT {event.size}{' LAST' if event.last else ''}"
    if isinstance(event, Auth):
        hidden = " (initial response not logged)" if event.initial_response is not None else ""
        return f"AUTH {event.mechanism}{hidden}"
    if isinstance(event, AuthResponse):
        return "(AUTH response not logged)"
    if isinstance(event, BadCommand):
        return f"{event.verb or '?'} (refused command, arguments not logged)"
    if isinstance(event, Vrfy | Expn):
        return f"{type(event).__name__.upper()} {event.argument}"
    return type(event).__name__.upper()


def reply(reply: Reply) -> dict[str, object]:
    return {"code": reply.code, "enhanced": reply.enhanced or "", "text": " / ".join(reply.text)}
