"""A private, real HAProxy (Debian's) in front of appliances: TCP mode, round robin,
the PROXY protocol to the servers (``send-proxy-v2`` or ``send-proxy``), SMTP health
checks (``option smtpchk``, sent with a PROXY LOCAL header: ``check-send-proxy``), and
its stats socket to see which servers it has taken out. Foreground (``-db``), on a
free loopback port; stopped at the end."""

from __future__ import annotations

import csv
import io
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.peers import free_port, stop_process

CONFIG = """\
global
    maxconn 500
    stats socket {stats} mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # a server's death: the client's connection attempt goes to another one
    retries 3
    option redispatch

frontend smtp
    bind 127.0.0.1:{port}
    default_backend appliances

backend appliances
    balance roundrobin
    option smtpchk EHLO haproxy.test
    default-server inter 300ms fastinter 200ms downinter 500ms fall 2 rise 2 check-send-proxy
{servers}
"""


class HAProxy:
    def __init__(self, directory: Path, servers: dict[str, int], send_proxy: str) -> None:
        self.directory = directory
        self.port = free_port()
        # a unix socket path must stay short (108 bytes): not under a deep tmp_path
        self._short = Path(tempfile.mkdtemp(prefix="haproxy-"))
        self.stats = self._short / "stats"
        self.config = directory / "haproxy.cfg"
        lines = [f"    server {name} 127.0.0.1:{port} check {send_proxy}"
                 for name, port in servers.items()]
        directory.mkdir(parents=True, exist_ok=True)
        self.config.write_text(CONFIG.format(stats=self.stats, port=self.port,
                                             servers="\n".join(lines)))
        self.log = directory / "haproxy.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> HAProxy:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            pytest.fail("haproxy is not installed: run `make deps-system`")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([binary, "-f", str(self.config), "-db"],
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"haproxy exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        pytest.fail("haproxy did not listen within 10 s")

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats))
            s.sendall(line.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def states(self) -> dict[str, str]:
        """Server name -> "UP", "DOWN", ... as the health checks see it."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r["status"] for r in rows
                if r["pxname"] == "appliances" and r["svname"] not in ("BACKEND", "FRONTEND")}

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        shutil.rmtree(self._short, ignore_errors=True)
