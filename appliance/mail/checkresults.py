"""Check results: what each check found, by the check's name.

``session.checks`` holds what was found about the client (dnsbl, reverse-dns,
geoip, access), ``transaction.checks`` what was found about one message (spf,
sender-mx, dkim, dmarc). Later plugins read them, the envelope carries both maps
whole (docs/spool.md), and rules can read them as variables (``checks.spf.result``,
``checks.dnsbl.zone``). The core names no check: a new check only writes here.
docs/plugins.md lists what the built-in checks write.

Kept apart from :mod:`appliance.checks` (the DNS checks' plugin skeleton) because
the contexts hold these maps: this module imports nothing of the plugin API.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from attrs import field, frozen

#: The fields every result has; a check's own values (``details``) may not take them.
COMMON = ("result", "explanation", "allow_listed")


def _own_names(instance: Any, attribute: Any, details: dict[str, Any]) -> None:
    taken = sorted(set(details) & set(COMMON))
    if taken:
        raise ValueError(f"details may not use the common field names {taken}")


@frozen
class CheckResult:
    """What one check found.

    ``result`` is in the check's own words (SPF's ``Pass``, a DNSBL's answer,
    ``fail``...); ``explanation`` says why, for people (the domain's SPF
    explanation, the block list's TXT record); ``allow_listed`` means the check
    vouches for the client (an allow list matched), so other checks may exempt it;
    ``details`` are the check's own values (``zone``, ``domain``, ``country``...),
    JSON types only, as they go into the envelope."""

    result: str
    explanation: str = ""
    allow_listed: bool = False
    details: dict[str, Any] = field(factory=dict, converter=dict, validator=_own_names)

    def get(self, key: str, default: Any = None) -> Any:
        """A common field or one of the details, by name."""
        if key in COMMON:
            return getattr(self, key)
        return self.details.get(key, default)

    def as_dict(self) -> dict[str, Any]:
        """One flat object: the common fields, then the details."""
        return {"result": self.result, "explanation": self.explanation,
                "allow_listed": self.allow_listed, **self.details}


class Checks(MutableMapping[str, CheckResult]):
    """Check results by check name (the plugin's name: ``spf``, ``sender-mx``...).
    A check replaces its own entry; only :class:`CheckResult` values are taken."""

    __slots__ = ("_results",)

    def __init__(self, results: Mapping[str, CheckResult] | None = None) -> None:
        self._results: dict[str, CheckResult] = {}
        self.update(results or {})

    def __getitem__(self, name: str) -> CheckResult:
        return self._results[name]

    def __setitem__(self, name: str, result: CheckResult) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a check's name must be a non-empty string (got {name!r})")
        if not isinstance(result, CheckResult):
            raise TypeError(f"checks[{name!r}] must be a CheckResult "
                            f"(got {type(result).__name__})")
        self._results[name] = result

    def __delitem__(self, name: str) -> None:
        del self._results[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def __repr__(self) -> str:
        return f"Checks({self._results!r})"

    def record(self, name: str, result: str, /, explanation: str = "", *,
               allow_listed: bool = False, **details: Any) -> CheckResult:
        """Set ``name``'s result: ``checks.record("dnsbl", "127.0.0.2", txt, zone=z)``.
        Positional-only, so that a detail may be called ``name``."""
        self[name] = entry = CheckResult(result, explanation, allow_listed, details)
        return entry

    def value(self, name: str, key: str = "result", default: Any = None) -> Any:
        """One field of ``name``'s result; ``default`` when that check did not run
        or has no such field: ``checks.value("geoip", "country")``."""
        entry = self._results.get(name)
        return default if entry is None else entry.get(key, default)

    @property
    def allow_listed(self) -> bool:
        """Some check found the client on an allow list."""
        return any(r.allow_listed for r in self._results.values())

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: r.as_dict() for name, r in self._results.items()}
