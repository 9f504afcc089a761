"""``smtp-appliance report --since 24h``: a summary of the log, like pflogsumm's.

It reads the appliance's own log file (``[logging] file``, or ``--log FILE``, a
``.gz`` too; ``-`` is stdin) in either format, text or JSON lines, and counts its
decision lines: ``queued`` (messages, bytes, senders, recipients, client hosts),
``reply`` (refusals by reason; ``replies_not_logged`` adds the repeats a session did
not log one by one), the delivery side's outcomes, and all of these per hour.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

#: TextFormatter's line: "2026-01-31 12:00:00,123 info event key=value ..."
_TEXT = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) (\S+)(.*)")
_FIELD = re.compile(r' (\w+)=("(?:[^"\\]|\\.)*"|\S*)')
DELIVERY = ("delivered", "deferred", "bounced", "expired", "dsn_sent", "released")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    r = sub.add_parser("report", help="a summary of the log (messages, senders, "
                                      "refusals, per hour), like pflogsumm")
    r.add_argument("--since", default="24h", metavar="DURATION",
                   help='how far back, e.g. "24h", "7d", "90m" (default 24h)')
    r.add_argument("--log", action="append", metavar="FILE",
                   help="log file to read (text or JSON lines; .gz too; - for stdin); "
                        "repeatable; default [logging] file")
    r.add_argument("--top", type=int, default=10, metavar="N",
                   help="lines in each top list (default 10)")
    r.add_argument("--json", action="store_true", help="the summary as JSON")
    return r


def run(args: argparse.Namespace, load: Callable[[], Any]) -> int:
    from appliance.config.units import Duration

    try:
        since = float(Duration(args.since))
    except ValueError as exc:
        print(f"smtp-appliance report: --since: {exc}", file=sys.stderr)
        return 2
    files = args.log
    if not files:
        logging = load().logging
        if "file" not in logging.destination or not logging.file:
            print("smtp-appliance report: [logging] destination has no file: name the log "
                  "with --log FILE", file=sys.stderr)
            return 1
        files = [logging.file]
    now = time.time()
    summary = Summary(now - since, now)
    try:
        for name in files:
            with _open(name) as f:
                summary.add(records(f))
    except OSError as exc:
        print(f"smtp-appliance report: {exc}", file=sys.stderr)
        return 1
    result = summary.result(args.top)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(render(result, args.since, files))
    return 0


def _open(name: str) -> TextIO:
    if name == "-":
        return sys.stdin
    if name.endswith(".gz"):
        return gzip.open(name, "rt", encoding="utf-8", errors="replace")
    return open(name, encoding="utf-8", errors="replace")


def records(lines: Iterable[str]) -> Iterator[tuple[float, str, dict[str, Any]]]:
    """(time, event, fields) of each line that is an event, text or JSON."""
    for line in lines:
        if line.startswith("{"):
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and "event" in r and "time" in r:
                yield float(r["time"]), r["event"], r
            continue
        m = _TEXT.match(line.rstrip("\n"))
        if not m:
            continue
        when = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
        fields = {}
        for key, value in _FIELD.findall(m.group(5)):
            if value.startswith('"'):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            fields[key] = value
        yield when + int(m.group(2)) / 1000, m.group(4), fields


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class Summary:
    """The counts of the events between ``start`` and ``end`` (epoch seconds)."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.received = self.bytes = self.recipients = self.refused = self.connections = 0
        self.senders: Counter[str] = Counter()
        self.sender_bytes: Counter[str] = Counter()
        self.rcpts: Counter[str] = Counter()
        self.clients: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.deliveries: Counter[str] = Counter()
        self.hours: dict[str, Counter[str]] = {}
        self.first: float | None = None
        self.last: float | None = None

    def add(self, found: Iterable[tuple[float, str, dict[str, Any]]]) -> None:
        for when, event, f in found:
            if not self.start <= when <= self.end:
                continue
            counted = self._count(event, f)
            if counted:
                hour = time.strftime("%Y-%m-%d %H:00", time.localtime(when))
                self.hours.setdefault(hour, Counter())[counted] += (
                    _int(f.get("count")) if event == "replies_not_logged" else 1)
                if counted == "received":
                    self.hours[hour]["bytes"] += _int(f.get("size"))
                self.first = when if self.first is None else min(self.first, when)
                self.last = when if self.last is None else max(self.last, when)

    def _count(self, event: str, f: dict[str, Any]) -> str:
        """Count one event; its per-hour column ("" for none)."""
        if event == "connect":
            self.connections += 1
            return ""
        if event == "queued":
            size = _int(f.get("size"))
            self.received += 1
            self.bytes += size
            sender = f.get("mail_from") or "<>"
            self.senders[sender] += 1
            self.sender_bytes[sender] += size
            rcpts = [r for r in str(f.get("rcpt_to", "")).split(",") if r]
            self.recipients += len(rcpts)
            self.rcpts.update(rcpts)
            self.clients[str(f.get("client", "?"))] += 1
            return "received"
        if event in ("reply", "replies_not_logged"):
            times = _int(f.get("count")) if event == "replies_not_logged" else 1
            self.refused += times
            reason = f"{f.get('code', '')} {f.get('enhanced', '')} {f.get('text', '')}"
            self.reasons[" ".join(reason.split())] += times
            return "refused"
        if event in DELIVERY:
            self.deliveries[event] += 1
            return event
        return ""

    def result(self, top: int) -> dict[str, Any]:
        return {
            "from": _stamp(self.first), "to": _stamp(self.last),
            "connections": self.connections, "received": self.received,
            "bytes": self.bytes, "recipients": self.recipients, "refused": self.refused,
            "deliveries": dict(sorted(self.deliveries.items())),
            "senders": [[s, n, self.sender_bytes[s]] for s, n in _top(self.senders, top)],
            "recipients_top": _top(self.rcpts, top),
            "clients": _top(self.clients, top),
            "refusals": _top(self.reasons, top),
            "hours": {h: dict(c) for h, c in sorted(self.hours.items())},
        }


def _top(counter: Counter[str], n: int) -> list[list[Any]]:
    """The ``n`` most counted, most first, ties by name (a stable report)."""
    return [[k, v] for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def _stamp(when: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if when else "-"


def render(r: dict[str, Any], since: str, files: list[str]) -> str:
    out = [f"smtp-appliance report, last {since}, from {', '.join(files)}",
           f"events from {r['from']} to {r['to']}", "", "Grand totals"]
    for label, key in (("connections", "connections"), ("messages received", "received"),
                       ("bytes received", "bytes"), ("recipients", "recipients"),
                       ("refusals", "refused")):
        out.append(f"  {r[key]:>10}  {label}")
    for outcome, n in r["deliveries"].items():
        out.append(f"  {n:>10}  {outcome}")

    def section(title: str, rows: list[list[Any]]) -> None:
        out.extend(["", title])
        out.extend(f"  {row[1]:>10}  " + (f"{row[2]:>12}  " if len(row) > 2 else "") + row[0]
                   for row in rows)
        if not rows:
            out.append("  none")

    section("Top senders (messages, bytes)", r["senders"])
    section("Top recipients", r["recipients_top"])
    section("Top client hosts (messages)", r["clients"])
    section("Refusals by reason", r["refusals"])
    out.extend(["", "Per hour", f"  {'hour':<16} {'received':>9} {'bytes':>12} {'refused':>8}"])
    for hour, c in r["hours"].items():
        out.append(f"  {hour:<16} {c.get('received', 0):>9} {c.get('bytes', 0):>12} "
                   f"{c.get('refused', 0):>8}")
    return "\n".join(out)
