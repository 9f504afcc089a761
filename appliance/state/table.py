"""The local counters table: windows, gauges and bans in shared memory.

The table lives in an anonymous shared memory file (``memfd``) mapped before the
server forks its workers, so every worker process counts in the same table with
no round trip to anyone: a call reads and writes a few integers under an
``fcntl`` lock, which the kernel releases if a worker dies holding it. No call
yields to gevent, so within a process no other lock is needed.

Three fixed-size hash tables of ``max_keys`` slots each, found by open addressing
(a key is looked for in :data:`PROBES` consecutive slots):

- windows: ``(key hash, newest slice, expiry)`` and :data:`~appliance.state.counters.SLICES`
  counts used as a ring. An expired window's slot is free; when none of a key's
  slots is free, the window nearest its end is dropped.
- gauges: the key hash and one count per worker (its *owner* column), so the
  sessions of a worker that died can be subtracted at once (:meth:`drop_owner`).
  A gauge is free when all its counts are 0.
- bans: key hash, end time, and the key and reason as text for ``bans list``.

Keys are hashed with Python's ``hash``: its seed is inherited by forked workers,
and only the server's processes touch the table (the admin's command asks the
server over a socket, see ``control.py``).
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import time
from collections.abc import Callable

from appliance.state.counters import SLICES

__all__ = ["DEFAULT_MAX_KEYS", "PROBES", "LocalTable"]

DEFAULT_MAX_KEYS = 100_000
#: How many consecutive slots a key may live in.
PROBES = 16
#: Bytes of text kept per ban (the key, a NUL, the reason; cut to fit).
_BAN_TEXT = 128
_W = 3  # window slot: hash, newest slice number, expiry (ms)
_B = 2  # ban slot: hash, end (ms)


class LocalTable:
    """The in-process implementation of :class:`appliance.state.counters.Counters`
    (``fail`` is accepted and ignored: this table is never unavailable), shared
    by all workers forked after it was made. ``owners`` is the number of gauge
    columns (workers); :attr:`owner` is the column this process counts in."""

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, owners: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.owners = owners
        self.owner = 0
        self.clock = clock
        n = max_keys
        sizes = [("windows", 8 * _W * n), ("counts", 4 * SLICES * n),
                 ("gauges", 8 * n), ("gauge_counts", 4 * owners * n),
                 ("bans", 8 * _B * n), ("ban_text", _BAN_TEXT * n)]
        total = sum(-(-size // 8) * 8 for _, size in sizes)
        self._fd = os.memfd_create("smtp-appliance-counters", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, total)
        self._map = mmap.mmap(self._fd, total)
        view, offset, regions = memoryview(self._map), 0, {}
        for name, size in sizes:
            regions[name] = view[offset:offset + size]
            offset += -(-size // 8) * 8
        self._windows = regions["windows"].cast("q")
        self._counts = regions["counts"].cast("i")
        self._gauges = regions["gauges"].cast("q")
        self._gauge_counts = regions["gauge_counts"].cast("i")
        self._bans = regions["bans"].cast("q")
        self._ban_text = regions["ban_text"]

    def _lock(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_EX)

    def _unlock(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _slots(self, h: int):
        start = h % self.max_keys
        return (start + i if start + i < self.max_keys else start + i - self.max_keys
                for i in range(PROBES))

    # --- windows ---------------------------------------------------------------------

    def hit(self, key: str, interval: float, amount: int = 1, fail: str = "open") -> int:
        self._lock()
        try:
            return self._add(key, interval, amount, create=True)
        finally:
            self._unlock()

    def hit_many(self, hits: list, fail: str = "open") -> list[int]:
        self._lock()
        try:
            return [self._add(key, interval, amount, create=True)
                    for key, interval, amount in hits]
        finally:
            self._unlock()

    def count(self, key: str, interval: float, fail: str = "open") -> int:
        self._lock()
        try:
            return self._add(key, interval, 0, create=False)
        finally:
            self._unlock()

    def _add(self, key: str, interval: float, amount: int, create: bool) -> int:
        width = max(float(interval), 1e-3) / SLICES
        now = self.clock()
        current = math.floor(now / width)
        w, c = self._windows, self._counts
        slot = self._window_slot(_hash(key, interval), now, create)
        if slot < 0:
            return 0
        base = slot * SLICES
        newest = w[slot * _W + 1]
        if current - newest >= SLICES:
            c[base:base + SLICES] = _ZEROS[:SLICES]
        else:
            for number in range(newest + 1, current + 1):
                c[base + number % SLICES] = 0
        if amount:
            c[base + current % SLICES] += amount
            w[slot * _W + 1] = current
            w[slot * _W + 2] = int((current + SLICES) * width * 1000) + 1
        return sum(c[base:base + SLICES])

    def _window_slot(self, h: int, now: float, create: bool) -> int:
        """The slot of ``h``; a new one if ``create`` (else -1 when absent)."""
        w, now_ms = self._windows, now * 1000
        victim, victim_end = -1, math.inf
        for slot in self._slots(h):
            if w[slot * _W] == h:
                if w[slot * _W + 2] > now_ms:
                    return slot
                end = 0  # our own, expired: start afresh
            else:
                end = w[slot * _W + 2]
            if end < victim_end:
                victim, victim_end = slot, end
        if not create:
            return -1
        w[victim * _W], w[victim * _W + 1], w[victim * _W + 2] = h, 0, 0
        self._counts[victim * SLICES:(victim + 1) * SLICES] = _ZEROS[:SLICES]
        return victim

    # --- gauges ----------------------------------------------------------------------

    def enter(self, key: str, fail: str = "open") -> int:
        self._lock()
        try:
            slot = self._gauge_slot(_hash(key), create=True)
            if slot < 0:  # PROBES gauges in use around this key: count it nowhere
                return 1
            self._gauge_counts[slot * self.owners + self.owner] += 1
            return self._gauge_sum(slot)
        finally:
            self._unlock()

    def leave(self, key: str) -> None:
        self._lock()
        try:
            slot = self._gauge_slot(_hash(key), create=False)
            index = slot * self.owners + self.owner
            if slot >= 0 and self._gauge_counts[index] > 0:
                self._gauge_counts[index] -= 1
        finally:
            self._unlock()

    def gauge(self, key: str) -> int:
        slot = self._gauge_slot(_hash(key), create=False)
        return self._gauge_sum(slot) if slot >= 0 else 0

    def _gauge_sum(self, slot: int) -> int:
        return sum(self._gauge_counts[slot * self.owners:(slot + 1) * self.owners])

    def _gauge_slot(self, h: int, create: bool) -> int:
        free = -1
        for slot in self._slots(h):
            in_use = self._gauge_sum(slot) > 0
            if self._gauges[slot] == h and in_use:
                return slot
            if not in_use and free < 0:
                free = slot
        if create and free >= 0:
            self._gauges[free] = h
        return free if create else -1

    def drop_owner(self, owner: int) -> None:
        """Forget every gauge count of ``owner`` (a worker that exited)."""
        self._lock()
        try:
            column = self._gauge_counts[owner::self.owners]
            column[:] = memoryview(bytes(4 * len(column))).cast("i")
        finally:
            self._unlock()

    # --- bans ------------------------------------------------------------------------

    def ban(self, key: str, seconds: float, reason: str) -> None:
        h, now_ms = _hash(key), self.clock() * 1000
        self._lock()
        try:
            slot = self._ban_slot(h, now_ms)
            if slot < 0:
                slot = min(self._slots(h), key=lambda s: self._bans[s * _B + 1])
            self._bans[slot * _B] = h
            self._bans[slot * _B + 1] = int(now_ms + seconds * 1000)
            text = (key.encode() + b"\0" + reason.encode())[:_BAN_TEXT]
            self._ban_text[slot * _BAN_TEXT:(slot + 1) * _BAN_TEXT] = text.ljust(_BAN_TEXT,
                                                                                b"\0")
        finally:
            self._unlock()

    def _ban_slot(self, h: int, now_ms: float) -> int:
        """The slot of ``h`` if banned, else the first free slot, else -1."""
        free = -1
        for slot in self._slots(h):
            live = self._bans[slot * _B + 1] > now_ms
            if live and self._bans[slot * _B] == h:
                return slot
            if not live and free < 0:
                free = slot
        return free

    def banned(self, key: str) -> float:
        h, now_ms = _hash(key), self.clock() * 1000
        for slot in self._slots(h):
            if self._bans[slot * _B] == h and self._bans[slot * _B + 1] > now_ms:
                return (self._bans[slot * _B + 1] - now_ms) / 1000
        return 0.0

    def bans(self) -> dict[str, tuple[float, str]]:
        now_ms, found = self.clock() * 1000, {}
        for slot in range(self.max_keys):
            until = self._bans[slot * _B + 1]
            if until > now_ms:
                text = bytes(self._ban_text[slot * _BAN_TEXT:(slot + 1) * _BAN_TEXT])
                key, _, reason = text.rstrip(b"\0").partition(b"\0")
                found[key.decode(errors="replace")] = ((until - now_ms) / 1000,
                                                       reason.decode(errors="replace"))
        return found

    def unban(self, key: str) -> bool:
        h, now_ms = _hash(key), self.clock() * 1000
        self._lock()
        try:
            for slot in self._slots(h):
                if self._bans[slot * _B] == h and self._bans[slot * _B + 1] > now_ms:
                    self._bans[slot * _B + 1] = 0
                    return True
            return False
        finally:
            self._unlock()


_ZEROS = memoryview(bytes(4 * SLICES)).cast("i")


def _hash(key: str, interval: float | None = None) -> int:
    h = hash((key, float(interval))) if interval is not None else hash(key)
    return h or 1  # 0 marks a slot never used

