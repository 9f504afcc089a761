"""``smtp-appliance rules list|explain``: the rules of ``[[rules]]`` as the server
runs them (docs/rules.md, "The tools").

``list`` prints each listener's effective rules per event, in the order they run.
``explain`` runs one simulated session through the real session code, over a
loopback connection inside this process with no network client: the plugins,
the rules and the checks they call (against the configured DNS) run as in the
server, and what each rule made of each event is printed next to the replies the
client gets. Nothing is queued: a plugin answering ``queue_message`` first stands
in for the spool.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from appliance.config import ConfigError, load_config
from appliance.hooks.plugin import hookimpl

#: Where the rules plugin writes what it did, when a session carries this key.
EXPLAIN_KEY = "rules.explain"
AREA = "rules"
DEFAULT_MESSAGE = b"Subject: rules explain\r\nFrom: <%s>\r\n\r\nA test message.\r\n"


def add_parser(sub: Any) -> argparse._SubParsersAction:
    r = sub.add_parser("rules", help="list the rules, or explain them on a simulated session")
    rs = r.add_subparsers(dest="action", required=True)
    ls = rs.add_parser("list", help="the effective rules per listener and event, in order")
    ls.add_argument("--listener", help="only this listener")
    ls.add_argument("--json", action="store_true")
    ex = rs.add_parser("explain", help="run the rules for a simulated session; queue nothing")
    ex.add_argument("--listener", required=True)
    ex.add_argument("--client-ip", required=True)
    ex.add_argument("--helo", required=True)
    ex.add_argument("--tls", action="store_true", help="as if the client had started TLS 1.3")
    ex.add_argument("--auth-user", default="", help="as if the client had authenticated")
    ex.add_argument("--from", dest="sender", required=True, metavar="ADDR")
    ex.add_argument("--rcpt", nargs="+", required=True, metavar="ADDR")
    ex.add_argument("--message", type=Path, metavar="FILE", help="the message (headers and "
                    "body) to send; default: a short test message")
    return rs


def run(args: argparse.Namespace, config_dir: str, found: dict[str, Any],
        loader_inputs: Callable[[dict], dict]) -> int:
    try:
        config = load_config(config_dir, **loader_inputs(found))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.listener and args.listener not in config.listeners:
        print(f"no listener named {args.listener!r} "
              f"(configured: {', '.join(config.listeners) or 'none'})", file=sys.stderr)
        return 1
    if AREA not in config.areas:
        print("the rules plugin is not installed", file=sys.stderr)
        return 1
    if args.action == "list":
        return _list(config, args.listener, args.json)
    return explain(args, config_dir, found)


def effective(config: Any, listener: str) -> dict[str, list[Any]]:
    """A listener's enabled rules by event, in the order they run."""
    rules = config.listeners[listener].areas.get(AREA) or config.areas.get(AREA) or []
    ordered = sorted(enumerate(r for r in rules if r.enabled),
                     key=lambda item: (item[1].priority, item[0]))
    by_event: dict[str, list[Any]] = {}
    for _, rule in ordered:
        by_event.setdefault(rule.event, []).append(rule)
    order = _EVENTS.index
    return dict(sorted(by_event.items(), key=lambda item: order(item[0])))


#: The events in the order a session meets them.
_EVENTS = ("connect", "ehlo", "auth", "mail_from", "rcpt_to", "headers_received", "message",
           "disconnect")


def describe(step: Any) -> str:
    if step.action:
        reply = " ".join(str(p) for p in (step.code or "", step.enhanced_code) if p)
        text = f" {step.text!r}" if step.text else ""
        return f"{step.action} {reply}".strip() + text
    if step.set:
        return f"set {step.set} = {step.value!r}"
    return step.method


def _list(config: Any, only: str | None, as_json: bool) -> int:
    names = [only] if only else list(config.listeners)
    if as_json:
        print(json.dumps({name: {event: [
            {"name": r.name, "priority": r.priority, "mode": r.mode, "condition": r.condition,
             "actions": [describe(s) for s in r.actions], "stop": r.stop}
            for r in rules] for event, rules in effective(config, name).items()}
            for name in names}, indent=1))
        return 0
    for name in names:
        print(f"listener {name}:")
        by_event = effective(config, name)
        if not by_event:
            print("  (no rules)")
        for event, rules in by_event.items():
            print(f"  {event}:")
            for i, r in enumerate(rules, 1):
                flags = "".join([" (monitor)" if r.mode == "monitor" else "",
                                 " (stop)" if r.stop else ""])
                print(f"    {i}. {r.name} [priority {r.priority}]{flags}")
                print(f"       if {r.condition or '(always)'}")
                print(f"       do {'; '.join(describe(s) for s in r.actions) or '(nothing)'}")
    return 0


# --- explain ---------------------------------------------------------------------------------


class _NotQueued:
    """Stands in for the spool: the message is accepted, not stored."""

    @hookimpl
    def queue_message(self) -> str:
        return "nothing (rules explain)"


def explain(args: argparse.Namespace, config_dir: str, found: dict[str, Any]) -> int:
    import gevent

    from appliance.hooks.host import Discovered
    from appliance.mail.context import TLSInfo, core_set
    from appliance.server.proxied import Arrival
    from appliance.server.runtime import build_runtime
    from appliance.server.session import Session
    from appliance.server.stress import Stress

    found = {**found, "rules-explain": Discovered("rules-explain", _NotQueued())}
    try:
        runtime = build_runtime(config_dir, found)
    except (ConfigError, OSError) as exc:
        print(f"smtp-appliance rules explain: {exc}", file=sys.stderr)
        return 1
    lr = runtime.listeners.get(args.listener)
    if lr is None:
        print(f"listener {args.listener!r} is disabled", file=sys.stderr)
        return 1
    tls = args.tls
    if lr.config.tls_mode == "implicit":  # no handshake here: the session is as if done
        lr, tls = attrs.evolve(lr, config=attrs.evolve(lr.config, tls_mode="none"),
                               ssl_context=None), True
    server_sock, client = _loopback_pair()
    arrival = Arrival((args.client_ip, 40000), (lr.config.address, lr.config.port))
    session = Session(runtime, lr, server_sock, arrival, Stress(list))
    ctx = session.ctx
    if tls:
        core_set(ctx, "tls", TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256))
    if args.auth_user:
        core_set(ctx, "auth_user", args.auth_user)
        core_set(ctx, "auth_mechanism", "PLAIN")
    outcomes: list[tuple[str, Any]] = ctx.stash.setdefault(EXPLAIN_KEY, [])
    greenlet = gevent.spawn(session.run)
    message = args.message.read_bytes() if args.message else DEFAULT_MESSAGE % (
        args.sender.encode())
    steps = [("(connect)", b""), (f"EHLO {args.helo}", None),
             (f"MAIL FROM:<{args.sender}>", None),
             *((f"RCPT TO:<{r}>", None) for r in args.rcpt), ("DATA", None),
             ("(message)", _dot_stuffed(message) + b".\r\n"), ("QUIT", None)]
    reader = client.makefile("rb")
    try:
        for shown, data in steps:
            before = len(outcomes)
            client.sendall(data if data is not None else shown.encode() + b"\r\n")
            reply = _read_reply(reader)
            print(f">>> {shown}")
            for event, outcome in outcomes[before:]:
                print(_outcome_line(event, outcome))
            print("\n".join(f"<<< {line}" for line in reply) or "<<< (connection closed)")
            if not reply or (shown == "DATA" and not reply[0].startswith("354")) or \
                    reply[-1][:3] in ("421", "221"):
                break
    finally:
        client.close()
        greenlet.join(5)
    return 0


def _loopback_pair() -> tuple[socket.socket, socket.socket]:
    """Both ends of a TCP connection on loopback, in this process (the session sets
    TCP options a socketpair does not have)."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server_sock, _ = listener.accept()
    listener.close()
    return server_sock, client


def _dot_stuffed(message: bytes) -> bytes:
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


def _read_reply(reader: Any) -> list[str]:
    lines = []
    while True:
        line = reader.readline()
        if not line:
            return lines
        lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            return lines


def _outcome_line(event: str, o: dict[str, Any]) -> str:
    if o.get("error"):
        return f"    {event}: rule {o['rule']!r} failed: {o['error']}"
    state = "matched" if o["matched"] else "not matched"
    line = f"    {event}: rule {o['rule']!r} {state} (decided by: {o['decided_by']})"
    if o["actions"]:
        line += f"; ran: {'; '.join(o['actions'])}"
    if o.get("verdict"):
        line += f"; answer: {o['verdict']}"
    return line
