"""What a plugin author imports: the hook marker, helpers for blocking calls and
each listener's settings of an area the plugin owns.

A plugin is a class (or module) with methods marked ``@hookimpl`` and named
after hooks in :mod:`appliance.hooks.specs`; it is announced to the appliance by
an entry point in the ``smtp_appliance`` group of its distribution::

    [project.entry-points.smtp_appliance]
    my-check = "my_package.plugin:MyCheck"

See docs/plugins.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import pluggy
from attrs import define, field

from appliance.hooks.specs import NAME

hookimpl = pluggy.HookimplMarker(NAME)

T = TypeVar("T")


@define
class PerListener(Generic[T]):
    """A plugin's compiled settings by listener name; a hook picks its session's with
    ``of(session)``. ``fallback`` (the global area's) serves a listener the
    configuration does not know."""

    fallback: T
    listeners: dict[str, T] = field(factory=dict)

    def of(self, session: Any) -> T:
        return self.listeners.get(session.listener, self.fallback)


def per_listener(config: Any, area: str, area_class: type,
                 compile: Callable[[Any], T]) -> PerListener[T]:
    """``compile`` applied, in ``on_configure``, to the global ``[area]`` and to each
    listener's effective one. The loader has already merged each listener's table over
    the global one, so a listener without a table of its own carries the global
    instance: each distinct instance is compiled once per configuration and shared."""
    compiled: dict[int, T] = {}
    global_area = config.areas.get(area) or area_class()
    areas = [global_area]  # kept referenced: ids stay unique while compiling

    def one(instance: Any) -> T:
        if id(instance) not in compiled:
            areas.append(instance)
            compiled[id(instance)] = compile(instance)
        return compiled[id(instance)]

    return PerListener(one(global_area), {
        name: one(listener.areas.get(area) or global_area)
        for name, listener in config.listeners.items()})


def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call (fsync, a C library without gevent support) in the
    server's thread pool so that other sessions keep going."""
    from gevent import get_hub

    return get_hub().threadpool.apply(fn, args)


class GroupCall:
    """Run ``fn(items)`` in the thread pool for items that many sessions submit,
    at most ``threads`` calls at a time: what arrives while they run goes into
    the next call. A per-call cost (the spool's directory fsync) is then shared
    by the group, and few threads compete for the interpreter (measured in
    bench/README.md). ``fn`` returns one result per item; an exception instance
    is raised to that item's submitter."""

    def __init__(self, fn: Callable[[list[Any]], list[Any]], max_items: int = 64,
                 threads: int = 2) -> None:
        self.fn = fn
        self.max_items = max_items
        self.threads = threads
        self._pending: list[tuple[Any, Any]] = []
        self._running = 0

    def __call__(self, item: Any) -> Any:
        import gevent
        from gevent.event import AsyncResult

        done = AsyncResult()
        self._pending.append((item, done))
        if self._running < self.threads:
            self._running += 1
            gevent.spawn(self._drain)
        result = done.get()
        if isinstance(result, BaseException):
            raise result
        return result

    def _drain(self) -> None:
        try:
            while self._pending:
                group = self._pending[: self.max_items]
                del self._pending[: self.max_items]
                try:
                    results = run_blocking(self.fn, [item for item, _ in group])
                except BaseException as exc:  # noqa: BLE001 - handed to each submitter
                    results = [exc] * len(group)
                for (_, done), result in zip(group, results, strict=True):
                    done.set(result)
        finally:
            self._running -= 1
