"""The shared counters behind flow control, rate limits and auto-ban.

Plugins get a :class:`Counters` as the ``counters`` argument of ``on_configure``.
Which backend stands behind it is ``[server.state]``'s business, not the plugin's:

- ``local`` (default): one table for the whole appliance, in memory shared by all
  its worker processes (``appliance/state/table.py``);
- ``redis``: one Redis shared by several appliances behind a load balancer.

Windows are sliding windows counted in :data:`SLICES` slices of ``interval / SLICES``
each: an event counts in full for at least ``interval - interval / SLICES`` and never
longer than ``interval``. Events that happen together are always counted together,
so "the 4th connection within a minute" is exact.

``fail`` says what a call does when Redis cannot be reached: ``"open"`` counts in
the appliance's local table instead (limits then hold per appliance, not across
appliances), ``"closed"`` raises :class:`StoreUnavailable` (answer 451 4.3.0). With
the local backend the store is never unavailable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

__all__ = ["SLICES", "Counters", "Fail", "Hit", "StoreUnavailable"]

#: How many slices a sliding window is counted in.
SLICES = 20

Fail = Literal["open", "closed"]

#: One request of :meth:`Counters.hit_many`: ``(key, interval, amount)``.
Hit = tuple[str, float, int]


class StoreUnavailable(Exception):
    """The shared store is down and this limit is configured to fail closed."""


@runtime_checkable
class Counters(Protocol):
    """Event windows, concurrency gauges and bans, keyed by strings the caller
    chooses (``"conn:192.0.2.7"``, ``"rcpt-user:alice"``). Keys of different
    plugins must not collide: start them with the plugin's name."""

    def hit(self, key: str, interval: float, amount: int = 1, fail: Fail = "open") -> int:
        """Add ``amount`` events for ``key`` and return how many happened in the
        last ``interval`` seconds, these included."""
        ...

    def hit_many(self, hits: Sequence[Hit], fail: Fail = "open") -> list[int]:
        """Several :meth:`hit` calls in one round trip to the store (the limits of
        one SMTP command): returns their counts in order. ``fail`` applies to all:
        with Redis down they all count locally, or the call raises and none counts."""
        ...

    def count(self, key: str, interval: float, fail: Fail = "open") -> int:
        """How many events ``key`` had in the last ``interval`` seconds (adds none)."""
        ...

    def enter(self, key: str, fail: Fail = "open") -> int:
        """A concurrency gauge (sessions of one IP): +1, returns the new value.
        If it raises, nothing was added: do not call :meth:`leave`."""
        ...

    def leave(self, key: str) -> None:
        """-1 on the gauge; never below 0. Never raises."""
        ...

    def ban(self, key: str, seconds: float, reason: str) -> None:
        """Ban ``key`` for ``seconds`` (a new ban replaces an older one)."""
        ...

    def banned(self, key: str) -> float:
        """Seconds left of a ban of ``key``; 0.0 if none."""
        ...

    def bans(self) -> dict[str, tuple[float, str]]:
        """Every ban in force: key -> (seconds left, reason)."""
        ...

    def unban(self, key: str) -> bool:
        """Lift a ban; False if there was none."""
        ...
