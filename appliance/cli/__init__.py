"""The ``smtp-appliance`` command: serve, deliver, check-config, plugins, queue."""

from __future__ import annotations

import argparse
import os
import sys

from appliance.cli import bans as cli_bans
from appliance.cli import queue as cli_queue
from appliance.cli import report as cli_report
from appliance.cli import rules as cli_rules
from appliance.cli import selftest as cli_selftest
from appliance.cli import stats as cli_stats
from appliance.cli import users as cli_users
from appliance.config import ConfigError, check_config, describe_listener, load_config
from appliance.hooks.host import PluginHost, discover, loader_inputs

DEFAULT_CONFIG_DIR = "/etc/smtp-appliance/conf.d"
CONFIG_DIR_HELP = f"directory of *.toml files (default {DEFAULT_CONFIG_DIR})"
SPOOL_HELP = "spool directory (default: [queue] directory)"


def _also_after(parsers, flag: str, dest: str, text: str) -> None:
    """Let ``flag`` of an outer command also come after the subcommand, as admins type
    it, and show it in every subcommand's help. Its own ``dest``: a subcommand's
    default would otherwise overwrite a value given before the subcommand."""
    for sp in parsers:
        sp.add_argument(flag, dest=dest, default=None, metavar="DIR", help=text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smtp-appliance", description=__doc__)
    p.add_argument("--config-dir", default=DEFAULT_CONFIG_DIR, metavar="DIR", help=CONFIG_DIR_HELP)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the server in the foreground")
    cc = sub.add_parser("check-config", help="validate the configuration and summarise it")
    cc.add_argument("--listener", help="print the effective settings of this listener")
    sub.add_parser("plugins", help="list installed plugins, their hooks and order")
    sub.add_parser("deliver", help="run the delivery service alone, in the foreground")
    qs = cli_queue.add_parser(sub, SPOOL_HELP)
    us = cli_users.add_parser(sub)
    bs = cli_bans.add_parser(sub)
    cli_stats.add_parsers(sub)
    cli_report.add_parser(sub)
    rs = cli_rules.add_parser(sub)
    cli_selftest.add_parser(sub)
    _also_after((*sub.choices.values(), *qs.choices.values(), *us.choices.values(),
                 *bs.choices.values(), *rs.choices.values()), "--config-dir", "config_dir_sub",
                CONFIG_DIR_HELP)
    _also_after(qs.choices.values(), "--spool", "spool_sub", SPOOL_HELP)
    return p


#: The exit status of a command whose reader went away: what a shell reports for a
#: command killed by SIGPIPE (128 + 13), as ``ls | head`` or ``git log | head`` give.
BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _run(args)
    try:
        status = _run(args)
        sys.stdout.flush()  # a late EPIPE here, not at interpreter exit
    except BrokenPipeError:
        # ``queue list | head``: stop quietly. The rest of the output goes to
        # /dev/null so that Python's own flush at exit cannot fail again (the Python
        # docs' recipe, "Note on SIGPIPE" in the signal module).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE
    return status


def _run(args: argparse.Namespace) -> int:
    if args.command == "selftest":
        return cli_selftest.run(args)
    config_dir = args.config_dir_sub or args.config_dir
    found = discover()
    if args.command in ("serve", "deliver"):
        return _start(args.command, config_dir, found)
    if args.command == "check-config":
        return _check_config(config_dir, found, args.listener)
    if args.command == "plugins":
        return _plugins(config_dir, found)
    if args.command == "users":
        return cli_users.run(args, lambda: load_config(config_dir, **loader_inputs(found)))
    if args.command in _WITH_CONFIG:
        return _with_config(_WITH_CONFIG[args.command], config_dir, found, args)
    if args.command == "rules":
        return cli_rules.run(args, config_dir, found, loader_inputs)
    return cli_queue.run(args, lambda: load_config(config_dir, **loader_inputs(found)))


def _start(command: str, config_dir: str, found) -> int:
    """``serve`` or ``deliver`` (the delivery service alone): a start-up error is
    one line on stderr and status 1."""
    try:
        if command == "serve":
            from appliance.server.server import serve

            return serve(config_dir, found)
        from appliance.delivery.service import main as deliver

        return deliver(load_config(config_dir, **loader_inputs(found)))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"smtp-appliance: cannot start: {exc}", file=sys.stderr)
        return 1


#: commands whose ``run(args, load)`` loads the configuration only when needed
_WITH_CONFIG = {"bans": cli_bans.run, "stats": cli_stats.run, "status": cli_stats.run,
                "reload": cli_stats.run, "report": cli_report.run}


def _with_config(run, config_dir: str, found, args) -> int:
    try:
        return run(args, lambda: load_config(config_dir, **loader_inputs(found)))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1


def _check_config(config_dir: str, found, listener: str | None) -> int:
    broken = [d for d in found.values() if d.error]
    from appliance.server import preflight

    status, text = check_config(config_dir, **loader_inputs(found),
                                machine_checks=preflight.problems)
    print(text)
    for d in broken:
        print(f"plugin {d.name} ({d.distribution}) could not be loaded: {d.error}")
    if status == 0 and listener:
        config = load_config(config_dir, **loader_inputs(found))
        if listener not in config.listeners:
            print(f"no listener named {listener!r}", file=sys.stderr)
            return 1
        print(describe_listener(config, listener))
    return status or (1 if broken else 0)


def _plugins(config_dir: str, found) -> int:
    try:
        config = load_config(config_dir, **loader_inputs(found))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    host = PluginHost.build(found, config.plugins, 0)
    order = {name: i + 1 for i, name in enumerate(host.order)}
    print(f"{'order':>5}  {'plugin':<20} {'priority':>8}  {'mode':<8} hooks")
    for name in sorted(found, key=lambda n: (order.get(n, 10**6), n)):
        d = found[name]
        if d.error:
            print(f"{'-':>5}  {name:<20} {'':>8}  {'broken':<8} {d.error}")
            continue
        cfg = config.plugins[name]
        if name not in order:
            print(f"{'-':>5}  {name:<20} {cfg.priority:>8}  {'disabled':<8}")
            continue
        hooks = ", ".join(host.hooks_of(name))
        print(f"{order[name]:>5}  {name:<20} {cfg.priority:>8}  {cfg.mode:<8} {hooks}")
    for err in host.errors:
        print(err)
    return 1 if host.errors else 0
