"""The local counters table: windows, gauges and bans in plain dicts.

No I/O and no gevent: every method runs to completion without yielding, so the
table needs no lock under gevent. Memory is bounded: windows are kept in
least-recently-used order, expired ones are dropped as time passes, and beyond
``max_keys`` windows (or bans) the least recently used window (the ban closest to
its end) is dropped first. Gauges are not capped: each one is a live session.

Gauges are counted per *owner* (a worker process when the supervisor serves the
table to its workers), so that the sessions of a worker that dies can be
subtracted all at once (:meth:`LocalTable.drop_owner`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ..counters import SLICES

__all__ = ["DEFAULT_MAX_KEYS", "LocalTable"]

DEFAULT_MAX_KEYS = 100_000
#: Expired windows dropped per call at most (the rest on later calls).
_SWEEP_BATCH = 64


class _Window:
    """Counts of one key and interval, by slice number (oldest first)."""

    __slots__ = ("expires", "slices", "width")

    def __init__(self, width: float) -> None:
        self.width = width
        self.slices: dict[int, int] = {}
        self.expires = 0.0

    def add(self, now: float, amount: int) -> int:
        current = math.floor(now / self.width)
        oldest = current - SLICES + 1
        for number in [n for n in self.slices if n < oldest]:
            del self.slices[number]
        if amount:
            self.slices[current] = self.slices.get(current, 0) + amount
            self.expires = (current + SLICES) * self.width
        return sum(self.slices.values())


class LocalTable:
    """The in-process implementation of :class:`appliance.counters.Counters`.

    ``fail`` is accepted and ignored: a table in this process is never unavailable.
    """

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._windows: dict[tuple[str, float], _Window] = {}
        self._gauges: dict[str, dict[int, int]] = {}
        self._bans: dict[str, tuple[float, str]] = {}

    # --- windows ---------------------------------------------------------------------

    def hit(self, key: str, interval: float, amount: int = 1, fail: str = "open",
            ) -> int:
        now = self.clock()
        self._sweep(now)
        wkey = (key, float(interval))
        window = self._windows.pop(wkey, None)  # re-inserted last: LRU order
        if window is None:
            window = _Window(max(float(interval), 1e-3) / SLICES)
            while len(self._windows) >= self.max_keys:
                del self._windows[next(iter(self._windows))]
        self._windows[wkey] = window
        return window.add(now, amount)

    def hit_many(self, hits: list, fail: str = "open") -> list[int]:
        return [self.hit(key, interval, amount) for key, interval, amount in hits]

    def count(self, key: str, interval: float, fail: str = "open") -> int:
        window = self._windows.get((key, float(interval)))
        return window.add(self.clock(), 0) if window else 0

    def _sweep(self, now: float) -> None:
        for _ in range(_SWEEP_BATCH):
            if not self._windows:
                return
            first = next(iter(self._windows))
            if self._windows[first].expires > now:
                return
            del self._windows[first]

    # --- gauges ----------------------------------------------------------------------

    def enter(self, key: str, fail: str = "open", owner: int = 0) -> int:
        owners = self._gauges.setdefault(key, {})
        owners[owner] = owners.get(owner, 0) + 1
        return sum(owners.values())

    def leave(self, key: str, owner: int = 0) -> None:
        owners = self._gauges.get(key)
        if not owners or owner not in owners:
            return
        owners[owner] -= 1
        if owners[owner] <= 0:
            del owners[owner]
            if not owners:
                del self._gauges[key]

    def gauge(self, key: str) -> int:
        return sum(self._gauges.get(key, {}).values())

    def drop_owner(self, owner: int) -> None:
        """Forget every gauge count of ``owner`` (a worker that exited)."""
        for key in list(self._gauges):
            owners = self._gauges[key]
            owners.pop(owner, None)
            if not owners:
                del self._gauges[key]

    # --- bans ------------------------------------------------------------------------

    def ban(self, key: str, seconds: float, reason: str) -> None:
        now = self.clock()
        self._bans.pop(key, None)
        if len(self._bans) >= self.max_keys:
            self._drop_expired_bans(now)
        while len(self._bans) >= self.max_keys:
            del self._bans[min(self._bans, key=lambda k: self._bans[k][0])]
        self._bans[key] = (now + float(seconds), reason)

    def banned(self, key: str) -> float:
        entry = self._bans.get(key)
        if entry is None:
            return 0.0
        left = entry[0] - self.clock()
        if left <= 0:
            del self._bans[key]
            return 0.0
        return left

    def bans(self) -> dict[str, tuple[float, str]]:
        now = self.clock()
        self._drop_expired_bans(now)
        return {k: (until - now, reason) for k, (until, reason) in self._bans.items()}

    def unban(self, key: str) -> bool:
        entry = self._bans.pop(key, None)
        return entry is not None and entry[0] > self.clock()

    def _drop_expired_bans(self, now: float) -> None:
        for key in [k for k, (until, _) in self._bans.items() if until <= now]:
            del self._bans[key]

    # --- sizing ----------------------------------------------------------------------

    def resize(self, max_keys: int) -> None:
        """Apply a new ``[server.state] max_keys`` (a reload)."""
        self.max_keys = max_keys
        while len(self._windows) > max_keys:
            del self._windows[next(iter(self._windows))]

    def __len__(self) -> int:
        return len(self._windows) + len(self._gauges) + len(self._bans)
