"""The probe's side of an SMTP connection: raw bytes out, replies in.

smtplib would not do: the probes send what a well-behaved client never sends
(bare line ends, NUL, commands pipelined after STARTTLS or before the greeting)
and must see every reply the server gives, in order, however many there are.
"""

from __future__ import annotations

import socket
import ssl
import time

from attrs import frozen

#: A reply line may be 512 octets (RFC 5321 4.5.3.1.5); a longer run without a line
#: end is not SMTP, and the probe stops reading rather than buffer it.
MAX_REPLY_LINE = 4096


class ProbeError(Exception):
    """The conversation cannot go on: connection refused or closed, no greeting, a
    reply that is not SMTP, a step the probe needs refused."""


@frozen
class Target:
    """Where and how to connect: ``tls`` is ``"none"``, ``"starttls"`` (upgrade
    before probing) or ``"implicit"`` (TLS from the first byte)."""

    host: str
    port: int
    mail_from: str
    recipients: tuple[str, ...]
    tls: str = "none"
    helo: str = "selftest.invalid"
    timeout: float = 30.0  # for a reply the probe waits for
    quiet: float = 2.0  # silence that means "no more replies are coming"
    cafile: str | None = None  # verify the certificate against it; None: no check


@frozen
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " / ".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


def tls_context(target: Target) -> ssl.SSLContext:
    """A probe checks the server's SMTP handling, not its certificate, unless the
    operator gives a CA file to check it against."""
    if target.cafile:
        return ssl.create_default_context(cafile=target.cafile)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class ProbeClient:
    """One connection to the target. ``replies()`` reads what the server says;
    ``closed`` turns true once the server has closed its side."""

    def __init__(self, target: Target) -> None:
        self.target = target
        try:
            self.sock: socket.socket = socket.create_connection(
                (target.host, target.port), timeout=target.timeout)
        except OSError as exc:
            raise ProbeError(f"cannot connect to {target.host}:{target.port}: {exc}") from None
        self._buf = b""
        self.closed = False
        if target.tls == "implicit":
            self.wrap()

    def __enter__(self) -> ProbeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            if not self.closed:
                self.sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.sock.close()

    @property
    def tls_active(self) -> bool:
        return isinstance(self.sock, ssl.SSLSocket)

    def wrap(self) -> None:
        """The TLS handshake (implicit TLS, or after a 220 to STARTTLS)."""
        try:
            self.sock = tls_context(self.target).wrap_socket(
                self.sock, server_hostname=self.target.host)
        except (OSError, ssl.SSLError) as exc:
            raise ProbeError(f"TLS handshake failed: {exc}") from None

    @property
    def pending(self) -> bool:
        """Bytes read and not yet taken as a reply."""
        return bool(self._buf)

    def send(self, data: bytes) -> None:
        """All of ``data`` in one write: what is pipelined arrives together."""
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.closed = True
            raise ProbeError(f"the server closed the connection ({exc})") from None

    # --- replies --------------------------------------------------------------------

    def _read_line(self, deadline: float) -> bytes | None:
        """One reply line without its line end; None at EOF or at ``deadline``."""
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_REPLY_LINE:
                raise ProbeError(f"a reply line longer than {MAX_REPLY_LINE} octets")
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.rstrip(b"\r")

    def reply(self, timeout: float | None = None) -> Reply | None:
        """The next whole (possibly multi-line) reply; None if the server closed or
        said nothing for ``timeout`` seconds (default: the target's timeout)."""
        deadline = time.monotonic() + (self.target.timeout if timeout is None else timeout)
        lines: list[str] = []
        while True:
            raw = self._read_line(deadline)
            if raw is None:
                if lines:
                    raise ProbeError(f"a reply cut short: {lines!r}")
                return None
            text = raw.decode("utf-8", "replace")
            if len(text) < 3 or not text[:3].isdigit() or text[3:4] not in ("", " ", "-"):
                raise ProbeError(f"not an SMTP reply: {text[:80]!r}")
            lines.append(text[4:])
            if text[3:4] != "-":
                return Reply(int(text[:3]), tuple(lines))

    def expect(self, what: str) -> Reply:
        """A reply the conversation needs (to a command just sent)."""
        reply = self.reply()
        if reply is None:
            raise ProbeError(f"no reply to {what}"
                             + (" (the server closed the connection)" if self.closed else ""))
        return reply

    def replies(self, first_timeout: float | None = None) -> list[Reply]:
        """Every reply until the server falls quiet (the target's ``quiet``) or
        closes; waits up to ``first_timeout`` for the first one."""
        out: list[Reply] = []
        reply = self.reply(first_timeout)
        while reply is not None:
            out.append(reply)
            reply = self.reply(self.target.quiet)
        return out

    # --- the usual steps ------------------------------------------------------------

    def command(self, line: str) -> Reply:
        self.send(line.encode("utf-8") + b"\r\n")
        return self.expect(line.split(":")[0])

    def ehlo(self) -> Reply:
        reply = self.command(f"EHLO {self.target.helo}")
        if reply.code != 250:
            raise ProbeError(f"EHLO refused: {reply}")
        return reply

    def starttls(self) -> None:
        reply = self.command("STARTTLS")
        if reply.code != 220:
            raise ProbeError(f"STARTTLS refused: {reply}")
        self.wrap()


def offers(ehlo: Reply, keyword: str) -> bool:
    return any(line.split(" ")[0].upper() == keyword for line in ehlo.lines[1:])


def open_session(target: Target) -> tuple[ProbeClient, Reply]:
    """Connected, greeted, EHLO done (after STARTTLS when the target asks for it):
    the client and the EHLO reply that counts."""
    client = ProbeClient(target)
    try:
        greeting = client.expect("the connection (greeting)")
        if greeting.code != 220:
            raise ProbeError(f"no greeting: {greeting}")
        ehlo = client.ehlo()
        if target.tls == "starttls":
            if not offers(ehlo, "STARTTLS"):
                raise ProbeError("STARTTLS not offered")
            client.starttls()
            ehlo = client.ehlo()
    except BaseException:
        client.close()
        raise
    return client, ehlo


def open_transaction(target: Target) -> ProbeClient:
    """A session with MAIL FROM and the operator's recipients accepted."""
    client, _ = open_session(target)
    try:
        reply = client.command(f"MAIL FROM:<{target.mail_from}>")
        if reply.code != 250:
            raise ProbeError(f"MAIL FROM refused: {reply}")
        accepted = [r for r in target.recipients
                    if client.command(f"RCPT TO:<{r}>").code in (250, 251)]
        if not accepted:
            raise ProbeError("every RCPT TO refused: name a recipient the server accepts")
    except BaseException:
        client.close()
        raise
    return client
