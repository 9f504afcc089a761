"""Value types with explicit units: sizes, durations and file paths.

The config never takes a bare number whose unit must be guessed (CONFIG-CONVENTIONS),
so these types parse the admin's spelling once, here, and the rest of the appliance
works with plain numbers: a :class:`Size` *is* an ``int`` of bytes and a
:class:`Duration` *is* a ``float`` of seconds. Only ``repr()`` shows the unit; ``str()``
stays the plain number so ``f"SIZE {limits.max_message_size}"`` renders digits.

Any attrs config class (plugins' ones included) may annotate a field with these types;
the loader's converter structures them and reports the ``ValueError`` text below as
"what was expected".
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["Duration", "FilePath", "LogOutputs", "Size", "format_duration", "format_size"]

# Binary units are powers of 1024, decimal units powers of 1000 (IEC 80000-13);
# the letters are matched case-insensitively, so "mib" == "MiB" and "kb" == "kB".
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$", re.IGNORECASE)
SIZE_EXPECTED = 'a number of bytes or a size with a unit such as "10 MiB", "512 KiB" or "10 MB"'

# Units largest first; each may appear once, in this order: "1h30m", "2m30s", "1s500ms".
_DURATION_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1), ("ms", Decimal("0.001")))
_DURATION_RE = re.compile(
    r"^\s*"
    + r"".join(
        rf"(?:(?P<{name}>\d+(?:\.\d+)?)\s*{name}{'(?!s)' if name == 'm' else ''}\s*)?"
        for name, _ in _DURATION_UNITS
    )
    + r"$",
    re.IGNORECASE,
)
DURATION_EXPECTED = 'a duration with a unit such as "120s", "15m" or "1h30m"'


class Size(int):
    """A number of bytes, written as an integer or as a string with a unit.

    ``Size("10 MiB") == 10485760``. Binary units (KiB, MiB, GiB) are powers of 1024,
    decimal ones (kB, MB, GB) powers of 1000; the space is optional and the letters
    are case-insensitive. A fraction is allowed when it comes to whole bytes
    ("1.5 KiB"); a string without a unit and a negative size are errors.
    """

    def __new__(cls, value: int | str) -> Size:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"expected {SIZE_EXPECTED}")
        if isinstance(value, str):
            value = _parse_size(value)
        if value < 0:
            raise ValueError("expected a size that is not negative")
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return f"Size({format_size(self)!r})"

    __str__ = int.__repr__


class Duration(float):
    """A length of time in seconds, written as a string with a unit.

    ``Duration("1h30m") == 5400.0``. Units: ms, s, m, h, d; several may be combined,
    largest first, each once. Code may pass a number of seconds
    (``Duration(30)``); the config may not: a bare number there is an error.
    """

    def __new__(cls, value: float | int | str) -> Duration:
        if isinstance(value, bool) or not isinstance(value, float | int | str):
            raise ValueError(f"expected {DURATION_EXPECTED}")
        seconds = _parse_duration(value) if isinstance(value, str) else float(value)
        if seconds < 0:
            raise ValueError("expected a duration that is not negative")
        return super().__new__(cls, seconds)

    def __repr__(self) -> str:
        return f"Duration({format_duration(self)!r})"

    __str__ = float.__repr__


class FilePath(str):
    """A file or directory path; the loader makes it absolute.

    A relative path in a config file is resolved against the directory of the file that
    set it, so ``"../var/tls/cert.pem"`` in ``conf.d/20-tls.toml`` means
    ``<conf.d>/../var/tls/cert.pem``. ``""`` means "not set" and stays ``""``.
    """

    __slots__ = ()


class LogOutputs(tuple):
    """Where log lines go: one output name or an array of them
    (``"stderr"`` or ``["file", "journal"]``), each at most once."""

    NAMES = ("stderr", "file", "syslog", "journal")
    EXPECTED = ('"stderr", "file", "syslog" or "journal", or an array of them, '
                "each at most once")

    def __new__(cls, value: str | list | tuple) -> LogOutputs:
        names = [value] if isinstance(value, str) else value
        if (not isinstance(names, list | tuple) or not names
                or any(n not in cls.NAMES for n in names) or len(set(names)) != len(names)):
            raise ValueError(f"expected {cls.EXPECTED}")
        return super().__new__(cls, names)

    def __repr__(self) -> str:
        return f"LogOutputs({list(self)!r})"


def _parse_size(text: str) -> int:
    match = _SIZE_RE.match(text)
    if text.strip().startswith("-"):
        raise ValueError("expected a size that is not negative")
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected {SIZE_EXPECTED}")
    number = Decimal(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if number != number.to_integral_value():
        raise ValueError("expected a size that is a whole number of bytes")
    return int(number)


def _parse_duration(text: str) -> float:
    if text.strip().startswith("-"):
        raise ValueError("expected a duration that is not negative")
    match = _DURATION_RE.match(text)
    if not match or not any(match.groupdict().values()):
        raise ValueError(f"expected {DURATION_EXPECTED}")
    total = Decimal(0)
    for name, factor in _DURATION_UNITS:
        if match.group(name) is not None:
            try:
                total += Decimal(match.group(name)) * factor
            except InvalidOperation:  # pragma: no cover - the regex admits only digits
                raise ValueError(f"expected {DURATION_EXPECTED}") from None
    return float(total)


def format_size(size: int) -> str:
    """The shortest exact spelling of a size, for reports: ``"10 MiB"``, ``"10240 kB"``."""
    for unit in ("GiB", "MiB", "KiB", "GB", "MB", "kB"):
        factor = _SIZE_UNITS[unit.lower()]
        if size and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{int(size)} B"


def format_duration(seconds: float) -> str:
    """The spelling of a duration that parses back to it: ``"1h30m"``, ``"500ms"``."""
    millis = round(seconds * 1000)
    if abs(millis / 1000 - seconds) > 1e-9:
        return f"{Decimal(repr(float(seconds))):f}s"
    if millis == 0:
        return "0s"
    parts = []
    for name, factor in _DURATION_UNITS:
        unit_ms = int(Decimal(factor) * 1000)
        count, millis = divmod(millis, unit_ms)
        if count:
            parts.append(f"{count}{name}")
    return "".join(parts)
