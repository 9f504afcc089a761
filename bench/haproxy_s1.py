"""S1 (10 KiB messages, 50 persistent sessions, smtp-source) through a real HAProxy
with ``send-proxy-v2`` into one appliance and into two, next to S1 straight into one
appliance: what the balancer and the PROXY protocol cost, and what a second instance
gives on this machine. Each appliance has its own spool (fsync on) and
``server.workers`` (default 1). Loopback only; Debian's haproxy and Postfix's
smtp-source (``make deps-system``).

    .venv/bin/python bench/haproxy_s1.py [--messages 20000] [--sessions 50]
        [--workers 1] [--cases direct,haproxy-1,haproxy-2] [--keep]

Prints one line per case: messages per second, wall time, and the messages found in
the spools (every one must be there). The per-connection cost of parsing the PROXY
header alone is ``bench/proxy_header.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import targets  # noqa: E402
from run import KIB, SMTP_SOURCE, Scenario, smtp_source  # noqa: E402
from targets import ApplianceTarget, TargetError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: A PROXY v2 LOCAL header: how the benchmark (like HAProxy's checks) says hello.
LOCAL_HEADER = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"

HAPROXY = """\
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 5s
    timeout client 5m
    timeout server 5m
frontend smtp
    bind 127.0.0.1:{port}
    default_backend appliances
backend appliances
    balance roundrobin
{servers}
"""


class ProxiedAppliance(ApplianceTarget):
    """An appliance whose listener takes a PROXY header from 127.0.0.1."""

    def config_text(self) -> str:
        return super().config_text().replace(
            'tls_mode = "none"\n',
            'tls_mode = "none"\nproxy_protocol = "v2"\nproxy_trusted_networks = ["127.0.0.1"]\n')

    def start(self) -> None:
        with _banner_after_local_header():
            super().start()


@contextlib.contextmanager
def _banner_after_local_header():
    """targets.wait_for_banner, each probe first sending a LOCAL header."""
    original = targets.wait_for_banner

    def wait(port: int, timeout: float, alive=lambda: True) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.sendall(LOCAL_HEADER)
                    if s.recv(4) == b"220 ":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TargetError(f"no banner on port {port} within {timeout:.0f}s")

    targets.wait_for_banner = wait
    try:
        yield
    finally:
        targets.wait_for_banner = original


def start_haproxy(workdir: Path, ports: list[int]) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    port = targets.free_port()
    servers = "\n".join(f"    server a{i} 127.0.0.1:{p} send-proxy-v2"
                        for i, p in enumerate(ports))
    config = workdir / "haproxy.cfg"
    config.write_text(HAPROXY.format(port=port, servers=servers))
    proc = subprocess.Popen([binary, "-f", str(config), "-db"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        time.sleep(0.05)
    proc.kill()
    raise TargetError("haproxy did not listen within 10 s")


def run_case(case: str, scenario: Scenario, workdir: Path, args) -> dict:
    count = 1 if case == "direct" else int(case.rpartition("-")[2])
    kind = ApplianceTarget if case == "direct" else ProxiedAppliance
    executable = ROOT / ".venv" / "bin" / "smtp-appliance"
    apps = [kind(workdir / f"{case}-{i}", executable, workers=args.workers)
            for i in range(count)]
    haproxy = None
    try:
        for app in apps:
            app.start()
        port = apps[0].port
        if case != "direct":
            haproxy, port = start_haproxy(workdir, [app.port for app in apps])
        result = smtp_source(port, scenario, workdir, args.timeout)
        spooled = sum(app.accepted() or 0 for app in apps)
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(10)
        for app in apps:
            app.stop()
    ok = result["exit"] == 0 and result["completed"] == scenario.messages == spooled
    return {"case": case, "msgs_per_s": scenario.messages / result["wall_s"],
            "wall_s": result["wall_s"], "spooled": spooled, "ok": ok,
            "errors": result["errors"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cases", default="direct,haproxy-1,haproxy-2")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args(argv)
    if not Path(SMTP_SOURCE).exists():
        print(f"{SMTP_SOURCE} not found: run `make deps-system`", file=sys.stderr)
        return 2
    scenario = Scenario("S1", "10 KiB, persistent", 10 * KIB, args.sessions, args.messages,
                        True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-haproxy-"))
    failed = False
    print(f"S1 via HAProxy: {args.messages} messages of 10 KiB, {args.sessions} sessions,"
          f" workers={args.workers} per appliance")
    print(f"{'case':12} {'msgs/s':>8} {'wall s':>8} {'spooled':>8}")
    try:
        for case in args.cases.split(","):
            row = run_case(case, scenario, workdir, args)
            failed |= not row["ok"]
            print(f"{row['case']:12} {row['msgs_per_s']:8.0f} {row['wall_s']:8.1f}"
                  f" {row['spooled']:8}{'' if row['ok'] else '  FAILED ' + str(row['errors'])}",
                  flush=True)
    finally:
        if args.keep:
            print(f"work dir: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
