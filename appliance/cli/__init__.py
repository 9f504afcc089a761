"""The ``smtp-appliance`` command: serve, check-config, plugins, queue."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from appliance.cli import bans as cli_bans
from appliance.cli import selftest as cli_selftest
from appliance.cli import users as cli_users
from appliance.config import ConfigError, check_config, describe_listener, load_config
from appliance.hooks.host import PluginHost, discover, loader_inputs
from appliance.spool import Spool

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
    q = sub.add_parser("queue", help="inspect the spool (list, show, delete, count)")
    q.add_argument("--spool", metavar="DIR", help=SPOOL_HELP)
    qs = q.add_subparsers(dest="action", required=True)
    ql = qs.add_parser("list")
    ql.add_argument("--json", action="store_true")
    qs.add_parser("count")
    for name in ("show", "delete"):
        qs.add_parser(name).add_argument("queue_id")
    us = cli_users.add_parser(sub)
    bs = cli_bans.add_parser(sub)
    cli_selftest.add_parser(sub)
    _also_after((*sub.choices.values(), *qs.choices.values(), *us.choices.values(),
                 *bs.choices.values()), "--config-dir", "config_dir_sub", CONFIG_DIR_HELP)
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
    if args.command == "serve":
        from appliance.server.server import serve

        try:
            return serve(config_dir, found)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"smtp-appliance: cannot start: {exc}", file=sys.stderr)
            return 1
    if args.command == "check-config":
        return _check_config(config_dir, found, args.listener)
    if args.command == "plugins":
        return _plugins(config_dir, found)
    if args.command == "users":
        return cli_users.run(args, lambda: load_config(config_dir, **loader_inputs(found)))
    if args.command == "bans":
        return _bans(config_dir, found, args)
    return _queue(config_dir, found, args)


def _bans(config_dir: str, found, args) -> int:
    try:
        return cli_bans.run(args, lambda: load_config(config_dir, **loader_inputs(found)))
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


def _queue(config_dir: str, found, args) -> int:
    if args.spool_sub or args.spool:
        spool = Spool(args.spool_sub or args.spool)
    else:
        try:
            spool = Spool(load_config(config_dir, **loader_inputs(found)).queue.directory)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
    if not spool.queue.is_dir():
        print(f"no spool at {spool.directory}", file=sys.stderr)
        return 1
    if args.action == "count":
        print(spool.count())
        return 0
    if args.action == "list":
        items = list(spool)
        if args.json:
            print(json.dumps([{"queue_id": m.queue_id, "size": m.size,
                               "received_at": m.envelope.get("received_at"),
                               "mail_from": m.envelope["mail_from"]["address"],
                               "recipients": [r["address"] for r in m.envelope["recipients"]],
                               "quarantine": m.envelope.get("quarantine")}
                              for m in items], indent=1))
            return 0
        for m in items:
            rcpts = ", ".join(f"<{r['address']}>" for r in m.envelope["recipients"])
            held = (f"  [quarantine: {m.envelope['quarantine']}]"
                    if m.envelope.get("quarantine") else "")
            print(f"{m.queue_id}  {m.size:>9}  {m.envelope.get('received_at', '')}  "
                  f"<{m.envelope['mail_from']['address']}> -> {rcpts}{held}")
        print(f"-- {len(items)} message(s)")
        return 0
    try:
        if args.action == "delete":
            spool.delete(args.queue_id)
            print(f"deleted {args.queue_id}")
            return 0
        m = spool.get(args.queue_id)
    except KeyError:
        print(f"no message {args.queue_id} in {spool.queue}", file=sys.stderr)
        return 1
    _show(m)
    return 0


def _show(m) -> None:
    env = m.envelope
    client = env["client"]
    print(f"queue id:    {m.queue_id}")
    print(f"received:    {env.get('received_at')} on listener {env['listener']['name']}"
          f" [{env['listener']['ip']}]:{env['listener']['port']}")
    print(f"client:      [{client['ip']}]:{client['port']} helo={client['helo']}"
          f" tls={(client['tls'] or {}).get('protocol') or 'no'}"
          f" auth={client['auth_user'] or '-'}")
    params = " ".join(f"{k}={v}" for k, v in env["mail_from"]["params"].items())
    print(f"mail from:   <{env['mail_from']['address']}> {params}".rstrip())
    for r in env["recipients"]:
        rp = " ".join(f"{k}={v}" for k, v in r["params"].items())
        print(f"rcpt to:     <{r['address']}> folder={r['folder']}"
              f"{' relay=' + r['relay_host'] if r['relay_host'] else ''} {rp}".rstrip())
    print(f"size:        {m.size}")
    if env.get("delay_until"):
        print(f"delay until: {env['delay_until']}")
    if env.get("quarantine"):
        print(f"quarantine:  {env['quarantine']}")
    print("decision trace:")
    if all(e.get("action") == "continue" for e in env.get("trace", [])):
        print("  (no plugin decided anything: accepted by default)")
    for e in env.get("trace", []):
        code = f" {e['code']} {e['enhanced'] or ''}".rstrip() if e.get("code") else ""
        text = f" {e['text']!r}" if e.get("text") else ""
        mode = f" ({e['mode']})" if e.get("mode", "enforce") != "enforce" else ""
        print(f"  {e['event']:<18} {e['plugin']:<16} {e['action']}{code}{text}{mode}")
    print(f"message file: {Path(m.message_path)}")
