#!/usr/bin/env python3
"""Slot exhaustion: a flood of slow clients, and how many legitimate sessions are
still served meanwhile (see bench/README.md, "Slot exhaustion").

    .venv/bin/python bench/slots.py [--flood 3000] [--sources 30] [--legit 100]
                                    [--max-sessions N] [--no-exempt] [--config F.toml]

Starts the appliance (bench/targets.py) on a free port of 127.0.0.1, then opens
``--flood`` connections from ``--sources`` addresses 127.0.0.1, 127.0.0.2, ... that
each send one byte every ``--interval`` seconds (an EHLO that never ends) and, when
the server closes one, open it again after ``--reconnect`` seconds. After
``--warmup`` seconds it runs ``--legit`` sessions, one after another, evenly spread
over ``--duration`` seconds, from 127.0.1.1 (another /24): connect, EHLO, MAIL,
RCPT, DATA, QUIT. A session is served when every reply is the expected one. Prints
the share served and exits 0 when it is at least ``--want`` percent.

Standard library only; traffic to 127.0.0.0/8 only; bounded in connections and
time (about warmup + duration + 15 s), and it stops the appliance by itself.
"""

from __future__ import annotations

import argparse
import errno
import json
import resource
import selectors
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from targets import LOOPBACK, ApplianceTarget, TargetError, read_reply

REPO = Path(__file__).resolve().parent.parent
SLOW_LINE = b"EHLO " + b"s" * 10000  # never ends: one byte per interval


class Flood(threading.Thread):
    """``count`` slow connections driven by one thread (epoll): each sends one byte
    of :data:`SLOW_LINE` every ``interval`` seconds; one the server closes is opened
    again after ``reconnect`` seconds (``None``: not)."""

    def __init__(self, port: int, count: int, sources: list[str], interval: float,
                 reconnect: float | None) -> None:
        super().__init__(daemon=True)
        self.port, self.count, self.sources = port, count, sources
        self.interval, self.reconnect = interval, reconnect
        self.sel = selectors.DefaultSelector()
        self.stopping = threading.Event()
        self.open_now = 0
        self.connects = 0
        self.closed_by_server: Counter[str] = Counter()
        self._due: list[tuple[float, int]] = []  # (when, index) to (re)connect
        self._socks: dict[int, tuple[socket.socket, int, float]] = {}  # index: sock, sent, next

    def run(self) -> None:
        self._due = [(0.0, i) for i in range(self.count)]
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                self._connect_due(now)
                self._trickle(now)
                for key, _mask in self.sel.select(timeout=0.1):
                    self._readable(key.data)
        finally:
            for sock, _sent, _next in self._socks.values():
                sock.close()
            self.sel.close()

    def _connect_due(self, now: float) -> None:
        keep, started = [], 0
        for when, i in self._due:
            if when > now or started >= 200:  # at most 200 connects per turn
                keep.append((when, i))
                continue
            started += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.bind((self.sources[i % len(self.sources)], 0))
            except OSError:
                sock.close()
                keep.append((now + 1.0, i))
                continue
            err = sock.connect_ex((LOOPBACK, self.port))
            if err not in (0, errno.EINPROGRESS):
                sock.close()
                keep.append((now + 1.0, i))
                continue
            self.connects += 1
            self.open_now += 1
            self._socks[i] = (sock, 0, now + self.interval)
            self.sel.register(sock, selectors.EVENT_READ, i)
        self._due = keep

    def _trickle(self, now: float) -> None:
        for i, (sock, sent, when) in list(self._socks.items()):
            if when <= now:
                try:
                    sock.send(SLOW_LINE[sent:sent + 1])
                except OSError:
                    self._lost(i, "send failed")
                    continue
                self._socks[i] = (sock, sent + 1, now + self.interval)

    def _readable(self, i: int) -> None:
        sock = self._socks[i][0]
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(i, exc.strerror or str(exc))
            return
        if not data:
            self._lost(i, "closed")
        elif data.startswith(b"421"):
            self.closed_by_server[data[:9].decode(errors="replace")] += 1

    def _lost(self, i: int, why: str) -> None:
        sock = self._socks.pop(i)[0]
        self.sel.unregister(sock)
        sock.close()
        self.open_now -= 1
        self.closed_by_server[why] += 1
        if self.reconnect is not None:
            self._due.append((time.monotonic() + self.reconnect, i))


def legit_session(port: int, source: str, timeout: float) -> str:
    """One whole transaction; "" when served, else what went wrong."""
    steps = [(None, 220), (b"EHLO legit.example\r\n", 250),
             (b"MAIL FROM:<sender@legit.example>\r\n", 250),
             (b"RCPT TO:<rcpt@bench.example>\r\n", 250), (b"DATA\r\n", 354),
             (b"Subject: slots\r\n\r\nhello\r\n.\r\n", 250), (b"QUIT\r\n", 221)]
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout,
                                      source_address=(source, 0)) as s:
            for line, want in steps:
                if line:
                    s.sendall(line)
                code, raw = read_reply(s)
                if code != want:
                    return raw.decode(errors="replace").strip()[:60]
    except (OSError, ConnectionError) as exc:
        return f"{type(exc).__name__}: {exc}"[:60]
    return ""


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flood", type=int, default=3000, help="slow connections (default 3000)")
    p.add_argument("--sources", type=int, default=30,
                   help="flood source addresses 127.0.0.1... (default 30, at most 250)")
    p.add_argument("--interval", type=float, default=10.0,
                   help="seconds between two bytes of a slow client (default 10)")
    p.add_argument("--reconnect", type=float, default=1.0,
                   help="seconds before a closed slow connection is opened again (default 1;"
                        " negative: never)")
    p.add_argument("--legit", type=int, default=100, help="legitimate sessions (default 100)")
    p.add_argument("--warmup", type=float, default=20.0,
                   help="seconds of flood before the first legitimate session (default 20)")
    p.add_argument("--duration", type=float, default=60.0,
                   help="seconds the legitimate sessions are spread over (default 60)")
    p.add_argument("--want", type=float, default=95.0,
                   help="percent served for exit status 0 (default 95)")
    p.add_argument("--max-sessions", type=int, default=10000,
                   help="the appliance's server.max_sessions (default 10000, as shipped)")
    p.add_argument("--workers", type=int, default=1, help="the appliance's server.workers")
    p.add_argument("--no-exempt", action="store_true",
                   help="[flow] exempt_networks = []: loopback is limited like any client")
    p.add_argument("--config", action="append", type=Path, default=[], metavar="TOML",
                   help="extra config file for the appliance (repeatable)")
    p.add_argument("--appliance-bin", type=Path,
                   default=REPO / ".venv" / "bin" / "smtp-appliance")
    p.add_argument("--keep", action="store_true", help="keep the work dir (config, log)")
    args = p.parse_args(argv)
    if not 1 <= args.sources <= 250:
        p.error("--sources must be from 1 to 250")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit = raise_nofile(2 * args.flood + 2 * args.max_sessions + 1000)
    if limit < 2 * args.flood + 500:
        print(f"file descriptor limit {limit} is too low for --flood {args.flood}",
              file=sys.stderr)
        return 2
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="slots-", dir=REPO / "bench" / "results"))
    extra = list(args.config)
    if args.no_exempt:
        (work / "no-exempt.toml").write_text("[flow]\nexempt_networks = []\n")
        extra.append(work / "no-exempt.toml")
    target = ApplianceTarget(work, args.appliance_bin, workers=args.workers,
                             max_sessions=args.max_sessions, extra_config=extra)
    flood = None
    try:
        target.start()
        sources = [f"127.0.0.{i + 1}" for i in range(args.sources)]
        flood = Flood(target.port, args.flood, sources, args.interval,
                      None if args.reconnect < 0 else args.reconnect)
        flood.start()
        time.sleep(args.warmup)
        open_at_start = flood.open_now
        failures: Counter[str] = Counter()
        served, t0 = 0, time.monotonic()
        for n in range(args.legit):
            time.sleep(max(0.0, t0 + n * args.duration / args.legit - time.monotonic()))
            why = legit_session(target.port, "127.0.1.1", timeout=30.0)
            served += not why
            if why:
                failures[why] += 1
        result = {
            "flood": args.flood, "sources": args.sources, "interval_s": args.interval,
            "reconnect_s": args.reconnect, "max_sessions": args.max_sessions,
            "workers": args.workers, "loopback_exempt": not args.no_exempt,
            "extra_config": [str(c) for c in args.config],
            "flood_open_at_first_legit": open_at_start,
            "flood_connects": flood.connects,
            "flood_closed_by_server": dict(flood.closed_by_server.most_common(6)),
            "legit": args.legit, "served": served,
            "served_percent": round(100.0 * served / args.legit, 1),
            "legit_failures": dict(failures.most_common(5)),
        }
        print(json.dumps(result, indent=2))
        return 0 if result["served_percent"] >= args.want else 1
    except TargetError as exc:
        print(f"could not start the appliance: {exc}", file=sys.stderr)
        return 2
    finally:
        if flood is not None:
            flood.stopping.set()
            flood.join(10)
        target.stop()
        if args.keep:
            print(f"work dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
