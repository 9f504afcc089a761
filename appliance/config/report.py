"""What ``smtp-appliance check-config`` prints.

Kept apart from the loader so the loader stays about correctness and this module about
what an admin needs to see: which files were read, what will listen where, and for
one listener the effective value of every key and where it came from.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from appliance.config.convert import show
from appliance.config.loader import LISTENER_OVERRIDES, ConfigError, load_config
from appliance.config.merge import dotted
from appliance.config.schema import AppConfig, Listener, PluginConfig
from appliance.config.units import Duration, Size, format_duration, format_size

__all__ = ["check_config", "describe_listener"]

_NO_PLUGINS: Mapping[str, Any] = types.MappingProxyType({})


def check_config(
    config_dir: str | Path,
    plugin_schemas: Mapping[str, type[PluginConfig]] = _NO_PLUGINS,
    plugin_areas: Mapping[str, type] = _NO_PLUGINS,
    area_hints: Mapping[str, str] = _NO_PLUGINS,
    machine_checks: Callable[[AppConfig], list[str]] | None = None,
) -> tuple[int, str]:
    """Load the config and return ``(exit status, text to print)``: 0 and a summary, or
    1 and one line per error. ``machine_checks`` finds what this machine would refuse
    at start-up in a valid config (files that do not load, addresses it does not
    have): the server's own checks, passed in so the config layer stays below it."""
    try:
        config = load_config(config_dir, plugin_schemas, plugin_areas, area_hints)
    except ConfigError as exc:
        return 1, "\n".join(exc.errors)
    problems = machine_checks(config) if machine_checks else []
    if problems:
        return 1, "\n".join(problems)
    return 0, summary(config)


def summary(config: AppConfig) -> str:
    lines = [f"configuration OK ({len(config.sources)} files)", "files read, in merge order:"]
    lines += [f"  {source}" for source in config.sources]
    server = config.server
    lines.append(
        f"server: hostname {show(server.hostname) if server.hostname else '(machine FQDN)'}, "
        f"max_sessions {server.max_sessions}, workers {server.workers or 'one per CPU'}"
    )
    lines.append("listeners:")
    width = max(len(name) for name in config.listeners)
    for name, listener in config.listeners.items():
        state = "" if listener.enabled else "  (disabled)"
        lines.append(f"  {name:<{width}}  {endpoint(listener):<22} tls {listener.tls_mode}{state}")
    fsync = "fsync on" if config.queue.fsync else "fsync OFF: accepted mail may be lost"
    lines.append(f"spool directory: {config.queue.directory} ({fsync})")
    log = config.logging
    where = {"file": f"file {log.file}", "syslog": f"syslog facility {log.syslog_facility}"}
    lines.append(
        f"logging: level {log.level}, format {log.format}, "
        f"to {', '.join(where.get(d, d) for d in log.destination)}"
    )
    listen = config.metrics.listen
    lines.append(f"metrics: http://{listen}/metrics" if listen else "metrics: endpoint off")
    if config.areas:
        lines.append(
            f"areas owned by plugins: {', '.join(config.areas)} "
            "(per listener: check-config --listener NAME)"
        )
    if not config.plugins:
        lines.append("plugins: none installed")
    else:
        lines.append("plugins, in run order:")
        width = max(len(name) for name in config.plugins)
        ordered = sorted(config.plugins.items(), key=lambda item: (item[1].priority, item[0]))
        for name, plugin in ordered:
            state = "enabled " if plugin.enabled else "disabled"
            lines.append(
                f"  {name:<{width}}  {state}  priority {plugin.priority:<5} mode {plugin.mode}"
            )
    return "\n".join(lines)


def endpoint(listener: Listener) -> str:
    address = f"[{listener.address}]" if ":" in listener.address else listener.address
    return f"{address}:{listener.port}"


def describe_listener(config: AppConfig, name: str) -> str:
    """The effective settings of listener ``name`` as TOML, each key with its origin.

    :raises KeyError: if there is no such listener.
    """
    if name not in config.listeners:
        known = ", ".join(config.listeners) or "none"
        raise KeyError(f"no listener named {name!r} (configured: {known})")
    listener = config.listeners[name]
    base = f"listeners.{name}"
    rows: list[tuple[str, str]] = []

    def row(text: str, comment: str) -> None:
        rows.append((text, comment))

    row(f"[{base}]", "")
    for field in attrs.fields(Listener):
        if field.name in (*LISTENER_OVERRIDES, "areas"):
            continue
        value = getattr(listener, field.name)
        origin = _origin(config, f"{base}.{field.name}")
        if field.name == "max_sessions" and value is None:
            cap = config.server.max_sessions
            row(f"# max_sessions not set: only server.max_sessions ({cap}) applies", "")
        elif field.name == "banner" and value is None:
            server_origin = _origin(config, "server.banner")
            row(f"banner = {render(config.server.banner)}", f"from server.banner, {server_origin}")
        else:
            row(f"{field.name} = {render(value)}", origin)
    for table in LISTENER_OVERRIDES:
        row("", "")
        row(f"[{base}.{table}]", "")
        for field in attrs.fields(type(getattr(listener, table))):
            value = getattr(getattr(listener, table), field.name)
            own = config.origins.get(f"{base}.{table}.{field.name}")
            if own is not None:
                where = f"listener override, {own}"
            else:
                where = f"[{table}], {_origin(config, f'{table}.{field.name}')}"
            row(f"{field.name} = {render(value)}", where)
    for area, value in listener.areas.items():
        _area_rows(config, base, (area,), value, row)
    width = max(len(text) for text, comment in rows if comment)
    return "\n".join(
        f"{text:<{width}}  # {comment}" if comment else text for text, comment in rows
    ).rstrip()


def _area_rows(config: AppConfig, base: str, path: tuple[str, ...], value: Any, row) -> None:
    """One plugin-owned area table (and its nested tables) with where each key came from:
    the listener's own table, the global one, or the default."""
    row("", "")
    if isinstance(value, list):  # an array of tables ([[rules]]): global ones first
        for item in value:
            row(f"[[{base}.{'.'.join(path)}]] {render(item)}", "")
        return
    row(f"[{base}.{'.'.join(path)}]", "")
    nested = []
    for field in attrs.fields(type(value)):
        item = getattr(value, field.name)
        key = ".".join((*path, field.name))
        if attrs.has(type(item)):
            nested.append((field.name, item))
            continue
        own = config.origins.get(f"{base}.{key}")
        if own is not None:
            where = f"listener override, {own}"
        else:
            where = f"[{path[0]}], {_origin(config, key)}"
        if item is None:
            row(f"# {field.name} not set", where)
        else:
            row(f"{field.name} = {render(item)}", where)
    for name, item in nested:
        _area_rows(config, base, (*path, name), item, row)


def _origin(config: AppConfig, key: str) -> str:
    origin = config.origins.get(key)
    return str(origin) if origin is not None else "default"


def render(value: Any) -> str:
    """A value as TOML, units spelled out, so the output can be pasted into a file."""
    if isinstance(value, Size):
        return show(format_size(value))
    if isinstance(value, Duration):
        return show(format_duration(value))
    if isinstance(value, set | frozenset):
        value = sorted(value, key=repr)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(render(item) for item in value) + "]"
    if attrs.has(type(value)):
        value = {f.name: getattr(value, f.name) for f in attrs.fields(type(value))}
    if isinstance(value, dict):
        items = [f"{dotted((k,))} = {render(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    return show(value)
