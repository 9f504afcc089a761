"""Reading a config directory: parse, merge, remember who set what, validate.

The steps, and why they are in this order:

1. Parse every ``*.toml`` file (name order). Syntax errors of *all* files are reported
   together, with ``FILE:LINE:COL``; nothing is validated until every file parses.
2. Merge them into one tree (later files override keys; tables merge recursively;
   arrays of tables append; other arrays are replaced) while recording, for every key,
   the file that set it. Validating the merged tree, not each file, is what lets a
   later file complete a table an earlier one started; the origin map is what still
   lets every error name the file to edit.
3. Make relative paths absolute against the directory of the file that set them.
4. Structure each table into its schema class, collecting every error; then the
   checks that span keys (TLS mode needs a certificate, two listeners on one port).

Besides the core tables, installed plugins may own areas (``[access]``, ``[flow]``):
``plugin_areas`` maps each area name to its ``Area`` class (see :mod:`.areas`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import attrs
import cattrs
import tomli
from cattrs.errors import BaseValidationError

from appliance.config.areas import area_default, area_problem, listener_areas
from appliance.config.convert import Invalid, flatten, make_converter, show, type_hints
from appliance.config.delivery import route_problems
from appliance.config.merge import KeyPath, Merged, dotted
from appliance.config.schema import (
    AppConfig,
    Auth,
    Delivery,
    Dns,
    Limits,
    Listener,
    Logging,
    Metrics,
    PluginConfig,
    Queue,
    Server,
    Smtp,
    Tls,
)
from appliance.config.units import FilePath

__all__ = ["ConfigError", "load_config"]

#: The tables a top-level key may be, besides ``listeners`` and ``plugins``.
SECTIONS: dict[str, type] = {
    "server": Server,
    "tls": Tls,
    "limits": Limits,
    "smtp": Smtp,
    "auth": Auth,
    "queue": Queue,
    "delivery": Delivery,
    "logging": Logging,
    "metrics": Metrics,
    "dns": Dns,
}
TOP_LEVEL_KEYS = (
    "server", "listeners", "tls", "limits", "smtp", "auth", "queue", "delivery", "logging",
    "metrics", "dns", "plugins")
#: Global tables a listener may override key by key.
LISTENER_OVERRIDES = ("limits", "smtp", "tls", "auth")
LISTENER_NAME = re.compile(r"[a-z0-9_-]+")
_NO_PLUGINS: Mapping[str, type[PluginConfig]] = types.MappingProxyType({})
_NO_AREAS: Mapping[str, Any] = types.MappingProxyType({})


class ConfigError(Exception):
    """The configuration cannot be used; ``errors`` has one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


@attrs.define
class Problems:
    """Errors collected so far, each rendered as ``FILE: key.path: message``."""

    merged: Merged
    fallback: Path
    lines: list[str] = attrs.field(factory=list)

    def add(self, path: KeyPath, message: str, blame: KeyPath | None = None) -> None:
        file = self.merged.origin(blame or path) or self.fallback
        self.lines.append(f"{file}: {dotted(path)}: {message}" if path else f"{file}: {message}")


def load_config(
    config_dir: str | Path,
    plugin_schemas: Mapping[str, type[PluginConfig]] = _NO_PLUGINS,
    plugin_areas: Mapping[str, type] = _NO_AREAS,
    area_hints: Mapping[str, str] = _NO_AREAS,
) -> AppConfig:
    """Read, merge and validate every ``*.toml`` in ``config_dir``.

    ``plugin_areas`` maps area names owned by plugins to their ``Area`` classes;
    ``area_hints`` adds, for a name no plugin owns, why (a broken plugin that may own
    it) to the "unknown key" error. ``pluginhost.loader_inputs(found)`` gives all three.

    :raises ConfigError: with every problem found, not only the first.
    """
    config_dir = Path(config_dir)
    files = config_files(config_dir)
    merged = read_and_merge(files)
    return build(merged, config_dir, tuple(files), plugin_schemas, plugin_areas, area_hints)


def config_files(config_dir: Path) -> list[Path]:
    """The ``*.toml`` files directly in ``config_dir``, in name order (dot-files skipped)."""
    if not config_dir.is_dir():
        what = "is a file, not a directory" if config_dir.exists() else "does not exist"
        raise ConfigError([f"{config_dir}: config directory {what}"])
    files = sorted(
        (p for p in config_dir.iterdir() if p.suffix == ".toml" and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    files = [p for p in files if p.is_file()]
    if not files:
        raise ConfigError([f"{config_dir}: no *.toml files in the config directory"])
    return files


def read_and_merge(files: list[Path]) -> Merged:
    merged, errors = Merged(), []
    for file in files:
        try:
            with open(file, "rb") as handle:
                document = tomli.load(handle)
        except tomli.TOMLDecodeError as exc:
            errors.append(f"{file}:{exc.lineno}:{exc.colno}: {exc.msg}")
        except UnicodeDecodeError as exc:
            errors.append(f"{file}: not valid UTF-8 ({exc.reason} at byte {exc.start})")
        except OSError as exc:
            errors.append(f"{file}: cannot be read ({exc.strerror})")
        else:
            merged.merge(document, file)
    if errors:
        raise ConfigError(errors)
    return merged


def build(
    merged: Merged,
    config_dir: Path,
    sources: tuple[Path, ...],
    plugin_schemas: Mapping[str, type[PluginConfig]],
    plugin_areas: Mapping[str, type] = _NO_AREAS,
    area_hints: Mapping[str, str] = _NO_AREAS,
) -> AppConfig:
    """Validate the merged tree into an :class:`AppConfig`, or raise every problem."""
    problems = Problems(merged, config_dir)
    conv = make_converter()
    data = merged.data
    plugin_areas = dict(sorted(plugin_areas.items()))
    for name, area_class in plugin_areas.items():
        problem = area_problem(name, area_class)
        if problem:  # pluginhost skips such plugins; reaching here is a caller's bug
            raise TypeError(problem)
    for key in data:
        if key not in TOP_LEVEL_KEYS and key not in plugin_areas:
            valid = ", ".join(sorted((*TOP_LEVEL_KEYS, *plugin_areas)))
            problems.add((key,), _unknown(key, valid, area_hints))
    absolutize_paths(merged, plugin_schemas, plugin_areas)

    def structure(value: Any, cl: type, path: KeyPath, keep: Callable = lambda p: True) -> Any:
        try:
            return conv.structure(value, cl)
        except (BaseValidationError, Invalid, cattrs.errors.CattrsError) as exc:
            for sub_path, message in flatten(exc):
                if keep((*path, *sub_path)):
                    problems.add((*path, *sub_path), message)
            return None

    tables = {name: structure(data.get(name, {}), cl, (name,)) for name, cl in SECTIONS.items()}
    areas = {name: structure(data.get(name, area_default(cl)), cl, (name,))
             for name, cl in plugin_areas.items()}
    listeners = _listeners(data, merged, problems, structure, plugin_areas, area_hints, areas)
    plugins = _plugins(data, plugin_schemas, problems, structure)
    _check_tls_pair(tables["tls"], problems)
    _check_listeners(listeners, problems)
    _check_logging(tables["logging"], problems)
    _check_state(tables["server"], problems)
    if tables["delivery"] is not None:
        for path, message in route_problems(tables["delivery"]):
            problems.add(path, message)
    if problems.lines:
        raise ConfigError(problems.lines)
    if not listeners:
        # With nothing configured, listen on loopback port 25 only.
        listeners = {
            "default": Listener(
                port=25, **{k: tables[k] for k in LISTENER_OVERRIDES}, areas=dict(areas)
            ),
        }
    return AppConfig(
        **tables,
        areas=areas,
        listeners=listeners,
        plugins=plugins,
        sources=sources,
        origins={dotted(path): file for path, file in merged.origins.items()},
    )


def _unknown(key: str, valid: str, hints: Mapping[str, str]) -> str:
    hint = f"; {hints[key]}" if key in hints else ""
    return f"unknown key {key!r} (expected one of: {valid}){hint}"


#: What a listener table may set besides area tables (``areas`` is filled in, not set).
LISTENER_KEYS = tuple(f.name for f in attrs.fields(Listener) if f.name != "areas")


def _listeners(
    data: dict,
    merged: Merged,
    problems: Problems,
    structure: Callable,
    plugin_areas: Mapping[str, type] = _NO_AREAS,
    area_hints: Mapping[str, str] = _NO_AREAS,
    global_areas: Mapping[str, Any] = _NO_AREAS,
) -> dict:
    raw = data.get("listeners", {})
    if not isinstance(raw, dict):
        problems.add(("listeners",), str(Invalid("a table of listeners", raw)))
        return {}
    result = {}
    for name, table in raw.items():
        path: KeyPath = ("listeners", name)
        if not LISTENER_NAME.fullmatch(name):
            expected = "a listener name of lowercase letters, digits, '-' and '_'"
            problems.add(path, str(Invalid(expected, name)))
            continue
        if not isinstance(table, dict):
            problems.add(path, str(Invalid("a table", table)))
            continue
        effective = {}
        for key, value in table.items():
            if key in LISTENER_KEYS:
                effective[key] = value
            elif key not in plugin_areas:
                valid = ", ".join(sorted((*LISTENER_KEYS, *plugin_areas)))
                problems.add((*path, key), _unknown(key, valid, area_hints))
        for key in LISTENER_OVERRIDES:
            own, inherited = table.get(key, {}), data.get(key, {})
            if key == "tls" and isinstance(own, str):
                problems.add(
                    (*path, key),
                    f"expected a table of TLS settings (got {show(own)}); "
                    f"the TLS mode is set with tls_mode = {show(own)}",
                )
                own = {}
            if isinstance(own, dict) and isinstance(inherited, dict):
                own = {**inherited, **own}
            effective[key] = own

        def set_here(full: KeyPath) -> bool:
            # An inherited global key that is broken was already reported for the global
            # table; report only what this listener set itself.
            in_override = len(full) > 3 and full[2] in LISTENER_OVERRIDES
            return not in_override or full[:4] in merged.origins

        listener = structure(effective, Listener, path, set_here)
        areas = listener_areas(table, data, path, global_areas, plugin_areas, merged, structure)
        if listener is not None:
            result[name] = attrs.evolve(listener, areas=areas)
    return result


def _plugins(
    data: dict, schemas: Mapping[str, type[PluginConfig]], problems: Problems, structure: Callable
) -> dict[str, PluginConfig]:
    raw = data.get("plugins", {})
    if not isinstance(raw, dict):
        problems.add(("plugins",), str(Invalid("a table of plugins", raw)))
        raw = {}
    installed = ", ".join(sorted(schemas)) or "none"
    for name in raw:
        if name not in schemas:
            problems.add(("plugins", name), f"unknown plugin {name!r} (installed: {installed})")
    result = {}
    for name, schema in schemas.items():
        if not (isinstance(schema, type) and issubclass(schema, PluginConfig)):
            raise TypeError(f"plugin {name!r}: config class must subclass PluginConfig")
        plugin = structure(raw.get(name, {}), schema, ("plugins", name))
        if plugin is not None:
            result[name] = plugin
    return result


def _check_tls_pair(tls: Tls | None, problems: Problems) -> None:
    if tls is None or bool(tls.certificate) == bool(tls.key):
        return
    missing, given = ("key", "certificate") if tls.certificate else ("certificate", "key")
    problems.add(
        ("tls", missing),
        f"expected a {missing} file to go with tls.{given} (got nothing)",
        blame=("tls", given),
    )


def _check_listeners(listeners: dict[str, Listener], problems: Problems) -> None:
    bound: list[tuple[str, Any, int]] = []
    for name, listener in listeners.items():
        if not listener.enabled:
            continue
        path = ("listeners", name)
        if listener.tls_mode != "none" and not (listener.tls.certificate and listener.tls.key):
            missing = "key" if listener.tls.certificate else "certificate"
            problems.add(
                (*path, "tls_mode"),
                f"tls_mode = {show(listener.tls_mode)} needs tls.certificate and tls.key "
                f"(got no tls.{missing})",
            )
        if listener.tls.required and listener.tls_mode == "none":
            problems.add(
                (*path, "tls", "required"),
                'tls.required = true needs tls_mode = "starttls" or "implicit" '
                '(got tls_mode = "none")',
            )
        ip = ipaddress.ip_address(listener.address)
        for other, other_ip, other_port in bound:
            if other_port == listener.port and _overlap(ip, other_ip):
                problems.add(
                    (*path, "port"),
                    f"expected a port not used by another enabled listener "
                    f"(got {listener.port}, already used by listener {other!r} on {other_ip})",
                )
                break
        bound.append((name, ip, listener.port))


def _overlap(a: Any, b: Any) -> bool:
    """Would binding both fail? Same address, or a wildcard of the same family."""
    return a == b or (a.version == b.version and (a.is_unspecified or b.is_unspecified))


def _check_logging(logging: Logging | None, problems: Problems) -> None:
    if logging is not None and "file" in logging.destination and not logging.file:
        problems.add(
            ("logging", "file"),
            'expected a log file path when destination includes "file" (got nothing)',
            blame=("logging", "destination"),
        )


def _check_state(server: Any, problems: Problems) -> None:
    state = server.state if server is not None else None
    if state is not None and state.redis_mode != "single" and not state.redis_nodes:
        what = "Sentinels" if state.redis_mode == "sentinel" else "seed nodes"
        problems.add(
            ("server", "state", "redis_nodes"),
            f'expected the {what} as "host:port" entries with redis_mode = '
            f'"{state.redis_mode}" (got none)',
            blame=("server", "state", "redis_mode"),
        )


def absolutize_paths(
    merged: Merged, plugin_schemas: Mapping[str, type], plugin_areas: Mapping[str, type] = _NO_AREAS
) -> None:
    """Resolve relative ``FilePath`` values against their file's directory, in place."""
    data = merged.data
    tables: list[tuple[KeyPath, Any]] = [((name,), cl) for name, cl in SECTIONS.items()]
    tables.append((("listeners",), dict[str, Listener]))
    tables += [(("plugins", name), cl) for name, cl in plugin_schemas.items()]
    tables += [((name,), cl) for name, cl in plugin_areas.items()]
    listeners = data.get("listeners")
    for listener in listeners if isinstance(listeners, dict) else ():
        tables += [(("listeners", listener, name), cl) for name, cl in plugin_areas.items()]
    for path, typ in tables:
        parent = data
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent:
            parent[path[-1]] = _absolutize(parent[path[-1]], typ, path, merged)


def _absolutize(value: Any, typ: Any, path: KeyPath, merged: Merged) -> Any:
    origin, args = get_origin(typ), get_args(typ)
    if origin is Annotated:
        return _absolutize(value, args[0], path, merged)
    if origin in (Union, types.UnionType):
        for arm in args:
            value = _absolutize(value, arm, path, merged)
        return value
    if isinstance(typ, type) and issubclass(typ, FilePath):
        file = merged.origin(path)
        if isinstance(value, str) and value and not os.path.isabs(value) and file is not None:
            return os.path.abspath(os.path.join(file.parent, value))
        return value
    if attrs.has(typ) and isinstance(value, dict):
        hints = type_hints(typ)
        return {
            k: _absolutize(v, hints[k], (*path, k), merged) if k in hints else v
            for k, v in value.items()
        }
    if origin in (list, tuple, set, frozenset) and isinstance(value, list) and args:
        return [_absolutize(v, args[0], (*path, i), merged) for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict) and len(args) == 2:
        return {k: _absolutize(v, args[1], (*path, k), merged) for k, v in value.items()}
    return value
