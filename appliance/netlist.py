"""Network lists: sets of IP addresses written as admins write them, looked up fast.

An entry is a single address (``192.0.2.7``, ``2001:db8::1``), a CIDR network
(``10.0.0.0/8``, ``2001:db8::/32``) or an inclusive range (``10.0.0.5-10.0.0.99``),
IPv4 or IPv6. Lists come inline (config arrays) or from files, one entry a line,
with ``#`` comments and blank lines.

Why intervals: every entry is an inclusive interval of integers; a list is compiled
into sorted, merged, disjoint intervals per address family, so a lookup is one
binary search (O(log n)) however the entries overlap. 100,000 entries compile in a
fraction of a second (bench/access_lookup.py). Pure Python, no I/O except
:func:`read_file`, no gevent.
"""

from __future__ import annotations

import socket
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from operator import itemgetter
from pathlib import Path

__all__ = [
    "ENTRY_EXPECTED",
    "Entry",
    "ListFileError",
    "NetList",
    "address_key",
    "is_entry",
    "parse_entry",
    "parse_lines",
    "parse_texts",
    "read_file",
]

ENTRY_EXPECTED = (
    "an IP address (192.0.2.7, 2001:db8::1), a CIDR network with no host bits set"
    " (10.0.0.0/8, 2001:db8::/32) or a range (10.0.0.5-10.0.0.99)"
)

_BITS = {4: 32, 6: 128}
_MAPPED = 0xFFFF << 32  # ::ffff:0:0/96, IPv4-mapped IPv6 addresses
_FIRST = itemgetter(1)
_MAPPED_MASK = ~((1 << 32) - 1) & ((1 << 128) - 1)

#: One parsed entry: (family 4|6, first address, last address, text, where).
#: ``where`` says where the admin wrote it ("deny.txt:12", "access.deny[3]").
Entry = tuple[int, int, int, str, str]


class ListFileError(ValueError):
    """A list file that cannot be used; the message names the file and line."""


def _address(text: str) -> tuple[int, int]:
    """(family, integer) of one address; ValueError if it is not one."""
    try:
        if ":" in text:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):  # not an address; NUL or non-ASCII characters
        raise ValueError(ENTRY_EXPECTED) from None


def parse_entry(text: str) -> tuple[int, int, int]:
    """(family, first, last) of one entry; ValueError saying what was expected."""
    raw = text.strip()
    if "/" in raw:
        addr, _, prefix = raw.partition("/")
        family, start = _address(addr.strip())
        prefix = prefix.strip()
        bits = _BITS[family]
        if not (prefix.isascii() and prefix.isdigit()) or int(prefix) > bits:
            raise ValueError(f"a prefix length from 0 to {bits}")
        host_bits = bits - int(prefix)
        if start & ((1 << host_bits) - 1):
            network = start >> host_bits << host_bits
            raise ValueError(
                f"a network address without host bits (did you mean "
                f"{_format(family, network)}/{prefix}?)"
            )
        return family, start, start | ((1 << host_bits) - 1)
    if "-" in raw:
        first, _, last = raw.partition("-")
        family, start = _address(first.strip())
        family2, end = _address(last.strip())
        if family != family2:
            raise ValueError("a range whose two ends are both IPv4 or both IPv6")
        if end < start:
            raise ValueError("a range whose first address is not above its last")
        return family, start, end
    family, start = _address(raw)
    return family, start, start


def _format(family: int, value: int) -> str:
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


def is_entry(text: str) -> bool:
    """For config checks of inline lists."""
    try:
        parse_entry(text)
    except ValueError:
        return False
    return True


def parse_lines(lines: Iterable[str], source: str) -> list[Entry]:
    """Entries of a list file's lines (``#`` comments, blank lines skipped).

    :raises ListFileError: ``source:LINE: expected ... (got "...")`` for the first
        bad line.
    """
    entries: list[Entry] = []
    for number, line in enumerate(lines, 1):
        text = line.partition("#")[0].strip()
        if not text:
            continue
        try:
            family, start, end = parse_entry(text)
        except ValueError as exc:
            raise ListFileError(f'{source}:{number}: expected {exc} (got "{text}")') from None
        entries.append((family, start, end, text, f"{source}:{number}"))
    return entries


def parse_texts(texts: Iterable[str], where: str = "") -> list[Entry]:
    """Entries of an inline list (a config array); ``where`` names it in errors
    and in :meth:`NetList.match` results (``access.deny`` -> ``access.deny[2]``)."""
    entries: list[Entry] = []
    for index, text in enumerate(texts):
        try:
            family, start, end = parse_entry(text)
        except ValueError as exc:
            raise ValueError(f'{where}[{index}]: expected {exc} (got "{text}")') from None
        entries.append((family, start, end, text.strip(), f"{where}[{index}]"))
    return entries


def read_file(path: str | Path) -> list[Entry]:
    """Entries of a list file. :raises ListFileError: unreadable or a bad line."""
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_lines(handle, str(path))
    except UnicodeDecodeError as exc:
        raise ListFileError(f"{path}: not valid UTF-8 ({exc.reason})") from None
    except OSError as exc:
        raise ListFileError(f"{path}: cannot be read ({exc.strerror})") from None


def address_key(address: str) -> tuple[int, int] | None:
    """(family, integer) of a client address as the socket reports it, or None."""
    address = address.partition("%")[0]  # fe80::1%eth0: the zone is not the address
    try:
        return _address(address)
    except (OSError, ValueError):
        return None


class _Family:
    """Merged, disjoint intervals of one address family, and the entries behind them."""

    __slots__ = ("starts", "ends", "entries", "reach")

    def __init__(self, entries: list[Entry]) -> None:
        entries.sort(key=_FIRST)  # by first address; an int key sorts 3x faster than tuples
        self.entries = entries
        starts: list[int] = []
        ends: list[int] = []
        reach: list[int] = []  # reach[k]: the highest last address of entries[:k + 1]
        last = -2
        for entry in entries:
            start, end = entry[1], entry[2]
            if start <= last + 1:  # overlapping or adjacent: merge
                if end > last:
                    ends[-1] = last = end
            else:
                starts.append(start)
                ends.append(end)
                last = end
            reach.append(last)
        self.starts, self.ends, self.reach = starts, ends, reach

    def find(self, value: int) -> int:
        """Index of the interval holding ``value``, or -1."""
        i = bisect_right(self.starts, value) - 1
        return i if i >= 0 and value <= self.ends[i] else -1

    def entry(self, value: int) -> Entry:
        """The first entry (by first address) that holds ``value``, which some entry
        does. Also O(log n): ``reach`` only grows, and the first entry whose reach
        gets to ``value`` ends at or after it, and starts at or before it (entries
        of earlier intervals all end before ``value``)."""
        return self.entries[bisect_left(self.reach, value)]


class NetList:
    """A compiled list. ``address in netlist`` is the fast test; :meth:`match`
    also says which entry matched (for logs). An IPv4-mapped IPv6 address
    (``::ffff:192.0.2.7``) matches IPv4 entries too."""

    __slots__ = ("v4", "v6")

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        v4: list[Entry] = []
        v6: list[Entry] = []
        for e in entries:
            (v4 if e[0] == 4 else v6).append(e)
        self.v4 = _Family(v4)
        self.v6 = _Family(v6)

    @classmethod
    def from_texts(cls, texts: Iterable[str], where: str = "") -> NetList:
        """From inline entries; ValueError naming the bad one."""
        return cls(parse_texts(texts, where))

    def __len__(self) -> int:
        """Number of entries (not of merged intervals)."""
        return len(self.v4.entries) + len(self.v6.entries)

    @property
    def intervals(self) -> int:
        return len(self.v4.starts) + len(self.v6.starts)

    def __contains__(self, address: str) -> bool:
        key = address_key(address)
        return key is not None and self.contains_key(*key)

    def match(self, address: str) -> Entry | None:
        """The entry that holds ``address`` (a client address string), or None."""
        key = address_key(address)
        if key is None:
            return None
        family, value = key
        if family == 4:
            return self.v4.entry(value) if self.v4.find(value) >= 0 else None
        if self.v6.find(value) >= 0:
            return self.v6.entry(value)
        if value & _MAPPED_MASK == _MAPPED:
            value &= 0xFFFFFFFF
            return self.v4.entry(value) if self.v4.find(value) >= 0 else None
        return None

    def contains_key(self, family: int, value: int) -> bool:
        """The bare lookup, for callers that parsed the address once already."""
        if family == 4:
            return self.v4.find(value) >= 0
        if self.v6.find(value) >= 0:
            return True
        return value & _MAPPED_MASK == _MAPPED and self.v4.find(value & 0xFFFFFFFF) >= 0
