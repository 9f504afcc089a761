"""``smtp-appliance bans list|delete``: the bans of auto-ban, seen by the admin.

With ``[server.state] backend = "redis"`` the command reads Redis directly (the
server need not run). With ``"local"`` the bans live in the running server's memory:
the command asks it over its control socket (``state.sock`` in the spool directory).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from appliance.state.counters import StoreUnavailable


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``bans`` to the subcommands; returns its own subparsers' holder."""
    b = sub.add_parser("bans", help="list or lift the bans of auto-ban")
    bs = b.add_subparsers(dest="action", required=True)
    bs.add_parser("list", help="every ban in force").add_argument("--json", action="store_true")
    bs.add_parser("delete", help="lift one ban").add_argument(
        "key", help='the banned key as listed, e.g. "ip:192.0.2.7"')
    return bs


def open_store(config: Any) -> Any:
    """The configured store, without any fallback: failures raise StoreUnavailable."""
    from appliance.state import control_path, open_counters
    from appliance.state.control import connect

    settings = config.server.state
    if settings.backend == "redis":
        return open_counters(settings, None)
    path = control_path(config.queue.directory)
    try:
        return connect(path)
    except OSError as exc:
        raise StoreUnavailable(
            f'the bans of [server.state] backend = "local" live in the running server, '
            f"which answers on {path}; it cannot be reached ({exc.strerror or exc}): "
            f"is the server running with this configuration?") from None


def run(args: argparse.Namespace, load: Callable[[], Any]) -> int:
    """``load()`` returns the validated configuration (or raises ConfigError)."""
    try:
        store = open_store(load())
        if args.action == "delete":
            if store.unban(args.key):
                print(f"lifted the ban of {args.key}")
                return 0
            print(f"no ban of {args.key}", file=sys.stderr)
            return 1
        bans = sorted(store.bans().items())
    except StoreUnavailable as exc:
        print(f"smtp-appliance: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([{"key": k, "seconds_left": round(left, 1), "reason": reason}
                          for k, (left, reason) in bans], indent=1))
        return 0
    for key, (left, reason) in bans:
        print(f"{key:<40} {_left(left):>10}  {reason}")
    print(f"-- {len(bans)} ban(s)")
    return 0


def _left(seconds: float) -> str:
    seconds = int(seconds + 0.999)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
