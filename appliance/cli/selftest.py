"""``smtp-appliance selftest HOST:PORT``: probe an SMTP server's front door, ours or
any other, and print one line per probe (docs/selftest.md)."""

from __future__ import annotations

import argparse
import socket
import sys
from collections import Counter
from typing import Any

from appliance.selftest import ERROR, FAIL, NOTE, OK, SKIPPED, Target, run_all


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "selftest", help="probe an SMTP server for smuggling, STARTTLS injection and more",
        description="Probe an SMTP server (this one or any other) and print a report. "
                    "It connects only to HOST:PORT and sends mail only to the --rcpt "
                    "addresses. Exit status 1 when a probe fails or cannot run.")
    p.add_argument("target", metavar="HOST:PORT", help="the server to probe ([::1]:25 for IPv6)")
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--starttls", action="store_true", help="upgrade with STARTTLS first")
    tls.add_argument("--implicit-tls", action="store_true", help="TLS from the first byte")
    p.add_argument("--from", dest="mail_from", required=True, metavar="ADDR",
                   help="MAIL FROM address of the probe messages")
    p.add_argument("--rcpt", nargs="+", required=True, metavar="ADDR",
                   help="recipients the probe messages go to (the server must accept them)")
    p.add_argument("--helo", default="selftest.invalid", help="EHLO name (default %(default)s)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="wait this long for a reply (default %(default)s)")
    p.add_argument("--quiet-time", type=float, default=2.0, metavar="SECONDS",
                   help="silence that means no more replies are coming (default %(default)s)")
    p.add_argument("--cafile", metavar="FILE",
                   help="check the server's certificate against this CA (default: no check)")
    return p


def parse_target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def run(args: argparse.Namespace) -> int:
    try:
        host, port = parse_target(args.target)
    except ValueError as exc:
        print(f"smtp-appliance selftest: {exc}", file=sys.stderr)
        return 2
    try:  # one line for an unreachable target, not one per probe
        socket.create_connection((host, port), timeout=args.timeout).close()
    except OSError as exc:
        print(f"smtp-appliance selftest: cannot connect to {args.target}: {exc}",
              file=sys.stderr)
        return 1
    tls = "starttls" if args.starttls else "implicit" if args.implicit_tls else "none"
    target = Target(host=host, port=port, mail_from=args.mail_from,
                    recipients=tuple(args.rcpt), tls=tls, helo=args.helo,
                    timeout=args.timeout, quiet=args.quiet_time, cafile=args.cafile)
    mode = {"none": "plain", "starttls": "STARTTLS", "implicit": "implicit TLS"}[tls]
    print(f"selftest of {args.target} ({mode})")
    counts: Counter[str] = Counter()
    for f in run_all(target):
        counts[f.status] += 1
        print(f"  {f.status:<7} {f.probe:<40} {f.detail}", flush=True)
    print(", ".join(f"{counts[s]} {s}" for s in (OK, NOTE, FAIL, SKIPPED, ERROR)))
    return 1 if counts[FAIL] or counts[ERROR] else 0
