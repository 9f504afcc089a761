"""The message header section, with Axigen's header methods.

Fields keep their raw bytes (decoded with surrogateescape so 8-bit headers
round-trip exactly); ``read()`` unfolds. Names compare case-insensitively.
"""

from __future__ import annotations

import re

_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")  # RFC 5322 ftext
_FOLD = re.compile(r"\r\n(?=[ \t])")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _check_name(name: str) -> str:
    if not _FIELD_NAME.match(name):
        raise ValueError(f"invalid header field name {name!r}")
    return name


def _check_value(value: str) -> str:
    # Reject CR/LF that would not be a fold: a plugin must not smuggle new fields.
    if re.search(r"\r(?!\n[ \t])|(?<!\r)\n", value) or re.search(r"\r\n(?![ \t])", value):
        raise ValueError("header value may contain CRLF only as folding (CRLF + space)")
    return value


class Headers:
    """Ordered header fields. Values are stored as written after the colon."""

    def __init__(self, fields: list[tuple[str, str]] | None = None) -> None:
        self._fields: list[tuple[str, str]] = list(fields or [])

    # --- parsing and output ---------------------------------------------------

    @classmethod
    def parse(cls, block: bytes) -> tuple[Headers, bytes]:
        """Split ``block`` into header fields and whatever follows them.

        The header section ends at the first empty line, or at the first line that
        is neither a field nor a continuation (that line starts the body, as in
        Postfix). Returns (headers, rest) where ``rest`` starts the body (the blank
        separator line, if any, stays at the start of ``rest``).
        """
        fields: list[tuple[str, str]] = []
        pos = 0
        end = len(block)
        while pos < end:
            nl = block.find(b"\r\n", pos)
            line_end = end if nl < 0 else nl
            line = block[pos:line_end]
            if not line:
                break
            if line[:1] in (b" ", b"\t") and fields:
                name, value = fields[-1]
                fields[-1] = (name, value + "\r\n" + _decode(line))
            else:
                colon = line.find(b":")
                name = _decode(line[:colon]) if colon > 0 else ""
                if not name or not _FIELD_NAME.match(name):
                    break
                fields.append((name, _decode(line[colon + 1 :])))
            if nl < 0:
                pos = end
                break
            pos = nl + 2
        return cls(fields), block[pos:]

    def to_bytes(self) -> bytes:
        return "".join(f"{n}:{v}\r\n" for n, v in self._fields).encode(
            "utf-8", "surrogateescape"
        )

    def __iter__(self):
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"

    # --- reading ----------------------------------------------------------------

    def get_all(self, name: str) -> list[str]:
        """Unfolded values of every field named ``name``, in order."""
        lname = name.lower()
        return [_FOLD.sub("", v).strip() for n, v in self._fields if n.lower() == lname]

    def read(self, name: str) -> str:
        """Axigen's readHeader: all values joined by CRLF, '' when absent."""
        return "\r\n".join(self.get_all(name))

    def exists(self, name: str) -> bool:
        """Axigen's checkExistsHeader."""
        lname = name.lower()
        return any(n.lower() == lname for n, _ in self._fields)

    def count(self, name: str) -> int:
        lname = name.lower()
        return sum(1 for n, _ in self._fields if n.lower() == lname)

    # --- editing (Axigen's header methods) -------------------------------------

    def add(self, name: str, value: str, *, prepend: bool = False) -> None:
        """addHeader: append a field (or put it on top, as trace fields go)."""
        field = (_check_name(name), " " + _check_value(value))
        if prepend:
            self._fields.insert(0, field)
        else:
            self._fields.append(field)

    def add_if_absent(self, name: str, value: str) -> bool:
        """addIfNotExistsHeader. Returns True when the field was added."""
        if self.exists(name):
            return False
        self.add(name, value)
        return True

    def remove_first(self, name: str) -> bool:
        """removeFirstHeader."""
        lname = name.lower()
        for i, (n, _) in enumerate(self._fields):
            if n.lower() == lname:
                del self._fields[i]
                return True
        return False

    def remove(self, name: str) -> int:
        """removeHeader: delete every field named ``name``; returns how many."""
        lname = name.lower()
        before = len(self._fields)
        self._fields = [(n, v) for n, v in self._fields if n.lower() != lname]
        return before - len(self._fields)

    def remove_value(self, name: str, value: str) -> bool:
        """removeHeaderValue: delete the first field with this name and (unfolded) value."""
        lname = name.lower()
        for i, (n, v) in enumerate(self._fields):
            if n.lower() == lname and _FOLD.sub("", v).strip() == value.strip():
                del self._fields[i]
                return True
        return False

    def modify(self, name: str, value: str) -> None:
        """modifyHeader: set the first field's value, adding the field if absent."""
        if not self.modify_if_exists(name, value):
            self.add(name, value)

    def modify_if_exists(self, name: str, value: str) -> bool:
        """modifyIfExistsHeader: set the first field's value only if it exists."""
        lname = name.lower()
        _check_value(value)
        for i, (n, _) in enumerate(self._fields):
            if n.lower() == lname:
                self._fields[i] = (n, " " + value)
                return True
        return False

    # --- positional edits (milters: insert header, change/delete the Nth one) ------

    def insert(self, index: int, name: str, value: str) -> None:
        """Insert a field at position ``index`` of the whole section (0 = on top);
        past the end it is appended."""
        field = (_check_name(name), " " + _check_value(value))
        self._fields.insert(max(0, min(index, len(self._fields))), field)

    def _nth(self, name: str, n: int) -> int | None:
        """Position of the ``n``-th (1-based) field named ``name``, or None."""
        lname = name.lower()
        seen = 0
        for i, (fname, _) in enumerate(self._fields):
            if fname.lower() == lname:
                seen += 1
                if seen == n:
                    return i
        return None

    def modify_nth(self, name: str, n: int, value: str) -> bool:
        """Set the value of the ``n``-th (1-based) field named ``name``; False
        (nothing changed) when there are fewer than ``n`` of them."""
        _check_value(value)
        i = self._nth(name, n) if n >= 1 else None
        if i is None:
            return False
        self._fields[i] = (self._fields[i][0], " " + value)
        return True

    def remove_nth(self, name: str, n: int) -> bool:
        """Delete the ``n``-th (1-based) field named ``name``; False if absent."""
        i = self._nth(name, n) if n >= 1 else None
        if i is None:
            return False
        del self._fields[i]
        return True
