"""``make soak``: the real server under mixed load for a long time, its memory and
file descriptors sampled; they must stay flat (docs/selftest.md).

Load, all to 127.0.0.1 and all stopping at the deadline: Postfix's smtp-source
(good clients: small messages, several sessions; large messages of 4 MB) and
threads of this script (slow clients that drip their commands, garbage and
hang-ups, AUTH with a wrong password after STARTTLS). A consumer empties
``queue/`` as a next stage would. Every ``--interval`` seconds the RSS and the open
file descriptors of each server process are sampled. At the end each process's
figures are compared with its first sample (taken after one interval of load):
RSS may grow by at most ``max(RSS_TOLERANCE * baseline, RSS_SLACK_MIB)``, open fds
by at most FD_SLACK (sessions in flight come and go). Exit status 1 otherwise.

    python -m tests.soak --seconds 1800 [--interval 60]
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from appliance.users import make_entry, write_users
from bench.procstat import memory_of, tree_pids
from tests.integration.conftest import Appliance, read_reply

SMTP_SOURCE = "/usr/sbin/smtp-source"
RSS_TOLERANCE = 0.10
RSS_SLACK_MIB = 16
FD_SLACK = 32
PASSWORD = "soak-secret-1"


class Load:
    """Runs the load generators until ``deadline``; counts what each saw."""

    def __init__(self, port: int, deadline: float) -> None:
        self.port, self.deadline = port, deadline
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def spawn(self, name: str, fn, *args) -> None:
        def loop() -> None:
            while time.monotonic() < self.deadline:
                try:
                    fn(*args)
                except Exception as exc:  # noqa: BLE001 - counted, the soak goes on
                    self.count(f"{name} error {type(exc).__name__}")
        t = threading.Thread(target=loop, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=120)

    # --- the generators ---------------------------------------------------------------

    def smtp_source(self, name: str, *args: str) -> None:
        left = self.deadline - time.monotonic()
        if left <= 1:
            time.sleep(max(left, 0))
            return
        res = subprocess.run([SMTP_SOURCE, *args, "-f", "soak@client.example",
                              "-t", "rcpt@example.net", f"127.0.0.1:{self.port}"],
                             capture_output=True, timeout=max(left, 5) + 60)
        self.count(f"{name} {'ok' if res.returncode == 0 else 'failed'}")

    def slow_client(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            read_reply(s)
            for line in (b"EHLO slow.example\r\n", b"MAIL FROM:<slow@client.example>\r\n",
                         b"RCPT TO:<rcpt@example.net>\r\n", b"DATA\r\n",
                         b"Subject: slow\r\n\r\ndrip\r\n.\r\n", b"QUIT\r\n"):
                for i in range(len(line)):
                    s.sendall(line[i:i + 1])
                    time.sleep(0.05)
                read_reply(s)
        self.count("slow ok")

    def garbage(self, rng: random.Random) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            read_reply(s)
            try:
                s.sendall(rng.randbytes(rng.randint(1, 4096)))
                if rng.random() < 0.5:
                    s.sendall(b"\r\nQUIT\r\n")
                    s.settimeout(5)
                    while s.recv(65536):
                        pass
            except ConnectionResetError:
                self.count("garbage cut off by the server")
                return
        self.count("garbage sent")
        time.sleep(0.05)

    def auth_failure(self, context: ssl.SSLContext) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as c:
            c.ehlo("auth.example")
            c.starttls(context=context)
            c.ehlo("auth.example")
            token = base64.b64encode(b"\0alice\0wrong-password").decode()
            code, _ = c.docmd("AUTH", f"PLAIN {token}")
        self.count(f"auth {code}")


def sample(root: int) -> dict[int, tuple[int, int]]:
    """pid -> (RSS KiB, open fds) for the server and its workers."""
    out = {}
    for pid in tree_pids(root):
        try:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
        out[pid] = (memory_of([pid]).rss_kib, fds)
    return out


def consume(spool: Path) -> None:
    """A next stage: take committed messages out (envelope first, docs/spool.md)."""
    queue = spool / "queue"
    for env in queue.glob("*.json"):
        env.unlink(missing_ok=True)
        env.with_suffix(".msg").unlink(missing_ok=True)


def baseline(samples: list[tuple[float, dict[int, tuple[int, int]]]]
             ) -> dict[int, tuple[int, int]]:
    """Per process, the smallest figures of the first half of the run after its first
    interval (the warm-up): a spike (a 4 MB message in memory) is not a baseline.
    The last sample, taken once the load has stopped, is compared with it."""
    early = [s for _, s in samples[1:max(2, len(samples) // 2)]] or [samples[0][1]]
    pids = set.intersection(*(set(s) for s in early))
    return {pid: (min(s[pid][0] for s in early), min(s[pid][1] for s in early))
            for pid in pids}


def judge(first: dict[int, tuple[int, int]], last: dict[int, tuple[int, int]]) -> list[str]:
    problems = []
    for pid, (rss0, fd0) in first.items():
        if pid not in last:
            problems.append(f"process {pid} is gone")
            continue
        rss, fds = last[pid]
        allowed = max(rss0 * RSS_TOLERANCE, RSS_SLACK_MIB * 1024)
        if rss - rss0 > allowed:
            problems.append(f"process {pid}: RSS {rss0 / 1024:.1f} -> {rss / 1024:.1f} MiB "
                            f"(more than {allowed / 1024:.1f} MiB growth)")
        if fds - fd0 > FD_SLACK:
            problems.append(f"process {pid}: open fds {fd0} -> {fds} (more than {FD_SLACK})")
    return problems


def _certs(directory: Path) -> tuple[Path, Path, ssl.SSLContext]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = False
    return cert_path, key_path, context


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1800)
    ap.add_argument("--interval", type=float, default=60)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    if not Path(SMTP_SOURCE).exists():
        print(f"{SMTP_SOURCE} not found: run `make deps-system`", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="soak-"))
    cert, key, context = _certs(root)
    users = root / "users.toml"
    write_users(users, {"alice": make_entry("alice", PASSWORD, ["PLAIN"], "mx.test.example")})
    app = Appliance(root, f"""
[server]
workers = {args.workers}
[logging]
level = "warning"
[auth]
users_file = "{users}"
failure_delay = "0.2s"
""", {"mta": {"tls_mode": "starttls"}}, (cert, key)).start()
    print(f"soak: {args.seconds:.0f}s against pid {app.proc.pid} on port {app.port}, "
          f"sampling every {args.interval:.0f}s (work dir {root})", flush=True)
    deadline = time.monotonic() + args.seconds
    load = Load(app.port, deadline)
    # one client sends many messages per connection (-d), the other one each
    load.spawn("smtp-source small", load.smtp_source, "small", "-s", "4", "-m", "200",
               "-l", "2000", "-d")
    load.spawn("smtp-source small 1", load.smtp_source, "small", "-s", "2", "-m", "50",
               "-l", "2000")
    load.spawn("smtp-source large", load.smtp_source, "large", "-s", "1", "-m", "2",
               "-l", "4000000")
    load.spawn("slow", load.slow_client)
    load.spawn("garbage", load.garbage, random.Random(1))
    load.spawn("auth", load.auth_failure, context)
    samples: list[tuple[float, dict[int, tuple[int, int]]]] = []
    start = time.monotonic()
    next_sample = start
    try:
        while time.monotonic() < deadline:
            consume(app.spool)
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic() - start, sample(app.proc.pid)))
                t, s = samples[-1]
                print(f"  t={t:6.0f}s  " + "  ".join(
                    f"pid {pid}: {rss / 1024:.1f} MiB {fds} fds" for pid, (rss, fds)
                    in sorted(s.items())), flush=True)
                next_sample += args.interval
            time.sleep(1)
        load.join()
        samples.append((time.monotonic() - start, sample(app.proc.pid)))
    finally:
        alive = app.proc.poll() is None
        app.stop()
    print("  end      " + "  ".join(f"pid {pid}: {rss / 1024:.1f} MiB {fds} fds"
                                     for pid, (rss, fds) in sorted(samples[-1][1].items())))
    print("load: " + ", ".join(f"{k} {v}" for k, v in sorted(load.counts.items())))
    problems = judge(baseline(samples), samples[-1][1])
    if not alive:
        problems.append("the server died")
    if not any(k.startswith("small ok") for k in load.counts):
        problems.append("no smtp-source run succeeded")
    for p in problems:
        print(f"FAIL: {p}")
    print("soak: " + ("FAILED" if problems else "flat: RSS and fds within tolerance "
                      f"(RSS +max({RSS_TOLERANCE:.0%}, {RSS_SLACK_MIB} MiB), fds +{FD_SLACK})"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
