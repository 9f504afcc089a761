"""Structuring TOML values into the schema classes, and turning failures into messages.

cattrs does the walking (with ``forbid_extra_keys`` and ``detailed_validation`` so
every bad key is collected, not just the first). The hooks here are stricter than
cattrs' defaults on purpose: TOML already gives typed values, so ``"25"`` for a port or
``1.5`` for a count is a mistake to report, not something to coerce.

:func:`flatten` turns cattrs' exception tree into ``(key path, message)`` pairs; the
loader adds the file name.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn

from appliance.config.schema import Check
from appliance.config.units import (
    DURATION_EXPECTED,
    SIZE_EXPECTED,
    Duration,
    FilePath,
    LogOutputs,
    Size,
)

Path = tuple[str | int, ...]


class Invalid(ValueError):
    """A value of the wrong kind: renders as ``expected X (got Y)``."""

    def __init__(self, expected: str, got: Any) -> None:
        super().__init__(f"expected {expected} (got {show(got)})")


def show(value: Any) -> str:
    """A value as the admin wrote it in TOML, for "(got ...)"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return repr(value)


def describe(typ: Any) -> str:
    """What a value of ``typ`` looks like, in admin words ("an integer", "a table")."""
    origin = get_origin(typ)
    if origin is Annotated:
        checks = [m for m in typ.__metadata__ if isinstance(m, Check)]
        return checks[-1].expected if checks else describe(get_args(typ)[0])
    if origin is Literal:
        return "one of " + ", ".join(show(v) for v in get_args(typ))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(typ) if a is not type(None))
    if origin in (list, tuple, set, frozenset, Sequence):
        return "an array"
    if origin in (dict, Mapping) or attrs.has(typ):
        return "a table"
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Size: SIZE_EXPECTED,
        Duration: DURATION_EXPECTED,
        FilePath: "a path",
        LogOutputs: LogOutputs.EXPECTED,
    }.get(typ, getattr(typ, "__name__", repr(typ)))


def make_converter() -> cattrs.Converter:
    """A fresh converter per load, so no hook cache outlives one configuration."""
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)

    def exact(kind: type | tuple[type, ...], what: str, make: Any = None) -> Any:
        # bool is an int subclass in Python, but `port = true` is not a port.
        bool_ok = kind is bool

        def hook(value: Any, _: Any) -> Any:
            if not isinstance(value, kind) or (isinstance(value, bool) and not bool_ok):
                raise Invalid(what, value)
            return make(value) if make else value

        return hook

    conv.register_structure_hook(bool, exact(bool, "true or false"))
    conv.register_structure_hook(int, exact(int, "an integer"))
    conv.register_structure_hook(float, exact((int, float), "a number", float))
    conv.register_structure_hook(str, exact(str, "a string"))
    conv.register_structure_hook(FilePath, exact(str, "a path", FilePath))
    conv.register_structure_hook(Size, _unit_hook(Size, (int, str)))
    conv.register_structure_hook(Duration, _unit_hook(Duration, (str,)))
    conv.register_structure_hook(LogOutputs, _unit_hook(LogOutputs, (str, list)))
    conv.register_structure_hook_factory(lambda t: get_origin(t) is Literal, _literal_hook)
    conv.register_structure_hook_factory(
        lambda t: get_origin(t) in (list, tuple, set, frozenset, Sequence),
        lambda t: _array_hook(t, conv),
    )
    conv.register_structure_hook_factory(
        lambda t: get_origin(t) in (dict, Mapping), lambda t: _mapping_hook(t, conv)
    )
    conv.register_structure_hook_factory(
        lambda t: get_origin(t) is Annotated, lambda t: _annotated_hook(t, conv)
    )
    conv.register_structure_hook_factory(attrs.has, lambda cl: _table_hook(cl, conv))
    return conv


def _unit_hook(unit: type, kinds: tuple[type, ...]) -> Any:
    def hook(value: Any, _: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise Invalid(describe(unit), value)
        try:
            return unit(value)
        except ValueError as exc:
            raise Invalid(str(exc).removeprefix("expected "), value) from None

    return hook


def _literal_hook(typ: Any) -> Any:
    allowed = get_args(typ)

    def hook(value: Any, _: Any) -> Any:
        if not any(type(value) is type(a) and value == a for a in allowed):
            raise Invalid(describe(typ), value)
        return value

    return hook


def _annotated_hook(typ: Any, conv: cattrs.Converter) -> Any:
    base, *meta = get_args(typ)
    checks = [m for m in meta if isinstance(m, Check)]

    # For plain types the check says more than the type ("a port from 1 to 65535" beats
    # "an integer"); unit types keep their own message, which names the units.
    plain = base in (bool, int, float, str, FilePath)

    def hook(value: Any, _: Any) -> Any:
        try:
            result = conv.structure(value, base)
        except Invalid:
            if plain and checks:
                raise Invalid(checks[-1].expected, value) from None
            raise
        for check in checks:
            if not check.test(result):
                raise Invalid(check.expected, value)
        return result

    return hook


def _table_hook(cl: type, conv: cattrs.Converter) -> Any:
    structure = make_dict_structure_fn(cl, conv)

    def hook(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise Invalid("a table", value)
        return structure(value, cl)

    return hook


def _array_hook(typ: Any, conv: cattrs.Converter) -> Any:
    origin = get_origin(typ)
    args = get_args(typ)
    item_type = args[0] if args else Any
    build = {tuple: tuple, set: set, frozenset: frozenset}.get(origin, list)

    def hook(value: Any, _: Any) -> Any:
        if not isinstance(value, list):
            raise Invalid("an array", value)
        items, errors = [], []
        for index, item in enumerate(value):
            try:
                items.append(conv.structure(item, item_type))
            except Exception as exc:  # noqa: BLE001 - collected, reported with its index
                exc.__notes__ = [*getattr(exc, "__notes__", []), _note(index, item_type)]
                errors.append(exc)
        if errors:
            raise IterableValidationError("invalid array", errors, typ)
        return build(items)

    return hook


def _mapping_hook(typ: Any, conv: cattrs.Converter) -> Any:
    args = get_args(typ)
    value_type = args[1] if len(args) == 2 else Any

    def hook(value: Any, _: Any) -> Any:
        if not isinstance(value, dict):
            raise Invalid("a table", value)
        result, errors = {}, []
        for key, item in value.items():
            try:
                result[key] = conv.structure(item, value_type)
            except Exception as exc:  # noqa: BLE001 - collected, reported with its key
                exc.__notes__ = [*getattr(exc, "__notes__", []), _note(key, value_type)]
                errors.append(exc)
        if errors:
            raise IterableValidationError("invalid table", errors, typ)
        return result

    return hook


def _note(index: int | str, typ: Any) -> IterableValidationNote:
    return IterableValidationNote(f"Structuring item {index!r}", index, typ)


def flatten(exc: BaseException, path: Path = (), typ: Any = None) -> list[tuple[Path, str]]:
    """Every leaf failure in a cattrs exception tree, as (key path, message)."""
    if isinstance(exc, ClassValidationError):
        found: list[tuple[Path, str]] = []
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            found += flatten(sub, (*path, note.name), note.type)
        for sub in without:
            found += _flatten_class_level(sub, exc.cl, path)
        return found
    if isinstance(exc, IterableValidationError):
        found = []
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            found += flatten(sub, (*path, note.index), note.type)
        for sub in without:
            found += flatten(sub, path)
        return found
    if isinstance(exc, Invalid):
        return [(path, str(exc))]
    if isinstance(exc, KeyError) and typ is not None and path and exc.args == (path[-1],):
        return [(path, f"missing required key (expected {describe(typ)})")]
    return [(path, f"invalid value ({exc})")]


def _flatten_class_level(exc: BaseException, cl: type, path: Path) -> list[tuple[Path, str]]:
    if isinstance(exc, ForbiddenExtraKeysError):
        valid = ", ".join(sorted(a.name for a in attrs.fields(exc.cl) if a.init))
        return [
            ((*path, key), f"unknown key {key!r} (expected one of: {valid})")
            for key in sorted(exc.extra_fields)
        ]
    # A plugin's own attrs validator raised in __init__: attrs names the field in args[1].
    field = exc.args[1] if len(exc.args) > 1 else None
    if isinstance(field, attrs.Attribute):
        return [((*path, field.name), f"invalid value ({exc.args[0]})")]
    return [(path, f"invalid value ({exc})")]


def type_hints(cl: type) -> dict[str, Any]:
    """Resolved field types of an attrs class, ``Annotated`` kept."""
    return typing.get_type_hints(cl, include_extras=True)
