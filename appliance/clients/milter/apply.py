"""Apply a milter's end-of-message modifications through the core's operations
(Transaction, Headers, Message), so the next milter and the spool see them."""

from __future__ import annotations

import logging
import re
import tempfile
from typing import Any

from appliance.clients.milter.codec import Modification

log = logging.getLogger("appliance.clients.milter")

_NEWLINE = re.compile(r"\r?\n")


def header_value_out(value: str) -> str:
    """A stored value as milters expect it: no leading space, LF between lines."""
    return value.lstrip(" \t").replace("\r\n", "\n")


def header_value_in(value: str) -> str:
    """A milter's value (LF or CRLF folds) as the core stores it (CRLF folds)."""
    return _NEWLINE.sub("\r\n", value)


_BAD_ADDRESS = re.compile(r"[\s<>\x00-\x1f\x7f]")


def _address(value: str, null_ok: bool = False) -> str:
    """An envelope address from a milter: no spaces, brackets or controls; the null
    sender only where it is allowed."""
    if (not value and not null_ok) or _BAD_ADDRESS.search(value):
        raise ValueError(f"not an envelope address: {value!r}")
    return value


def apply_modifications(mods: list[Modification], transaction: Any, message: Any,
                        spill_dir: str, who: str = "milter") -> list[str]:
    """Apply in order; body chunks are joined into one new body. A change the
    core refuses (a header name with a space, a value that would smuggle a new
    field) is logged and skipped. Returns a short note per change applied."""
    done: list[str] = []
    body = None
    try:
        for mod in mods:
            if mod.kind == "replace_body":
                if body is None:
                    body = tempfile.SpooledTemporaryFile(256 * 1024, dir=spill_dir)
                body.write(mod.data)
                continue
            try:
                note = _apply(mod, transaction, message)
            except ValueError as exc:
                log.warning("%s: %s refused: %s", who, mod.kind, exc)
                continue
            if note:
                done.append(note)
        if body is not None:
            body.seek(0)
            message.replace_body(body)
            done.append("replace_body")
    finally:
        if body is not None:
            body.close()
    return done


def _apply(mod: Modification, tx: Any, message: Any) -> str | None:
    headers = message.headers
    kind = mod.kind
    if kind == "add_header":
        headers.add(mod.name, header_value_in(mod.value))
    elif kind == "insert_header":
        headers.insert(mod.index, mod.name, header_value_in(mod.value))
    elif kind == "change_header":
        if not mod.value:
            if not headers.remove_nth(mod.name, mod.index):
                return None
            return f"delete_header {mod.name}[{mod.index}]"
        if not headers.modify_nth(mod.name, mod.index, header_value_in(mod.value)):
            headers.add(mod.name, header_value_in(mod.value))  # as Sendmail: add it
    elif kind == "change_sender":
        tx.change_sender(_address(mod.value, null_ok=True), mod.args)
    elif kind == "add_recipient":
        tx.add_recipient(_address(mod.value), params=mod.args or None)
    elif kind == "delete_recipient":
        if not tx.remove_recipient(mod.value):
            return None
    elif kind == "quarantine":
        tx.quarantine(mod.value)
    else:  # pragma: no cover - the codec knows no other kinds
        raise ValueError(f"unknown modification {kind}")
    return f"{kind} {mod.name or mod.value}".rstrip()
