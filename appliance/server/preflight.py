"""What ``check-config`` checks on this machine, beyond the files themselves, so that
a configuration it accepts does not stop ``serve`` at start-up: each enabled
listener's certificates and keys load (the default pair and every SNI pair, with
the code serve uses), its listen address is one of this machine's (bound on port 0,
so a running server's ports are not touched), and the log file's directory exists
and is writable; ``server.user`` and ``server.group`` exist. Each problem is one
line naming the file that set the key."""

from __future__ import annotations

import os
import socket
import stat

from appliance.config import ConfigError
from appliance.config.schema import AppConfig
from appliance.server import privileges
from appliance.server.tls import TLSFileError, make_ssl_context

__all__ = ["problems"]


def problems(config: AppConfig) -> list[str]:
    found = []
    for name, listener in config.listeners.items():
        if not listener.enabled:
            continue
        if listener.tls_mode != "none":
            try:
                make_ssl_context(listener.tls, name)
            except TLSFileError as exc:
                key = _where(config, f"listeners.{name}.tls.{exc.key}", f"tls.{exc.key}")
                found.append(f"{key}: listener {name}: {exc.detail}")
        refused = _unbindable(listener.address)
        if refused:
            key = _where(config, f"listeners.{name}.address")
            found.append(f"{key}: {listener.address} is not an address of this machine "
                         f"(listener {name}: {refused})")
    try:
        privileges.resolve(config)
    except ConfigError as exc:
        found.extend(exc.errors)
    log = config.logging
    if "file" in log.destination:
        directory = os.path.dirname(os.path.abspath(log.file))
        if not os.path.isdir(directory):
            found.append(f"{_where(config, 'logging.file')}: directory {directory} "
                         "does not exist")
        elif not os.access(directory, os.W_OK | os.X_OK):
            found.append(f"{_where(config, 'logging.file')}: directory {directory} "
                         "is not writable")
    for output, path in (("syslog", log.syslog_address or "unix:/dev/log"),
                         ("journal", f"unix:{log.journal_socket}")):
        kind, _, where = path.partition(":")
        if output in log.destination and kind == "unix" and not _is_socket(where):
            key = "logging.syslog_address" if output == "syslog" else "logging.journal_socket"
            found.append(f"{_where(config, key, 'logging.destination')}: {where} is not a "
                         f"socket: is the {'syslog daemon' if output == 'syslog' else 'journal'}"
                         " running?")
    return found


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _unbindable(address: str) -> str:
    """Why ``address`` cannot be listened on here, or "" if it can."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
    except OSError as exc:
        return str(exc)
    return ""


def _where(config: AppConfig, key: str, fallback: str = "") -> str:
    """``FILE: key`` for the key as set (a listener's own, else the global one)."""
    for candidate in (key, fallback):
        if candidate and candidate.split("[")[0] in config.origins:
            return f"{config.origins[candidate.split('[')[0]]}: {candidate}"
    return key
