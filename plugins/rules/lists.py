"""The lists of conditions: inline ``[...]`` and list files, matched as the
access lists are (docs/rules.md): exact entries without regard to case, networks
for IP addresses (``appliance.netlist``), and wildcards."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

from appliance.netlist import NetList, is_entry, parse_texts


class ListFileError(ValueError):
    """A list file that cannot be read."""


class Matcher:
    """Membership in a list known at load: exact values (any case), networks
    (CIDR, for IP addresses) and wildcards (``*.example.org``, ``*@example.org``)."""

    def __init__(self, entries: list[Any], where: str) -> None:
        texts = [str(e) for e in entries]
        self.exact = {t.lower() for t in texts if not _is_wild(t) and not is_entry(t)}
        self.numbers = {e for e in entries if isinstance(e, int | float)
                        and not isinstance(e, bool)}
        self.networks = NetList(parse_texts([t for t in texts if is_entry(t)], where))
        wild = [fnmatch.translate(t.lower()) for t in texts if _is_wild(t) and not is_entry(t)]
        self.wild = re.compile("|".join(wild)) if wild else None
        #: The last value asked about and the answer: a session asks about its one
        #: client address, sender, recipient many times (one greenlet runs at a time).
        self.last: tuple[Any, bool] = (None, False)

    def __contains__(self, value: Any) -> bool:
        last = self.last
        if value is last[0] and value is not None:
            return last[1]
        found = self._find(value)
        self.last = (value, found)
        return found

    def _find(self, value: Any) -> bool:
        if value.__class__ in (int, float):
            return value in self.numbers or str(value) in self.exact
        text = (value if value.__class__ is str else "" if value is None else str(value)).lower()
        if text in self.exact:
            return True
        if self.networks and text in self.networks:  # not an address: not in it
            return True
        return bool(self.wild and self.wild.match(text))


def _is_wild(text: str) -> bool:
    return "*" in text or "?" in text


def read_list_file(path: Path) -> list[str]:
    """One entry a line; blank lines and ``#`` comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ListFileError(f"list file {str(path)!r} cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ListFileError(f"list file {str(path)!r} is not UTF-8 text") from None
    return [e for e in (line.split("#", 1)[0].strip() for line in lines) if e]
