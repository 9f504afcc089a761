"""``smtp-appliance stats``, ``status`` and ``reload``: the running server, asked
over its control socket (``state.sock`` in the spool directory, mode 0600).

``stats`` prints the counters the Prometheus endpoint serves (counted whether the
endpoint is on or not), summed over every worker; ``--watch N`` prints them again
every N seconds with the rate since the last table. ``reload`` is SIGHUP with an
answer: the new configuration in force, or why it was refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

P = "smtp_appliance_"


def add_parsers(sub: Any) -> list[argparse.ArgumentParser]:
    s = sub.add_parser("stats", help="counters of the running server (a live table)")
    s.add_argument("--watch", type=float, metavar="SECONDS",
                   help="print the table again every SECONDS, with rates")
    s.add_argument("--json", action="store_true", help="every sample, as JSON")
    st = sub.add_parser("status", help="pid, workers, uptime, listeners, sessions")
    st.add_argument("--json", action="store_true")
    r = sub.add_parser("reload", help="reload the configuration (as SIGHUP), and say "
                                      "whether it was refused")
    return [s, st, r]


def run(args: argparse.Namespace, load: Callable[[], Any]) -> int:
    """``load()`` returns the validated configuration (or raises ConfigError)."""
    from appliance.state import control_path
    from appliance.state.control import connect
    from appliance.state.counters import StoreUnavailable

    path = control_path(_spool_directory(args, load))
    try:
        client = connect(path)
    except OSError as exc:
        print(f"smtp-appliance: the running server answers on {path}; it cannot be "
              f"reached ({exc.strerror or exc}): is it running with this configuration?",
              file=sys.stderr)
        return 1
    try:
        if args.command == "reload":
            print(client.call("reload"))
            return 0
        if args.command == "status":
            return _status(client.call("status"), args.json)
        return _stats(client, args)
    except ValueError as exc:  # the server's refusal
        print(f"smtp-appliance: {exc}", file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"smtp-appliance: {exc}", file=sys.stderr)
        return 1


def _spool_directory(args: argparse.Namespace, load: Callable[[], Any]) -> str:
    """``[queue] directory``, where the control socket is. A configuration that
    does not validate (the one a ``reload`` is about to be refused for) may still
    name it: the running server is asked all the same, with the key as written."""
    from appliance.config import ConfigError, Queue
    from appliance.config.loader import config_files, read_and_merge

    try:
        return load().queue.directory
    except ConfigError:
        files = config_files(Path(args.config_dir_sub or args.config_dir))
        queue = read_and_merge(files).data.get("queue", {})
        directory = queue.get("directory", Queue().directory)
        if not isinstance(directory, str) or not os.path.isabs(directory):
            raise
        return directory


def _status(status: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(status, indent=1))
        return 0
    workers = ", ".join(map(str, status["workers"])) or "none (one process)"
    print(f"pid:        {status['pid']}")
    print(f"workers:    {workers}")
    print(f"uptime:     {_duration(status['uptime'])}")
    print(f"config dir: {status['config_dir']}")
    print(f"sessions:   {status['sessions']}")
    print("listeners:")
    for name, where in status["listeners"].items():
        print(f"  {name:<16} {where}")
    return 0


def _stats(client: Any, args: argparse.Namespace) -> int:
    previous: dict[str, float] | None = None
    while True:
        answer = client.call("stats")
        if args.json:
            print(json.dumps(answer, indent=1))
            return 0
        rows = table(answer["samples"])
        interval = args.watch
        print(f"-- uptime {_duration(answer['uptime'])}")
        for label, value in rows:
            rate = ""
            if previous is not None and interval and label in previous:
                rate = f"  {(value - previous[label]) / interval:>8.2f}/s"
            print(f"{label:<52} {_number(value):>12}{rate}")
        if not interval:
            return 0
        previous = dict(rows)
        sys.stdout.flush()
        time.sleep(interval)


def table(samples: dict[str, list]) -> list[tuple[str, float]]:
    """The rows of ``stats``: (label, value), in a fixed order, zeros left out."""

    def rows(name: str, keys: tuple[str, ...] = (), title: str = "") -> list:
        found = []
        for labels, value in samples.get(P + name, []):
            if value:
                detail = " ".join(labels.get(k, "") for k in keys)
                found.append((f"{title or name} {detail}".rstrip(), value))
        return sorted(found)

    out = []
    out += rows("connections_total", ("listener", "outcome"), "connections")
    out += rows("sessions_open", ("listener",), "sessions open")
    out += rows("messages_accepted_total", (), "messages accepted")
    out += rows("message_bytes_total", (), "bytes accepted")
    out += rows("recipients_accepted_total", (), "recipients accepted")
    out += rows("messages_discarded_total", (), "messages discarded")
    out += rows("queue_failures_total", (), "queue failures")
    out += rows("refusals_total", ("command", "code", "enhanced", "plugin"), "refused")
    out += rows("tls_sessions_total", ("version",), "tls")
    out += rows("tls_failures_total", (), "tls failures")
    out += rows("auth_total", ("mechanism", "result"), "auth")
    out += rows("check_results_total", ("check", "result"), "check")
    out += rows("deliveries_total", ("outcome",), "deliveries")
    out += [("queue messages", v) for _, v in samples.get(P + "queue_messages", [])]
    out += [("queue oldest (s)", v) for _, v in samples.get(P + "queue_oldest_seconds", [])]
    return out


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"
