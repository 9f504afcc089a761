"""Command lines: verb, arguments, MAIL/RCPT paths and ESMTP parameters.

Only syntax lives here; whether a command is allowed now is ``_state.py``'s business.
Every refusal is raised as :class:`CommandError` carrying the reply.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from attrs import frozen

from appliance.protocol._address import AddressError, check_mailbox, decode_xtext, split_path
from appliance.protocol.events import (
    Auth,
    Data,
    Event,
    Expn,
    Helo,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    StartTLS,
    Vrfy,
    Xclient,
    Xforward,
)

VERBS = frozenset({
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "HELP",
    "VRFY", "EXPN", "STARTTLS", "AUTH", "XCLIENT", "XFORWARD",
})

#: The attributes each command takes (Postfix's XCLIENT_README and XFORWARD_README).
XCLIENT_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT")
XFORWARD_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")

MAX_BDAT = 2**53
MAX_ENVID = 100  # RFC 3461 4.4

UNRECOGNIZED = Reply(500, "5.5.2", "Command unrecognized")
BAD_CHARACTERS = Reply(500, "5.5.2", "Invalid characters in command")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")
AUTH_BAD_CHARACTERS = Reply(501, "5.5.2", "Invalid characters in authentication exchange")
NEEDS_UTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")

_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_VALUE = re.compile(r"[!-<>-~\u0080-\U0010ffff]+")  # RFC 5321 esmtp-value, RFC 6531
_DIGITS = re.compile(r"[0-9]+")
_MECHANISM = re.compile(r"[A-Za-z0-9_-]{1,20}")  # RFC 4954 sasl-mech
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")  # RFC 3461 addr-type (atom)

_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})


@frozen
class Offered:
    """What the EHLO reply advertises that changes how MAIL is parsed."""

    smtputf8: bool = True  # RFC 6531: non-ASCII addresses and the SMTPUTF8 parameter
    binarymime: bool = False  # RFC 3030 3: BODY=BINARYMIME

    @property
    def bodies(self) -> tuple[str, ...]:
        return ("7BIT", "8BITMIME", "BINARYMIME") if self.binarymime else ("7BIT", "8BITMIME")


class CommandError(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply)
        self.reply = reply


def _syntax(text: str) -> CommandError:
    return CommandError(Reply(501, "5.5.4", f"Syntax: {text}"))


def _bad_param(text: str) -> CommandError:
    return CommandError(Reply(501, "5.5.4", text))


def decode_line(raw: bytes) -> str:
    """A line without its line end -> str; NUL, CR and non-UTF-8 are refused."""
    if b"\0" in raw or b"\r" in raw:
        raise CommandError(BAD_CHARACTERS)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(BAD_CHARACTERS) from None


def split_command(raw: bytes) -> tuple[str, str]:
    """``b"mail FROM:<a@b>"`` -> ``("MAIL", "FROM:<a@b>")``."""
    verb, _, args = decode_line(raw).partition(" ")
    return verb.upper(), args.strip(" ")


# --- per-verb argument parsers -------------------------------------------------------


def _helo(verb: str, args: str, utf8: bool) -> Event:
    if not args:
        raise _syntax(f"{verb} hostname")
    return Helo(args, verb == "EHLO")


def _no_args(event: Event) -> Callable[[str, str, bool], Event]:
    def parse(verb: str, args: str, utf8: bool) -> Event:
        if args:
            raise _syntax(verb)
        return event

    return parse


def _with_arg(cls: type) -> Callable[[str, str, bool], Event]:
    def parse(verb: str, args: str, utf8: bool) -> Event:
        if not args:
            raise _syntax(f"{verb} <argument>")
        return cls(args)

    return parse


def _auth(verb: str, args: str, utf8: bool) -> Event:
    words = args.split()
    if not 1 <= len(words) <= 2 or not _MECHANISM.fullmatch(words[0]):
        raise _syntax("AUTH mechanism [initial-response]")
    return Auth(words[0].upper(), words[1] if len(words) == 2 else None)


def _attributes(cls: type, names: tuple[str, ...]) -> Callable[[str, str, bool], Event]:
    """``XCLIENT ADDR=192.0.2.7 HELO=relay.example``: one or more name=xtext words."""

    def parse(verb: str, args: str, utf8: bool) -> Event:
        words = args.split()
        if not words:
            raise _syntax(f"{verb} attribute=value ...")
        found: dict[str, str] = {}
        for word in words:
            name, eq, value = word.partition("=")
            name = name.upper()
            if not eq or name not in names:
                raise _bad_param(f"Bad {verb} attribute: {word[:40]}"
                                 f" (expected {', '.join(names)})")
            found[name] = _xtext(name, value)
        return cls(found)

    return parse


def _mail(verb: str, args: str, offered: Offered) -> Event:
    syntax = Reply(501, "5.5.2", "Syntax: MAIL FROM:<address>")
    path, rest = split_path(_after_colon(args, "FROM:", syntax), syntax)
    if not path.isascii() and not offered.smtputf8:
        raise CommandError(NEEDS_UTF8)
    params = _mail_params(_split_params(rest), offered)
    if not path:
        return Mail("", params)
    if not path.isascii() and not params.get("SMTPUTF8"):
        raise CommandError(NEEDS_UTF8)
    return Mail(check_mailbox(path, rcpt=False), params)


def _rcpt(verb: str, args: str, utf8: bool) -> Event:
    """``utf8``: the MAIL of this transaction carried SMTPUTF8."""
    syntax = Reply(501, "5.5.2", "Syntax: RCPT TO:<address>")
    path, rest = split_path(_after_colon(args, "TO:", syntax), syntax)
    if not path:
        raise CommandError(Reply(501, "5.1.3", "Null recipient address not allowed"))
    if not path.isascii() and not utf8:
        raise CommandError(NEEDS_UTF8)
    params = _rcpt_params(_split_params(rest))
    return Rcpt(check_mailbox(path, rcpt=True), params)


def _after_colon(args: str, prefix: str, syntax: Reply) -> str:
    if args[:len(prefix)].upper() != prefix:
        raise CommandError(syntax)
    rest = args[len(prefix):]
    return rest[1:] if rest.startswith(" ") else rest  # one optional space


PARSERS: dict[str, Callable[[str, str, Any], Event]] = {
    "HELO": _helo,
    "EHLO": _helo,
    "MAIL": _mail,
    "RCPT": _rcpt,
    "DATA": _no_args(Data()),
    "RSET": _no_args(Rset()),
    "QUIT": _no_args(Quit()),
    "STARTTLS": _no_args(StartTLS()),
    "NOOP": lambda verb, args, utf8: Noop(),
    "HELP": lambda verb, args, utf8: Help(args),
    "VRFY": _with_arg(Vrfy),
    "EXPN": _with_arg(Expn),
    "AUTH": _auth,
    "XCLIENT": _attributes(Xclient, XCLIENT_ATTRIBUTES),
    "XFORWARD": _attributes(Xforward, XFORWARD_ATTRIBUTES),
}


def parse_command(verb: str, args: str, context: Offered | bool) -> Event:
    """The event for an allowed ``verb`` (not BDAT). ``context``: for MAIL what the
    engine offers, for RCPT whether the transaction's MAIL carried SMTPUTF8."""
    try:
        return PARSERS[verb](verb, args, context)
    except AddressError as exc:
        raise CommandError(exc.reply) from None


def parse_bdat(args: str) -> tuple[int, bool]:
    words = args.split()
    if not 1 <= len(words) <= 2 or not _DIGITS.fullmatch(words[0]) \
            or (len(words) == 2 and words[1].upper() != "LAST"):
        raise _syntax("BDAT size [LAST]")
    size = int(words[0])
    if size > MAX_BDAT:
        raise _bad_param("BDAT chunk size too large")
    return size, len(words) == 2


# --- ESMTP parameters ----------------------------------------------------------------


def _split_params(text: str) -> dict[str, str | None]:
    """``" SIZE=10 SMTPUTF8"`` -> ``{"SIZE": "10", "SMTPUTF8": None}``."""
    params: dict[str, str | None] = {}
    for word in text.split(" "):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if not _KEYWORD.fullmatch(key) or (eq and not _VALUE.fullmatch(value)):
            raise _bad_param(f"Bad parameter syntax: {word[:40]}")
        key = key.upper()
        if key in params:
            raise _bad_param(f"Duplicate {key} parameter")
        params[key] = value if eq else None
    return params


def _unrecognised(key: str) -> CommandError:
    return CommandError(Reply(555, "5.5.4", f"{key} parameter not recognised"))


def _needs_value(key: str, value: str | None) -> str:
    if value is None:
        raise _bad_param(f"{key} needs a value")
    return value


def _mail_params(raw: dict[str, str | None], offered: Offered) -> dict:
    params: dict = {}
    for key, value in raw.items():
        if key == "SIZE":
            if value is None or not _DIGITS.fullmatch(value):
                raise _bad_param("SIZE must be a number")
            params[key] = int(value)
        elif key == "BODY":
            body = _needs_value(key, value).upper()
            if body not in offered.bodies:
                # RFC 5321 4.1.1.11: a parameter the server cannot implement is 555;
                # BINARYMIME only when EHLO advertised it (RFC 3030 3).
                raise CommandError(Reply(555, "5.5.4", f"BODY={value[:20]} not supported"))
            params[key] = body
        elif key == "SMTPUTF8" and offered.smtputf8:
            if value is not None:
                raise _bad_param("SMTPUTF8 takes no value")
            params[key] = True
        elif key == "AUTH":
            params[key] = _xtext(key, value)
        elif key == "RET":
            ret = _needs_value(key, value).upper()
            if ret not in ("FULL", "HDRS"):
                raise _bad_param("RET must be FULL or HDRS")
            params[key] = ret
        elif key == "ENVID":
            if len(_needs_value(key, value)) > MAX_ENVID:
                raise _bad_param("ENVID is too long")
            params[key] = _xtext(key, value)
        else:
            raise _unrecognised(key)
    return params


def _rcpt_params(raw: dict[str, str | None]) -> dict:
    params: dict = {}
    for key, value in raw.items():
        if key == "NOTIFY":
            words = tuple(_needs_value(key, value).upper().split(","))
            ok = words == ("NEVER",) or (
                len(set(words)) == len(words) and set(words) <= _NOTIFY)
            if not ok:
                raise _bad_param("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
            params[key] = words
        elif key == "ORCPT":
            addr_type, semi, text = _needs_value(key, value).partition(";")
            if not semi or not _ADDR_TYPE.fullmatch(addr_type) or not text:
                raise _bad_param("ORCPT must be addr-type;address")
            params[key] = f"{addr_type};{_xtext(key, text)}"
        else:
            raise _unrecognised(key)
    return params


def _xtext(key: str, value: str | None) -> str:
    try:
        return decode_xtext(_needs_value(key, value))
    except ValueError:
        raise _bad_param(f"{key} value is not valid xtext") from None
