"""Fixtures that run the real appliance (``python -m appliance serve``) on
loopback ports with a config dir written by the test, and talk to it with real
clients (smtplib, swaks, raw sockets)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.peers import free_port

ROOT = Path(__file__).resolve().parents[2]


def read_reply(sock: socket.socket, timeout: float = 10) -> bytes:
    """Read one complete (possibly multi-line) SMTP reply."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) >= 2 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" " and \
                data.endswith(b"\r\n"):
            return data


class Appliance:
    """A running server process and what tests need to know about it."""

    def __init__(self, root: Path, extra_config: str, listeners: dict[str, dict],
                 certs: tuple[Path, Path] | None) -> None:
        self.root = root
        self.config_dir = root / "conf.d"
        self.spool = root / "spool"
        self.log_path = root / "server.log"
        self.ports: dict[str, int] = {}
        self.config_dir.mkdir(parents=True, exist_ok=True)
        base = [
            "[server]",
            'hostname = "mx.test.example"',
            'graceful_timeout = "5s"',
            "[queue]",
            f'directory = "{self.spool}"',
            "[logging]",
            'level = "debug"',
        ]
        if certs:
            base += ["[tls]", f'certificate = "{certs[0]}"', f'key = "{certs[1]}"']
        for name, opts in listeners.items():
            port = opts.get("port") or free_port(opts.get("address", "127.0.0.1"))
            self.ports[name] = port
            base.append(f"[listeners.{name}]")
            base.append(f'address = "{opts.get("address", "127.0.0.1")}"')
            base.append(f"port = {port}")
            base.append(f'tls_mode = "{opts.get("tls_mode", "none")}"')
        (self.config_dir / "00-test.toml").write_text("\n".join(base) + "\n")
        (self.config_dir / "50-extra.toml").write_text(textwrap.dedent(extra_config))
        self.proc: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return next(iter(self.ports.values()))

    def start(self, wait: bool = True) -> Appliance:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--config-dir", str(self.config_dir)],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self.root,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log()}")
            if all(self._listening(p) for p in self.ports.values()):
                return
            time.sleep(0.05)
        raise RuntimeError(f"server not ready:\n{self.log()}")

    def _listening(self, port: int) -> bool:
        for host in ("127.0.0.1", "::1"):
            try:
                with socket.create_connection((host, port), timeout=0.2):
                    return True
            except OSError:
                continue
        return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._log.close()
            return self.proc.returncode
        return 0

    def queued(self) -> list[Path]:
        q = self.spool / "queue"
        return sorted(q.glob("*.json")) if q.exists() else []

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "appliance", *args, "--config-dir", str(self.config_dir)],
            capture_output=True, text=True, timeout=60,
        )


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for localhost/127.0.0.1/::1 (trustme)."""
    import trustme

    d = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "mx.test.example", "127.0.0.1", "::1")
    cert_path, key_path, ca_path = d / "cert.pem", d / "key.pem", d / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    ca.cert_pem.write_to_path(ca_path)
    return cert_path, key_path, ca_path


@pytest.fixture
def make_appliance(tmp_path, certs):
    """Factory: ``make_appliance(extra_toml, listeners={...})`` starts a server."""
    started: list[Appliance] = []

    def make(extra: str = "", listeners: dict | None = None, start: bool = True,
             tls: bool = True) -> Appliance:
        root = tmp_path / f"appliance{len(started)}"
        app = Appliance(root, extra, listeners or {"mta": {}},
                        certs[:2] if tls else None)
        started.append(app)
        return app.start() if start else app

    yield make
    for app in started:
        app.stop()


@pytest.fixture
def appliance(make_appliance):
    """A server with one plain listener and default settings."""
    return make_appliance()


def have(cmd: str) -> bool:
    return any(os.access(os.path.join(p, cmd), os.X_OK)
               for p in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/usr/bin"])
