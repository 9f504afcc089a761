"""The probes of ``smtp-appliance selftest``: each opens its own connection to the
target, does one thing a hostile or broken client does, and judges the replies.

A finding is ``ok`` (the server did the safe thing), ``note`` (worth knowing, not a
hole), ``FAIL`` (the hole the probe looks for is there), ``skipped`` or ``error``
(the probe could not run: the reason says why). See docs/selftest.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from attrs import frozen

from appliance.selftest.client import (
    ProbeClient,
    ProbeError,
    Reply,
    Target,
    offers,
    open_session,
    open_transaction,
)

OK, NOTE, FAIL, SKIPPED, ERROR = "ok", "note", "FAIL", "skipped", "error"


@frozen
class Finding:
    probe: str
    status: str
    detail: str


def _codes(replies: list[Reply]) -> str:
    return ", ".join(str(r.code) for r in replies)


# --- SMTP smuggling -------------------------------------------------------------------

#: Fake end-of-data sequences: the SEC Consult write-up "SMTP Smuggling - Spoofing
#: E-Mails Worldwide" (December 2023), Postfix's smtp-smuggling.html and the
#: smtpsmug tool that goes with them. Only <CRLF>.<CRLF> ends DATA (RFC 5321 4.1.1.4).
SMUGGLING_ENDINGS: dict[str, bytes] = {
    "<LF>.<LF>": b"\n.\n",
    "<CR>.<CR>": b"\r.\r",
    "<CR>.<LF>": b"\r.\n",
    "<LF>.<CR>": b"\n.\r",
    "<LF>.<CR><LF>": b"\n.\r\n",
    "<CR><LF>.<LF>": b"\r\n.\n",
    "<CR>.<CR><LF>": b"\r.\r\n",
    "<CR><LF>.<CR>": b"\r\n.\r",
    "<LF><LF>.<CR><LF>": b"\n\n.\r\n",
    "<CR><LF><NUL>.<CR><LF>": b"\r\n\x00.\r\n",
    "<CR><LF>.<NUL><CR><LF>": b"\r\n.\x00\r\n",
    "<CR><LF><NUL>.<LF>": b"\r\n\x00.\n",
}


def _header(target: Target, what: str) -> bytes:
    return (f"From: <{target.mail_from}>\r\nTo: <{target.recipients[0]}>\r\n"
            f"Subject: smtp-appliance selftest: {what}\r\n\r\n").encode()


def smuggling(target: Target, name: str, ending: bytes) -> Finding:
    """A message whose text holds ``ending`` and, after it, a whole second SMTP
    transaction. Only the second message being accepted is a failure: a server
    that takes the first part as a message of its own and then refuses the rest
    (as Postfix's smtpd_forbid_unauth_pipelining does) lets nothing through."""
    probe = f"smuggling {name}"
    second = "".join(
        [f"MAIL FROM:<{target.mail_from}>\r\n", f"RCPT TO:<{target.recipients[0]}>\r\n",
         "DATA\r\n"]).encode() + _header(target, f"{name} part 2 (smuggled)") + b"smuggled\r\n"
    with open_transaction(target) as c:
        reply = c.command("DATA")
        if reply.code != 354:
            raise ProbeError(f"DATA refused: {reply}")
        c.send(_header(target, f"{name} part 1") + b"probe" + ending + second + b".\r\n")
        replies = c.replies(target.timeout)
    if not replies:
        return Finding(probe, NOTE, "no reply to the end of the message")
    if len(replies) == 1:
        verb = "accepted" if replies[0].code == 250 else "refused"
        return Finding(probe, OK, f"one message, {verb}: {replies[0]}")
    rest = replies[1:]
    started = next((i for i, r in enumerate(rest) if r.code == 354), None)
    if started is not None and any(r.code == 250 for r in rest[started + 1:]):
        return Finding(probe, FAIL, f"split in two and the second part accepted as a "
                                    f"message (replies {_codes(replies)})")
    return Finding(probe, NOTE, f"split in two, the second part refused "
                                f"(replies {_codes(replies)})")


def bare_line_end(target: Target, name: str, text: bytes) -> Finding:
    """A bare CR or LF inside a line (RFC 5321 2.3.8): refusing it is what
    Postfix's ``smtpd_forbid_bare_newline = normalize`` or ``reject`` does."""
    with open_transaction(target) as c:
        reply = c.command("DATA")
        if reply.code != 354:
            raise ProbeError(f"DATA refused: {reply}")
        c.send(_header(target, name) + text + b"\r\n.\r\n")
        reply = c.expect("the end of the message")
    if reply.code == 250:
        return Finding(name, NOTE, f"accepted: {reply}")
    return Finding(name, OK, f"refused: {reply}")


# --- STARTTLS, greeting, PROXY ---------------------------------------------------------

def starttls_injection(target: Target) -> Finding:
    """``STARTTLS`` and ``NOOP`` in one packet (CVE-2011-0411 and its kin): a NOOP
    answered inside TLS was read in clear text and kept across the upgrade."""
    probe = "STARTTLS command injection"
    if target.tls == "implicit":
        return Finding(probe, SKIPPED, "implicit TLS: no STARTTLS")
    with ProbeClient(target) as c:
        c.expect("the connection (greeting)")
        if not offers(c.ehlo(), "STARTTLS"):
            return Finding(probe, SKIPPED, "STARTTLS not offered")
        c.send(b"STARTTLS\r\nNOOP\r\n")
        reply = c.expect("STARTTLS")
        if reply.code != 220:
            return Finding(probe, OK, f"STARTTLS with a command after it refused: {reply}")
        if c.pending:
            return Finding(probe, NOTE, "answered the NOOP in clear text after its 220")
        c.wrap()
        injected = c.reply(target.quiet)
        if injected is not None:
            return Finding(probe, FAIL, f"answered, inside TLS, the NOOP sent before it: "
                                        f"{injected}")
        if c.closed:
            return Finding(probe, OK, "closed the connection after the handshake")
        c.ehlo()
    return Finding(probe, OK, "discarded what came after STARTTLS")


def pregreet(target: Target) -> Finding:
    """EHLO before the greeting (RFC 5321 3.1: the client waits for it). A server
    that holds its banner back can tell such a client (a spam engine) apart."""
    probe = "pipelining before the greeting"
    with ProbeClient(target) as c:
        c.send(f"EHLO {target.helo}\r\n".encode())
        replies = c.replies(target.timeout)
    if not replies:
        return Finding(probe, NOTE, "no greeting")
    if replies[0].code not in (220, 554, 421):
        return Finding(probe, FAIL, f"answered the EHLO before greeting: {replies[0]}")
    if replies[0].code != 220:
        return Finding(probe, OK, f"refused the client that talked first: {replies[0]}")
    return Finding(probe, NOTE, "served a client that talked first (no pregreet check)")


#: PROXY protocol headers (HAProxy's proxy-protocol.txt, versions 1 and 2) with
#: documentation addresses (RFC 5737).
PROXY_V1 = b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 25\r\n"
PROXY_V2 = (b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11\x00\x0c"
            + bytes([192, 0, 2, 1, 192, 0, 2, 2]) + (40000).to_bytes(2, "big")
            + (25).to_bytes(2, "big"))


def proxy_header(target: Target, version: int) -> Finding:
    """A PROXY header at connect on a listener that does not expect one must not
    be taken as the client's address: anyone could forge theirs."""
    probe = f"PROXY v{version} header on a non-PROXY listener"
    with ProbeClient(target) as c:
        c.send(PROXY_V1 if version == 1 else PROXY_V2)
        replies = c.replies(target.timeout)
        if not replies or replies[0].code != 220:
            return Finding(probe, OK, f"refused ({replies[0] if replies else 'closed'})")
        if len(replies) > 1 or c.closed:
            answer = replies[1] if len(replies) > 1 else "closed"
            return Finding(probe, OK, f"treated as SMTP, not as a header ({answer})")
        reply = c.command("NOOP")
    if reply.code == 250:
        return Finding(probe, FAIL, "consumed the header without a word: this listener "
                                    "takes a client's address from whoever connects")
    return Finding(probe, OK, f"refused afterwards: {reply}")


# --- bytes in commands -----------------------------------------------------------------

def _commands(target: Target) -> list[tuple[str, bytes, str]]:
    """(probe, command line, status if accepted)."""
    local, _, domain = target.mail_from.rpartition("@")
    local = local or "selftest"
    mail = f"MAIL FROM:<{local}{{}}@{domain}>".encode()
    return [
        ("NUL in a verb", b"NO\x00OP\r\n", FAIL),
        ("NUL in EHLO", b"EHLO self\x00test.invalid\r\n", NOTE),
        ("NUL in MAIL FROM", mail.replace(b"{}", b"\x00x") + b"\r\n", FAIL),
        ("8-bit byte in a verb", b"NO\xffOP\r\n", FAIL),
        ("invalid UTF-8 in MAIL FROM", mail.replace(b"{}", b"\xff\xfe")
         + b" SMTPUTF8\r\n", NOTE),
        ("UTF-8 in MAIL FROM without SMTPUTF8", mail.replace(b"{}", "é".encode())
         + b"\r\n", NOTE),
    ]


def _still_serving(c: ProbeClient, probe: str) -> Finding | None:
    if c.closed:
        return None
    reply = c.command("NOOP")
    if reply.code != 250:
        return Finding(probe, FAIL, f"no longer serves: NOOP got {reply}")
    return None


def bytes_in_commands(target: Target) -> Iterator[Finding]:
    for probe, line, if_accepted in _commands(target):
        try:
            with open_session(target)[0] as c:
                c.send(line)
                reply = c.expect(probe)
                if reply.code // 100 == 2:
                    yield Finding(probe, if_accepted, f"accepted: {reply}")
                    continue
                yield _still_serving(c, probe) or Finding(probe, OK, f"refused: {reply}")
        except ProbeError as exc:
            yield Finding(probe, ERROR, str(exc))


#: Command line lengths to try: RFC 5321's limit (512 octets), Postfix's
#: line_length_limit (2048), and far past anything a server should buffer.
LONG_LINES = (513, 2049, 4097, 65537)


def long_line(target: Target, length: int) -> Finding:
    """A ``NOOP`` command line of ``length`` octets with its CRLF, then a plain NOOP.
    Two replies are right (or one and a close); more mean the long line was cut
    into pieces and the pieces read as commands: an attacker picks the piece."""
    probe = f"{length}-octet command line"
    pad = b"x" * (length - len(b"NOOP \r\n"))
    c, _ = open_session(target)
    with c:
        c.send(b"NOOP " + pad + b"\r\nNOOP\r\n")
        replies = c.replies(target.timeout)
    if len(replies) > 2:
        return Finding(probe, FAIL, f"cut into pieces read as commands (replies {_codes(replies)})")
    if not replies:
        return Finding(probe, OK, "closed the connection")
    if replies[0].code // 100 == 2:
        return Finding(probe, NOTE, f"accepted: {replies[0]}")
    return Finding(probe, OK, f"refused: {replies[0]}"
                   + ("" if len(replies) == 2 else " and closed the connection"))


# --- all of them -----------------------------------------------------------------------

def _guarded(probe: str, fn: Callable[[], Finding]) -> Finding:
    try:
        return fn()
    except ProbeError as exc:
        return Finding(probe, ERROR, str(exc))


def run_all(target: Target) -> Iterator[Finding]:
    """Every probe, one connection each, in the order of the report."""
    for name, ending in SMUGGLING_ENDINGS.items():
        yield _guarded(f"smuggling {name}", lambda n=name, e=ending: smuggling(target, n, e))
    for name, text in (("bare LF in message text", b"one\ntwo"),
                       ("bare CR in message text", b"one\rtwo")):
        yield _guarded(name, lambda n=name, t=text: bare_line_end(target, n, t))
    yield _guarded("STARTTLS command injection", lambda: starttls_injection(target))
    yield _guarded("pipelining before the greeting", lambda: pregreet(target))
    yield from bytes_in_commands(target)
    for length in LONG_LINES:
        yield _guarded(f"{length}-octet command line", lambda n=length: long_line(target, n))
    for version in (1, 2):
        yield _guarded(f"PROXY v{version} header on a non-PROXY listener",
                       lambda v=version: proxy_header(target, v))
