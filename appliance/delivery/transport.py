"""Talking to one next hop: an LMTP (RFC 2033) or SMTP (RFC 5321) client connection
that carries one transaction after another (docs/delivery.md, "Next hops").

Built on the standard library's smtplib for the command layer (EHLO/LHLO,
STARTTLS, AUTH); the message is streamed from the spool file, dot-stuffed, and
LMTP's one reply per accepted recipient after the data is read here.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from attrs import frozen

from appliance.clients.endpoints import parse_socket
from appliance.config.delivery import Delivery, NextHop

_ENHANCED = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}\b")
SEND_CHUNK = 64 * 1024


@frozen
class Reply:
    """A next hop's reply to one recipient."""

    code: int
    enhanced: str
    text: str

    @classmethod
    def parse(cls, code: int, message: bytes | str) -> Reply:
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        text = " ".join(text.split())
        m = _ENHANCED.match(text)
        if m:
            return cls(code, m.group(0), text[m.end():].strip())
        klass = str(code)[0] if code >= 200 else "4"
        return cls(code, f"{klass}.0.0", text)

    @property
    def outcome(self) -> str:
        """done (2xx), deferred (4xx, or no reply), bounced (5xx)."""
        return {"2": "done", "5": "bounced"}.get(str(self.code)[0], "deferred")

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}".rstrip()


class NextHopError(Exception):
    """The connection failed or was lost: every recipient of the transaction still
    without a reply is deferred with this reason."""

    def __init__(self, reason: str, enhanced: str = "4.4.1") -> None:
        super().__init__(reason)
        self.reason = reason
        self.enhanced = enhanced

    def reply_all(self, rcpts: list[int]) -> dict[int, Reply]:
        reply = Reply(451, self.enhanced, self.reason)
        return {i: reply for i in rcpts}


class Connection:
    """One open connection to a next hop, greeted, with TLS and AUTH as configured."""

    def __init__(self, name: str, hop: NextHop, config: Delivery) -> None:
        self.name, self.hop, self.config = name, hop, config
        self.lmtp = hop.protocol == "lmtp"
        family, address = parse_socket(hop.address)
        self.where = (f"{name}[{address}]" if family == socket.AF_UNIX
                      else f"{name}[{address[0]}]:{address[1]}")
        self.clean = True  # the last transaction ended with its final reply
        hostname = config.hostname or socket.getfqdn()
        try:
            if family == socket.AF_UNIX:
                self.smtp: smtplib.SMTP = smtplib.LMTP(timeout=config.connect_timeout,
                                                       local_hostname=hostname)
                code, text = self.smtp.connect(address)
            else:
                cls = smtplib.LMTP if self.lmtp else smtplib.SMTP
                self.smtp = cls(timeout=config.connect_timeout, local_hostname=hostname)
                code, text = self.smtp.connect(address[0], address[1])
            if code != 220:
                raise NextHopError(f"{self.where} greeted with {code} {_text(text)}")
            if not self.lmtp and family == socket.AF_UNIX:
                self.smtp.ehlo_msg = "ehlo"
            self.smtp.sock.settimeout(config.command_timeout)
            self._hello()
        except NextHopError:
            self.close()
            raise
        except (OSError, smtplib.SMTPException) as exc:
            self.close()
            raise NextHopError(f"connect to {self.where}: {_why(exc)}") from exc

    def _hello(self) -> None:
        code, text = self.smtp.ehlo()
        if code != 250:
            raise NextHopError(f"{self.where} refused {self.smtp.ehlo_msg.upper()}: "
                               f"{code} {text.decode(errors='replace')}")
        hop = self.hop
        if hop.starttls != "none" and self.smtp.has_extn("starttls"):
            context = ssl.create_default_context(cafile=hop.ca_file or None)
            if hop.starttls == "verify":
                self.smtp._host = hop.tls_name or self.smtp._host  # the name to verify
            else:  # opportunistic or encrypted only: no authentication of the peer
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            code, text = self.smtp.starttls(context=context)
            self.smtp.ehlo()
        elif hop.starttls in ("encrypt", "verify"):
            raise NextHopError(f"TLS is required, but was not offered by {self.where}",
                               "4.7.4")
        if hop.auth_user:
            password = Path(hop.auth_password_file).read_text().strip()
            try:
                self.smtp.login(hop.auth_user, password)
            except smtplib.SMTPAuthenticationError as exc:
                raise NextHopError(f"{self.where} refused AUTH as {hop.auth_user}: "
                                   f"{exc.smtp_code} {_text(exc.smtp_error)}", "4.7.0") from exc

    @property
    def dsn(self) -> bool:
        """Pass DSN parameters on (an SMTP next hop offering DSN); else the DSNs
        asked for are ours to send."""
        return not self.lmtp and self.smtp.has_extn("dsn")

    def send(self, envelope: dict[str, Any], rcpts: list[tuple[int, dict[str, Any]]],
             lines: Iterable[bytes], size: int) -> dict[int, Reply]:
        """One transaction: a reply for every recipient given. Raises NextHopError
        when the connection fails before every recipient has its reply (those that
        have one are in ``exc.partial``). ``lines``: the message, line by line."""
        replies: dict[int, Reply] = {}
        try:
            self._transaction(envelope, rcpts, lines, size, replies)
        except (OSError, smtplib.SMTPException) as exc:
            self.clean = False
            error = NextHopError(f"lost connection with {self.where}: {_why(exc)}")
            error.partial = replies  # type: ignore[attr-defined]
            raise error from exc
        return replies

    def _transaction(self, envelope, rcpts, lines, size, replies) -> None:
        smtp = self.smtp
        if not self.clean:
            smtp.rset()
        self.clean = False
        code, text = smtp.mail(envelope["mail_from"]["address"], self._mail_options(envelope, size))
        if code != 250:
            reply = Reply.parse(code, text)
            replies.update((i, reply) for i, _ in rcpts)
            return
        accepted = []
        for i, rcpt in rcpts:
            code, text = smtp.rcpt(rcpt["address"], self._rcpt_options(rcpt))
            if code in (250, 251):
                accepted.append(i)
            else:
                replies[i] = Reply.parse(code, text)
        if not accepted:
            return
        smtp.putcmd("data")
        code, text = smtp.getreply()
        if code != 354:
            reply = Reply.parse(code, text)
            replies.update((i, reply) for i in accepted)
            return
        smtp.sock.settimeout(self.config.data_timeout)
        for chunk in _dot_stuffed(lines):
            smtp.sock.sendall(chunk)
        for i in accepted if self.lmtp else accepted[:1]:
            code, text = smtp.getreply()
            replies[i] = Reply.parse(code, text)
        if not self.lmtp:
            replies.update((i, replies[accepted[0]]) for i in accepted)
        smtp.sock.settimeout(self.config.command_timeout)
        self.clean = True

    def _mail_options(self, envelope: dict[str, Any], size: int) -> list[str]:
        params = envelope["mail_from"].get("params", {})
        has = self.smtp.has_extn
        options = [f"SIZE={size}"] if has("size") else []
        if params.get("BODY") and has("8bitmime"):
            options.append(f"BODY={params['BODY']}")
        if params.get("SMTPUTF8") and has("smtputf8"):
            options.append("SMTPUTF8")
        if self.dsn:
            if params.get("RET"):
                options.append(f"RET={params['RET']}")
            if params.get("ENVID"):
                options.append(f"ENVID={_xtext(params['ENVID'])}")
        return options

    def _rcpt_options(self, rcpt: dict[str, Any]) -> list[str]:
        if not self.dsn:
            return []
        params = rcpt.get("params", {})
        options = []
        if params.get("NOTIFY"):
            notify = params["NOTIFY"]
            options.append("NOTIFY=" + (",".join(notify) if isinstance(notify, list) else notify))
        if params.get("ORCPT"):
            kind, _, addr = str(params["ORCPT"]).partition(";")
            options.append(f"ORCPT={kind};{_xtext(addr)}")
        return options

    def close(self) -> None:
        """QUIT when the connection is in a state to say it; close in any case."""
        smtp = getattr(self, "smtp", None)
        if smtp is None or smtp.sock is None:
            return
        try:
            if self.clean:
                smtp.sock.settimeout(5)
                smtp.quit()
        except (OSError, smtplib.SMTPException):
            pass
        finally:
            smtp.close()


def _dot_stuffed(lines: Iterable[bytes]) -> Iterable[bytes]:
    """The message as DATA sends it: CRLF line ends, a leading dot doubled, the
    final ``.`` line; in chunks of about SEND_CHUNK octets."""
    out: list[bytes] = []
    size = 0
    for line in lines:
        if not line.endswith(b"\r\n"):
            line = line.rstrip(b"\r\n") + b"\r\n"
        if line.startswith(b"."):
            line = b"." + line
        out.append(line)
        size += len(line)
        if size >= SEND_CHUNK:
            yield b"".join(out)
            out, size = [], 0
    out.append(b".\r\n")
    yield b"".join(out)


def _xtext(value: str) -> str:
    """RFC 3461 4: "+", "=", controls and non-ASCII as +XX."""
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else
                   "".join(f"+{b:02X}" for b in c.encode()) for c in value)


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _why(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
