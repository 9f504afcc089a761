"""What ``on_configure``'s ``hooks`` argument lets a plugin do with the other
plugins: ask a first-result hook (the relay plugin asks ``lookup_recipient``).

Its own module so that the hook specifications can name its type without
importing the plugin host, which imports them."""

from __future__ import annotations

from typing import Any, Protocol


class _AsksFirst(Protocol):
    def first(self, hook: str, **kwargs: Any) -> tuple[Any, str]: ...


class OtherPlugins:
    """A first-result hook of the other plugins, under the same time budget as
    any hook call; nothing more of the plugin host is exposed."""

    __slots__ = ("_host",)

    def __init__(self, host: _AsksFirst) -> None:
        self._host = host

    def first(self, hook: str, **kwargs: Any) -> tuple[Any, str]:
        """(first non-None answer or None, name of the plugin that gave it);
        exceptions, a timeout included, propagate."""
        return self._host.first(hook, **kwargs)
