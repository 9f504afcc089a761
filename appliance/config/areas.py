"""Areas owned by plugins: top-level tables such as ``[access]`` or ``[flow]``.

Policy lives in plugins, so the core cannot know every area an admin may configure. A
plugin claims one with two class attributes, ``area = "access"`` and ``Area`` (a
frozen attrs class with a default for every key). The loader then validates
``[access]`` with that class, and each ``[listeners.NAME.access]`` merged key by key
over it (the most specific wins), exactly as it does for the core ``[limits]``.

An area may also be an array of tables (``[[rules]]``): its ``Area`` is then
``list[Item]`` with ``Item`` a frozen attrs class; a listener's own array
(``[[listeners.NAME.rules]]``) comes after the global one, as arrays of tables of
several files append.

This module owns the rules of a claim (which names are free, what an ``Area`` class
must be) and the per-listener merge; the loader calls it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, get_args, get_origin

import attrs

from appliance.config.merge import KeyPath, Merged
from appliance.config.schema import AppConfig, Listener

__all__ = ["AREA_NAME", "area_default", "area_problem", "is_array_area", "listener_areas",
           "merge_over", "reserved_names"]

AREA_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def reserved_names() -> frozenset[str]:
    """Names a plugin may not claim: the core tables, and every key of a listener
    (an area is also a listener sub-table, so ``port`` would be ambiguous)."""
    core = {f.name for f in attrs.fields(AppConfig)}
    listener = {f.name for f in attrs.fields(Listener)}
    return frozenset(core | listener)


def area_problem(name: Any, area_class: Any) -> str | None:
    """Why a plugin's ``area``/``Area`` claim cannot be accepted, or None if it can."""
    if not isinstance(name, str) or not AREA_NAME.fullmatch(name):
        return (
            f"area must be a table name of lowercase letters, digits, '-' and '_' "
            f"starting with a letter (got {name!r})"
        )
    if name in reserved_names():
        reserved = ", ".join(sorted(reserved_names()))
        return f"area {name!r} is a core name and cannot be claimed (reserved: {reserved})"
    if is_array_area(area_class):
        return None
    if not (isinstance(area_class, type) and attrs.has(area_class)):
        return (f"area {name!r}: Area must be an attrs class such as @frozen(kw_only=True), "
                f"or list[C] of one for an array of tables")
    try:
        area_class()
    except Exception as exc:  # noqa: BLE001 - whatever it is, the claim is refused
        return (
            f"area {name!r}: Area() failed ({type(exc).__name__}: {exc}); every key needs a default"
        )
    return None


def is_array_area(area_class: Any) -> bool:
    """``list[Item]`` of an attrs class: the area is an array of tables."""
    args = get_args(area_class)
    return (get_origin(area_class) is list and len(args) == 1 and isinstance(args[0], type)
            and attrs.has(args[0]))


def area_default(area_class: Any) -> Any:
    """The TOML value of an area nobody configured: no table, or no array."""
    return [] if is_array_area(area_class) else {}


def merge_over(inherited: Any, own: Any) -> Any:
    """``own`` over ``inherited``, key by key; tables merge recursively, anything else
    (arrays included) is replaced, like the merge of files."""
    if not (isinstance(inherited, dict) and isinstance(own, dict)):
        return own
    result = dict(inherited)
    for key, value in own.items():
        result[key] = merge_over(inherited[key], value) if key in inherited else value
    return result


def listener_areas(
    table: dict,
    data: dict,
    path: KeyPath,
    global_areas: Mapping[str, Any],
    plugin_areas: Mapping[str, type],
    merged: Merged,
    structure: Callable,
) -> dict[str, Any]:
    """The effective area instances of one listener.

    A listener without its own table for an area shares the global instance. One with
    a table gets that table merged over the global one and validated; only errors in
    keys the listener set itself are reported here, since a broken inherited key is
    already reported for the global table.
    """
    result = {}
    for name, area_class in plugin_areas.items():
        if name not in table:
            result[name] = global_areas.get(name)
            continue
        if is_array_area(area_class):  # the listener's items after the global ones
            own = structure(table[name], area_class, (*path, name))
            inherited = global_areas.get(name)
            result[name] = None if own is None else [*(inherited or []), *own]
            continue
        effective = merge_over(data.get(name, {}), table[name])

        def set_here(full: KeyPath) -> bool:
            return full in merged.origins

        result[name] = structure(effective, area_class, (*path, name), set_here)
    return result
