"""XCLIENT and XFORWARD in the session, with Postfix's semantics (XCLIENT_README,
XFORWARD_README), for a Postfix or a mail proxy in front that passes its client on.

Only clients in ``smtp.xclient_hosts`` / ``smtp.xforward_hosts`` (matched against
the client of the connection, after any PROXY header) see the keywords in the EHLO
reply and may use the commands; others get ``550 5.7.0``.

- XCLIENT: the session ends for the plugins (``on_disconnect``) and starts anew
  with the client it names, as after a connect: a new :class:`SessionContext`, the
  connect checks, and a new 220 greeting (or their refusal); the client says EHLO
  again. ``[UNAVAILABLE]``/``[TEMPUNAVAIL]`` leave an address or port as it was
  and a name empty. NAME is logged; the reverse-dns check looks the address up.
- XFORWARD: the attributes of the next message (until the transaction ends) for
  its log line and its Received header; nothing is decided on them.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

from appliance.protocol import XCLIENT_ATTRIBUTES, XFORWARD_ATTRIBUTES, Reply, Xclient, Xforward
from appliance.server import greeting
from appliance.server.received import known


class Relayed(greeting.Greeted, Protocol):
    """What XCLIENT and XFORWARD use of their session."""

    xclient_allowed: bool
    xforward_allowed: bool
    forwarded: dict[str, str]

    def refuse(self, reply: Reply) -> None: ...
    def restart(self, client: tuple, server: tuple, helo: str, esmtp: bool,
                login: str) -> None: ...

OK = Reply(250, "2.0.0", "Ok")


def not_authorized(verb: str) -> Reply:
    return Reply(550, "5.7.0", f"{verb} not authorized")


def advertised(session: Relayed) -> list[str]:
    """The EHLO lines for a client allowed to use them."""
    lines = []
    if session.xclient_allowed:
        lines.append("XCLIENT " + " ".join(XCLIENT_ATTRIBUTES))
    if session.xforward_allowed:
        lines.append("XFORWARD " + " ".join(XFORWARD_ATTRIBUTES))
    return lines


def on_xclient(session: Relayed, ev: Xclient) -> None:
    if not session.xclient_allowed:
        session.refuse(not_authorized("XCLIENT"))
        return
    attrs = ev.attributes
    try:
        client = (_address(attrs.get("ADDR"), "ADDR") or session.ctx.remote_ip,
                  _port(attrs.get("PORT"), "PORT", session.ctx.remote_port))
        server = (_address(attrs.get("DESTADDR"), "DESTADDR") or session.ctx.local_ip,
                  _port(attrs.get("DESTPORT"), "DESTPORT", session.ctx.local_port))
        proto = known(attrs.get("PROTO")).upper()
        if proto not in ("", "SMTP", "ESMTP"):
            raise ValueError("PROTO must be SMTP or ESMTP")
    except ValueError as exc:
        session.refuse(Reply(501, "5.5.4", f"Bad XCLIENT attribute: {exc}"))
        return
    session.log.event("xclient", client=f"[{client[0]}]:{client[1]}",
                      attributes=_logged(attrs))
    session.restart(client, server, helo=known(attrs.get("HELO")), esmtp=proto == "ESMTP",
                    login=known(attrs.get("LOGIN")))
    greeting.greet(session)


def on_xforward(session: Relayed, ev: Xforward) -> None:
    if not session.xforward_allowed:
        session.refuse(not_authorized("XFORWARD"))
        return
    try:
        _address(ev.attributes.get("ADDR"), "ADDR")
        _port(ev.attributes.get("PORT"), "PORT", 0)
    except ValueError as exc:
        session.refuse(Reply(501, "5.5.4", f"Bad XFORWARD attribute: {exc}"))
        return
    session.forwarded.update(ev.attributes)
    session.log.event("xforward", attributes=_logged(ev.attributes))
    session.send(OK)


def _logged(attributes: dict[str, str]) -> str:
    return " ".join(f"{name}={value}" for name, value in attributes.items())


def _address(value: str | None, name: str) -> str:
    """An IP address ("IPV6:" prefix allowed), "" when not given or not known."""
    value = known(value)
    if not value:
        return ""
    if value[:5].upper() == "IPV6:":
        value = value[5:]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{name} {value[:45]!r} is not an IP address") from None


def _port(value: str | None, name: str, default: int) -> int:
    value = known(value)
    if not value:
        return default
    if not value.isdigit() or not value.isascii() or int(value) > 65535:
        raise ValueError(f"{name} {value[:8]!r} is not a port from 0 to 65535")
    return int(value)
