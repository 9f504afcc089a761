"""The time budget of every plugin hook call (``server.plugin_timeout``).

A budget is a ``gevent.Timeout`` that raises :class:`TimeBudgetExceeded` in the
session's greenlet. Each greenlet keeps one, restarted for every call: a new
Timeout (a timer and an exception) per call cost a tenth of a worker's CPU
(bench/README.md). gevent is imported when a host builds its budgets, not when
the plugin API is imported.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class TimeBudgetExceeded(Exception):
    """A plugin hook ran past ``server.plugin_timeout``."""


class TimeBudgets:
    """The budgets of one plugin host: ``seconds`` for each call, one timer per
    greenlet that calls plugins (forgotten with the greenlet)."""

    def __init__(self, seconds: float) -> None:
        import gevent

        self.seconds = seconds
        self._current = gevent.getcurrent
        self._timeout = gevent.Timeout
        self._by_greenlet: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()``, raising TimeBudgetExceeded if it takes longer than ``seconds``."""
        glet = self._current()
        budget = self._by_greenlet.get(glet)
        if budget is None:
            budget = self._by_greenlet[glet] = self._new()
        elif budget.pending:  # a plugin call inside a plugin call: a budget of its own
            budget = self._new()
        budget.start()
        try:
            return fn()
        except TimeBudgetExceeded:
            self._by_greenlet.pop(glet, None)  # a fresh exception next time, not this one
            raise
        finally:
            budget.cancel()

    def _new(self) -> Any:
        return self._timeout(self.seconds,
                             TimeBudgetExceeded(f"took longer than {self.seconds:g}s"))
