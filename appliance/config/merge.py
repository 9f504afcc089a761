"""Merging parsed TOML documents into one tree, remembering which file set each key.

The merge rules (CONFIG-CONVENTIONS "Files"): later files override keys of earlier
ones; tables merge recursively; arrays of tables append; any other value, plain arrays
included, is replaced. The origin map is what lets an error about a merged value name
the file the admin has to edit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs

from appliance.config.convert import show

__all__ = ["KeyPath", "Merged", "dotted"]

#: A key's place in the tree: table keys and array indices, outermost first.
KeyPath = tuple[str | int, ...]


def dotted(path: KeyPath) -> str:
    """A key path as an admin would write it: ``listeners.mta.limits.max_recipients``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            bare = re.fullmatch(r"[A-Za-z0-9_-]+", part)
            text += ("." if text else "") + (part if bare else show(part))
    return text


@attrs.define
class Merged:
    """The merged TOML tree and, for every key path in it, the file that set it."""

    data: dict[str, Any] = attrs.field(factory=dict)
    origins: dict[KeyPath, Path] = attrs.field(factory=dict)

    def origin(self, path: KeyPath) -> Path | None:
        """The file that set ``path``, or else the one that set its nearest parent."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.origins:
                return self.origins[path[:end]]
        return None

    def merge(self, document: dict[str, Any], file: Path) -> None:
        self._merge(self.data, document, file, ())

    def _merge(self, target: dict, source: dict, file: Path, path: KeyPath) -> None:
        for key, value in source.items():
            here = (*path, key)
            old = target.get(key)
            if isinstance(value, dict) and isinstance(old, dict):
                self._merge(old, value, file, here)
            elif _is_table_array(value) and _is_table_array(old):
                for index, item in enumerate(value, start=len(old)):
                    old.append(self._record(item, file, (*here, index)))
            else:
                for known in [p for p in self.origins if p[: len(here)] == here]:
                    del self.origins[known]
                target[key] = self._record(value, file, here)

    def _record(self, value: Any, file: Path, path: KeyPath) -> Any:
        """Copy ``value`` into the tree, noting ``file`` as the origin of each key."""
        self.origins[path] = file
        if isinstance(value, dict):
            return {k: self._record(v, file, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._record(v, file, (*path, i)) for i, v in enumerate(value)]
        return value


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
