"""The milter protocol's frames, MTA side, versions 2 to 6: no I/O, bytes in and out.

A frame is a 4-byte big-endian length (of what follows), one command byte and
its data. The MTA sends commands (``encode_*``); :class:`FrameDecoder` turns the
milter's bytes into responses. :func:`negotiate` works out, from the milter's
answer to our option offer, which steps it wants, which it will not answer
(``SMFIP_NR_*``) and which modifications it may make. Described in Sendmail's
libmilter documentation and the ``milter-protocol`` notes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from attrs import field, frozen

# --- commands, MTA to milter ------------------------------------------------------------
ABORT, BODY, CONNECT, MACRO, EOM, HELO = b"A", b"B", b"C", b"D", b"E", b"H"
QUIT_NC, HEADER, MAIL, EOH, OPTNEG, QUIT = b"K", b"L", b"M", b"N", b"O", b"Q"
RCPT, DATA, UNKNOWN = b"R", b"T", b"U"

# --- responses, milter to MTA -----------------------------------------------------------
R_ADDRCPT, R_DELRCPT, R_ADDRCPT_PAR, R_SHUTDOWN = b"+", b"-", b"2", b"4"
R_ACCEPT, R_REPLBODY, R_CONTINUE, R_DISCARD = b"a", b"b", b"c", b"d"
R_CHGFROM, R_CONN_FAIL, R_ADDHEADER, R_INSHEADER = b"e", b"f", b"h", b"i"
R_SETSYMLIST, R_CHGHEADER, R_PROGRESS, R_QUARANTINE = b"l", b"m", b"p", b"q"
R_REJECT, R_SKIP, R_TEMPFAIL, R_REPLYCODE = b"r", b"s", b"t", b"y"

# --- actions the milter may take (SMFIF_*) ---------------------------------------------
F_ADDHDRS = 0x01
F_CHGBODY = 0x02
F_ADDRCPT = 0x04
F_DELRCPT = 0x08
F_CHGHDRS = 0x10
F_QUARANTINE = 0x20
F_CHGFROM = 0x40
F_ADDRCPT_PAR = 0x80
F_SETSYMLIST = 0x100
ALL_ACTIONS = 0x1FF

# --- protocol steps (SMFIP_*) -----------------------------------------------------------
P_NOCONNECT = 0x01
P_NOHELO = 0x02
P_NOMAIL = 0x04
P_NORCPT = 0x08
P_NOBODY = 0x10
P_NOHDRS = 0x20
P_NOEOH = 0x40
P_NR_HDR = 0x80
P_NOUNKNOWN = 0x100
P_NODATA = 0x200
P_SKIP = 0x400
P_RCPT_REJ = 0x800
P_NR_CONN = 0x1000
P_NR_HELO = 0x2000
P_NR_MAIL = 0x4000
P_NR_RCPT = 0x8000
P_NR_DATA = 0x10000
P_NR_UNKN = 0x20000
P_NR_EOH = 0x40000
P_NR_BODY = 0x80000
P_HDR_LEADSPC = 0x100000

#: What we offer: every step may be skipped or left unanswered, and we understand
#: SKIP. Not offered: RCPT_REJ (we never send rejected recipients) and HDR_LEADSPC.
OFFERED_PROTOCOL = 0x7F | P_NR_HDR | P_NOUNKNOWN | P_NODATA | P_SKIP | 0xFF000
#: The steps a milter of each protocol version knows; older milters never get the
#: others (DATA and UNKNOWN came with version 6, as did the NR_* and SKIP flags).
_STEPS_BY_VERSION = {2: 0x7F | P_NR_HDR, 3: 0x7F | P_NR_HDR, 4: 0x7F | P_NR_HDR,
                     5: 0x7F | P_NR_HDR, 6: OFFERED_PROTOCOL}
_ACTIONS_BY_VERSION = {2: 0x3F, 3: 0x3F, 4: 0x3F, 5: 0x3F, 6: ALL_ACTIONS}
VERSION = 6
MIN_VERSION = 2

#: Macro stages (SMFIM_*), in the order of the optneg reply's symbol lists.
STAGES = ("connect", "helo", "mail", "rcpt", "data", "eom", "eoh")
#: The command each stage's macros are sent before.
STAGE_COMMAND = {"connect": CONNECT, "helo": HELO, "mail": MAIL, "rcpt": RCPT,
                 "data": DATA, "eoh": EOH, "eom": EOM}

#: Largest body chunk in one frame (MILTER_CHUNK_SIZE).
CHUNK_SIZE = 65535
#: Largest frame we accept from a milter: a bigger length is a broken peer.
MAX_FRAME = 16 * 1024 * 1024


class ProtocolError(Exception):
    """The milter sent something the protocol does not allow."""


# --- encoding -------------------------------------------------------------------------

def frame(command: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + command + data


def _z(text: str) -> bytes:
    """A NUL-terminated string; NULs inside cannot be represented and are dropped."""
    return text.encode("utf-8", "surrogateescape").replace(b"\0", b"") + b"\0"


def encode_optneg(version: int = VERSION, actions: int = ALL_ACTIONS,
                  protocol: int = OFFERED_PROTOCOL) -> bytes:
    return frame(OPTNEG, struct.pack("!III", version, actions, protocol))


def encode_macros(command: bytes, macros: dict[str, str]) -> bytes:
    """Macro definitions sent just before ``command`` (SMFIC_MACRO)."""
    return frame(MACRO, command + b"".join(_z(k) + _z(v) for k, v in macros.items()))


def encode_connect(hostname: str, address: str | None, port: int = 0) -> bytes:
    """SMFIC_CONNECT: ``address`` is an IPv4/IPv6 address, a unix socket path
    (starting with ``/``) or None (family unknown)."""
    if address is None:
        return frame(CONNECT, _z(hostname) + b"U")
    if address.startswith("/"):
        family = b"L"
    else:
        family = b"6" if ":" in address else b"4"
    return frame(CONNECT, _z(hostname) + family + struct.pack("!H", port) + _z(address))


def encode_helo(name: str) -> bytes:
    return frame(HELO, _z(name))


def encode_mail(sender: str, args: Sequence[str] = ()) -> bytes:
    return frame(MAIL, _z(f"<{sender}>") + b"".join(_z(a) for a in args))


def encode_rcpt(recipient: str, args: Sequence[str] = ()) -> bytes:
    return frame(RCPT, _z(f"<{recipient}>") + b"".join(_z(a) for a in args))


def encode_header(name: str, value: str) -> bytes:
    return frame(HEADER, _z(name) + _z(value))


def encode_body(chunk: bytes) -> bytes:
    if len(chunk) > CHUNK_SIZE:
        raise ValueError("body chunk larger than 65535 octets")
    return frame(BODY, chunk)


def encode_simple(command: bytes) -> bytes:
    """DATA, EOH, end of message, ABORT, QUIT, QUIT_NC: no data."""
    return frame(command)


# --- decoding -------------------------------------------------------------------------

@frozen
class Response:
    """One frame from the milter: its command byte and raw data."""

    command: bytes
    data: bytes = b""


class FrameDecoder:
    """Feed bytes; take complete frames out with :meth:`next` (None: need more)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> Response | None:
        if len(self._buf) < 4:
            return None
        (length,) = struct.unpack_from("!I", self._buf)
        if length < 1 or length > MAX_FRAME:
            raise ProtocolError(f"bad frame length {length}")
        if len(self._buf) < 4 + length:
            return None
        command = bytes(self._buf[4:5])
        data = bytes(self._buf[5:4 + length])
        del self._buf[:4 + length]
        return Response(command, data)


def _strings(data: bytes) -> list[str]:
    """The NUL-terminated strings of a frame's data."""
    if not data.endswith(b"\0"):
        raise ProtocolError("string not NUL-terminated")
    return [s.decode("utf-8", "surrogateescape") for s in data[:-1].split(b"\0")]


def _unbracket(address: str) -> str:
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        return address[1:-1]
    return address


# --- what a response means ------------------------------------------------------------

@frozen
class Negotiated:
    """The outcome of option negotiation with one milter."""

    version: int
    actions: int  # SMFIF_* the milter may use
    skip: int  # SMFIP_NO* steps not to send
    no_reply: int  # SMFIP_NR_* steps it will not answer
    skip_ok: bool  # it may answer a body chunk with SKIP
    macros: dict[str, list[str]] = field(factory=dict)  # stage -> names it asked for

    def sends(self, step: int) -> bool:
        return not self.skip & step

    def answers(self, nr_flag: int) -> bool:
        return not self.no_reply & nr_flag

    def may(self, action: int) -> bool:
        return bool(self.actions & action)


def negotiate(reply: Response, offered_actions: int = ALL_ACTIONS,
              offered_protocol: int = OFFERED_PROTOCOL) -> Negotiated:
    """Read the milter's SMFIC_OPTNEG answer. A version outside 2..6, or steps or
    actions beyond what we offered, are errors (as in Postfix)."""
    if reply.command != OPTNEG or len(reply.data) < 12:
        raise ProtocolError(f"expected an option negotiation reply, got {reply.command!r}")
    version, actions, protocol = struct.unpack_from("!III", reply.data)
    if not MIN_VERSION <= version <= VERSION:
        raise ProtocolError(f"milter protocol version {version} not supported (2 to 6)")
    if actions & ~offered_actions:
        raise ProtocolError(f"milter asks for actions 0x{actions:x} beyond 0x{offered_actions:x}")
    if protocol & ~offered_protocol & (OFFERED_PROTOCOL | P_RCPT_REJ | P_HDR_LEADSPC):
        raise ProtocolError(f"milter asks for protocol steps 0x{protocol:x} we do not offer")
    known = _STEPS_BY_VERSION[version]
    skip = protocol & 0x7F | P_NOUNKNOWN  # we never send UNKNOWN
    skip |= protocol & P_NODATA if known & P_NODATA else P_NODATA
    no_reply = protocol & known & (P_NR_HDR | 0xFF000)
    macros: dict[str, list[str]] = {}
    rest = reply.data[12:]
    while len(rest) >= 4:
        (stage,) = struct.unpack_from("!I", rest)
        end = rest.find(b"\0", 4)
        if end < 0:
            raise ProtocolError("macro list not NUL-terminated")
        if stage < len(STAGES):
            names = rest[4:end].decode("ascii", "replace").split()
            macros[STAGES[stage]] = names
        rest = rest[end + 1:]
    return Negotiated(version=version, actions=actions & _ACTIONS_BY_VERSION[version],
                      skip=skip, no_reply=no_reply,
                      skip_ok=bool(protocol & P_SKIP and known & P_SKIP), macros=macros)


@frozen
class Decision:
    """A reply that ends a step: accept, continue, discard, reject, tempfail,
    replycode (``code``/``enhanced``/``text``), skip, or shutdown/conn_fail."""

    action: str
    code: int | None = None
    enhanced: str | None = None
    text: str | None = None


@frozen
class Modification:
    """A change requested at end of message. ``kind`` is one of add_header,
    insert_header, change_header, change_sender, add_recipient, delete_recipient,
    replace_body, quarantine."""

    kind: str
    name: str = ""
    value: str = ""
    index: int = 0
    args: str | None = None
    data: bytes = b""


_DECISIONS = {R_ACCEPT: "accept", R_CONTINUE: "continue", R_DISCARD: "discard",
              R_REJECT: "reject", R_TEMPFAIL: "tempfail", R_SKIP: "skip",
              R_SHUTDOWN: "tempfail", R_CONN_FAIL: "tempfail"}


def parse_replycode(data: bytes) -> Decision:
    """SMFIR_REPLYCODE: ``"550 5.7.1 text"`` (maybe multi-line, ``550-…``). The
    lines become one text line (CR/LF cannot reach the client)."""
    text = _strings(data)[0] if data.endswith(b"\0") else data.decode("utf-8", "replace")
    lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]
    if not lines or len(lines[0]) < 3 or not lines[0][:3].isdigit() or lines[0][0] not in "45":
        raise ProtocolError(f"bad reply code {text!r}")
    code = int(lines[0][:3])
    enhanced = None
    texts = []
    for line in lines:
        rest = line[4:] if len(line) > 3 and line[3] in " -" else line[3:]
        first, _, after = rest.partition(" ")
        parts = first.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts) and first[0] == str(code)[0]:
            enhanced = enhanced or first
            rest = after
        texts.append(rest.strip())
    return Decision("reject" if code >= 500 else "tempfail", code, enhanced,
                    " ".join(t for t in texts if t) or None)


def interpret(resp: Response) -> Decision | Modification | None:
    """What one response means; ``None`` for PROGRESS (keep waiting)."""
    cmd, data = resp.command, resp.data
    if cmd == R_PROGRESS:
        return None
    if cmd in _DECISIONS:
        return Decision(_DECISIONS[cmd])
    if cmd == R_REPLYCODE:
        return parse_replycode(data)
    if cmd == R_ADDHEADER:
        name, value = _pair(data)
        return Modification("add_header", name=name, value=value)
    if cmd in (R_INSHEADER, R_CHGHEADER):
        if len(data) < 4:
            raise ProtocolError("header index missing")
        (index,) = struct.unpack_from("!I", data)
        name, value = _pair(data[4:])
        kind = "insert_header" if cmd == R_INSHEADER else "change_header"
        return Modification(kind, name=name, value=value, index=index)
    if cmd in (R_CHGFROM, R_ADDRCPT_PAR):
        strings = _strings(data)
        args = " ".join(s for s in strings[1:] if s)
        if cmd == R_CHGFROM:
            return Modification("change_sender", value=_unbracket(strings[0]),
                                args=args or None)
        # args is "" rather than None: the form with ESMTP arguments was used
        return Modification("add_recipient", value=_unbracket(strings[0]), args=args)
    if cmd in (R_ADDRCPT, R_DELRCPT):
        kind = "add_recipient" if cmd == R_ADDRCPT else "delete_recipient"
        return Modification(kind, value=_unbracket(_strings(data)[0]))
    if cmd == R_REPLBODY:
        return Modification("replace_body", data=data)
    if cmd == R_QUARANTINE:
        return Modification("quarantine", value=_strings(data)[0] if data else "")
    raise ProtocolError(f"unknown response {cmd!r}")


def _pair(data: bytes) -> tuple[str, str]:
    strings = _strings(data)
    if len(strings) < 2:
        raise ProtocolError("header name and value expected")
    return strings[0], strings[1]


_REQUIRED_ACTION = {"add_header": F_ADDHDRS, "insert_header": F_ADDHDRS,
                    "change_header": F_CHGHDRS, "change_sender": F_CHGFROM,
                    "add_recipient": F_ADDRCPT, "delete_recipient": F_DELRCPT,
                    "replace_body": F_CHGBODY, "quarantine": F_QUARANTINE}


def required_action(mod: Modification) -> int:
    """The SMFIF_* bit the milter must have negotiated to make this change."""
    if mod.kind == "add_recipient" and mod.args is not None:
        return F_ADDRCPT_PAR
    return _REQUIRED_ACTION[mod.kind]
