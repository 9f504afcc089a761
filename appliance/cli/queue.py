"""``smtp-appliance queue``: look at the spool and act on it (docs/spool.md).

``list`` and ``show`` give each recipient's delivery state; ``release``, ``retry``
and ``flush`` append a record to a message's state file, which the delivery
service notices at its next scan; ``delete`` removes a message.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance import logs
from appliance.config import ConfigError
from appliance.delivery.state import MessageState, RecipientState, fold
from appliance.spool import QueuedMessage, Spool

ACTIONS_WITH_ID = {
    "show": "the envelope, each recipient's state and the decision trace",
    "delete": "remove the message",
    "release": "release a message held in quarantine for delivery",
    "retry": "try the message's deferred recipients now",
}


def add_parser(sub, spool_help: str):
    q = sub.add_parser("queue", help="inspect the spool and act on it (list, show, release, "
                                     "retry, flush, delete, count)")
    q.add_argument("--spool", metavar="DIR", help=spool_help)
    qs = q.add_subparsers(dest="action", required=True)
    ql = qs.add_parser("list", help="every message, with its recipients' states")
    ql.add_argument("--json", action="store_true")
    qs.add_parser("count", help="how many messages are queued")
    qs.add_parser("flush", help="try every deferred recipient now")
    for name, text in ACTIONS_WITH_ID.items():
        qs.add_parser(name, help=text).add_argument("queue_id")
    return qs


def run(args, load: Callable[[], Any]) -> int:
    config = None
    if args.spool_sub or args.spool:
        spool = Spool(args.spool_sub or args.spool)
    else:
        try:
            config = load()
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        spool = Spool(config.queue.directory, fsync=config.queue.fsync)
    if not spool.queue.is_dir():
        print(f"no spool at {spool.directory}", file=sys.stderr)
        return 1
    if args.action == "count":
        print(spool.count())
        return 0
    if args.action == "list":
        return _list(spool, args.json)
    if args.action == "flush":
        ids = spool.ids()
        for qid in ids:
            _append(spool, qid, "retry")
        print(f"flushed {len(ids)} message(s)")
        return 0
    try:
        if args.action == "delete":
            spool.delete(args.queue_id)
            print(f"deleted {args.queue_id}")
            return 0
        m = spool.get(args.queue_id)
        if args.action == "show":
            _show(m, state_of(spool, m))
            return 0
        if args.action == "release" and not m.envelope.get("quarantine"):
            print(f"{args.queue_id} is not in quarantine", file=sys.stderr)
            return 1
        _append(spool, args.queue_id, "released" if args.action == "release" else "retry")
    except KeyError:
        print(f"no message {args.queue_id} in {spool.queue}", file=sys.stderr)
        return 1
    if args.action == "release":
        if config is not None:
            logs.setup(config.logging)
        logs.event("released", queue_id=args.queue_id, reason=m.envelope["quarantine"])
    print(f"{args.action} {args.queue_id}: the delivery service takes it at its next scan")
    return 0


def _append(spool: Spool, qid: str, event: str) -> None:
    spool.append_state(qid, [{"event": event, "at": round(time.time(), 3)}])


def state_of(spool: Spool, m: QueuedMessage) -> MessageState:
    return fold(m.envelope, spool.read_state(m.queue_id))


def describe(r: RecipientState) -> str:
    """done, bounced or deferred with reason, attempts and next try; or queued."""
    if r.state == "queued":
        return "queued"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.next_try))
    extra = f", next try {when}" if r.state == "deferred" else ""
    relay = f" via {r.relay}" if r.relay else ""
    return f"{r.state}{relay} (attempts {r.attempts}{extra}): {r.reason}"


def _list(spool: Spool, as_json: bool) -> int:
    items = [(m, state_of(spool, m)) for m in spool]
    if as_json:
        print(json.dumps([{"queue_id": m.queue_id, "size": m.size,
                           "received_at": m.envelope.get("received_at"),
                           "mail_from": m.envelope["mail_from"]["address"],
                           "recipients": [r["address"] for r in m.envelope["recipients"]],
                           "states": [_state_json(r) for r in st.recipients],
                           "quarantine": m.envelope.get("quarantine"),
                           "released": st.released}
                          for m, st in items], indent=1))
        return 0
    for m, st in items:
        rcpts = ", ".join(f"<{r['address']}>" for r in m.envelope["recipients"])
        held = (f"  [quarantine: {m.envelope['quarantine']}]"
                if m.envelope.get("quarantine") and not st.released else "")
        print(f"{m.queue_id}  {m.size:>9}  {m.envelope.get('received_at', '')}  "
              f"<{m.envelope['mail_from']['address']}> -> {rcpts}{held}")
        for r in st.recipients:
            if r.state != "queued":
                print(f"    <{r.address}> {describe(r)}")
    print(f"-- {len(items)} message(s)")
    return 0


def _state_json(r: RecipientState) -> dict[str, Any]:
    return {"address": r.address, "state": r.state, "attempts": r.attempts,
            "next_try": r.next_try or None, "reason": r.reason, "status": r.status,
            "relay": r.relay}


def _show(m: QueuedMessage, state: MessageState) -> None:
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
    for r, st in zip(env["recipients"], state.recipients, strict=True):
        rp = " ".join(f"{k}={v}" for k, v in r["params"].items())
        print(f"rcpt to:     <{r['address']}> folder={r['folder']}"
              f"{' relay=' + r['relay_host'] if r['relay_host'] else ''} {rp}".rstrip())
        print(f"   state:    {describe(st)}")
    print(f"size:        {m.size}")
    if env.get("delay_until"):
        print(f"delay until: {env['delay_until']}")
    if env.get("quarantine"):
        released = " (released)" if state.released else ""
        print(f"quarantine:  {env['quarantine']}{released}")
    print("decision trace:")
    if all(e.get("action") == "continue" for e in env.get("trace", [])):
        print("  (no plugin decided anything: accepted by default)")
    for e in env.get("trace", []):
        code = f" {e['code']} {e['enhanced'] or ''}".rstrip() if e.get("code") else ""
        text = f" {e['text']!r}" if e.get("text") else ""
        mode = f" ({e['mode']})" if e.get("mode", "enforce") != "enforce" else ""
        who = f"{e['plugin']}:{e['rule']}" if e.get("rule") else e["plugin"]
        print(f"  {e['event']:<18} {who:<16} {e['action']}{code}{text}{mode}")
    print(f"message file: {Path(m.message_path)}")
