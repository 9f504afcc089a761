"""S1 end to end: smtp-source into the appliance, the delivery service into a
private Dovecot LMTP server; messages per second counted when they are in the
mailbox. Next to it, in the same run, a private Postfix relaying the same load
to the same Dovecot over LMTP, and the appliance's S1 into the spool (the time
smtp-source took). All traffic on 127.0.0.1; needs root (Dovecot and Postfix
drop to their own users).

    .venv/bin/python bench/delivery.py                 # S1: 20000 messages, 50 sessions
    .venv/bin/python bench/delivery.py --messages 200  # a quick check that it works

Uses the test suite's private Dovecot (tests/lmtp_fixture.py) and Postfix next
hop (tests/postfix_nexthop.py), so it runs from the repository's .venv.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lmtp_fixture import DOMAIN, DovecotLmtp  # noqa: E402
from tests.peers import free_port, wait_for  # noqa: E402
from tests.postfix_nexthop import PostfixNextHop  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"


def smtp_source(port: int, messages: int, sessions: int, size: int, rcpt: str) -> float:
    """Run smtp-source (S1's flags); the seconds it took."""
    start = time.monotonic()
    subprocess.run([SMTP_SOURCE, "-4", "-c", "-d", "-s", str(sessions), "-m", str(messages),
                    "-l", str(size), "-M", "bench.localhost", "-f", "sender@bench.example",
                    "-t", rcpt, "-S", "bench S1 delivery", f"127.0.0.1:{port}"],
                   check=True, stdout=subprocess.DEVNULL, timeout=3600)
    return time.monotonic() - start


def in_mailbox(dovecot: DovecotLmtp, user: str) -> int:
    new, cur = dovecot.maildir(user) / "new", dovecot.maildir(user) / "cur"
    return sum(len(os.listdir(d)) for d in (new, cur) if d.is_dir())


def wait_delivered(dovecot: DovecotLmtp, user: str, count: int, start: float,
                   timeout: float) -> float:
    """Seconds from ``start`` until ``count`` messages are in the user's mailbox."""
    deadline = time.monotonic() + timeout
    while in_mailbox(dovecot, user) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{user}: {in_mailbox(dovecot, user)} of {count} delivered "
                               f"after {timeout:.0f}s")
        time.sleep(0.05)
    return time.monotonic() - start


def run_appliance(work: Path, dovecot: DovecotLmtp, args) -> dict:
    port = free_port()
    conf = work / "conf.d"
    conf.mkdir()
    (conf / "00-bench.toml").write_text(f"""
[server]
hostname = "bench.localhost"
workers = {args.workers}
[listeners.mta]
address = "127.0.0.1"
port = {port}
[limits]
max_messages_per_session = 0
[queue]
directory = "{work / 'spool'}"
[logging]
level = "warning"
[delivery]
default = "dovecot"
[delivery.next_hops.dovecot]
protocol = "lmtp"
address = "unix:{dovecot.unix_socket}"
parallelism = {args.parallelism}
""")
    binary = ROOT / ".venv" / "bin" / "smtp-appliance"
    with open(work / "appliance.log", "wb") as log:
        proc = subprocess.Popen([str(binary), "--config-dir", str(conf), "serve"],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _listening(port), timeout=30)
        start = time.monotonic()
        accepted = smtp_source(port, args.messages, args.sessions, args.size, f"alice@{DOMAIN}")
        delivered = wait_delivered(dovecot, "alice", args.messages, start, args.timeout)
    finally:
        proc.terminate()
        proc.wait(60)
    return {"accepted_s": accepted, "delivered_s": delivered}


def run_postfix(dovecot: DovecotLmtp, args) -> dict:
    postfix = PostfixNextHop(dovecot.unix_socket, DOMAIN).start()
    try:
        wait_for(lambda: _listening(postfix.port), timeout=30)
        start = time.monotonic()
        accepted = smtp_source(postfix.port, args.messages, args.sessions, args.size,
                               f"bob@{DOMAIN}")
        delivered = wait_delivered(dovecot, "bob", args.messages, start, args.timeout)
    finally:
        postfix.stop()
    return {"accepted_s": accepted, "delivered_s": delivered}


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--size", type=int, default=10240)
    p.add_argument("--workers", type=int, default=0, help="the appliance's [server] workers")
    p.add_argument("--parallelism", type=int, default=20,
                   help="the appliance's LMTP connections (Postfix's default concurrency: 20)")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/delivery.py needs root (private Dovecot and Postfix)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-delivery-", dir="/tmp"))
    dovecot = DovecotLmtp().start()
    results = {}
    try:
        results["appliance"] = run_appliance(work, dovecot, args)
        results["postfix"] = run_postfix(dovecot, args)
    finally:
        dovecot.cleanup()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    n = args.messages
    print(f"S1 end to end: {n} messages of {args.size} octets, {args.sessions} sessions, "
          f"into Dovecot LMTP")
    print(f"{'server':<10} {'accepted s':>10} {'accepted msg/s':>15} "
          f"{'delivered s':>11} {'delivered msg/s':>16}")
    for name, r in results.items():
        print(f"{name:<10} {r['accepted_s']:>10.2f} {n / r['accepted_s']:>15.1f} "
              f"{r['delivered_s']:>11.2f} {n / r['delivered_s']:>16.1f}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "delivery-latest.json").write_text(json.dumps({"args": vars(args), **results},
                                                         indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
