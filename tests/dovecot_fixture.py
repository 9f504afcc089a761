"""A private, real Dovecot (Debian's dovecot-core) for the SASL tests: its own
base_dir, a passwd-file passdb with plain-scheme passwords (so CRAM-MD5 works),
no mail protocols, and the auth-client socket both as a unix socket and on a
loopback port. Tests may stop and restart it to play a Dovecot outage."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.peers import free_port

USER, PASSWORD = "alice", "correct horse battery staple"

CONF = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = none
ssl = no
listen = 127.0.0.1
auth_mechanisms = plain login cram-md5
auth_failure_delay = 0
auth_verbose = yes
disable_plaintext_auth = yes
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
  inet_listener auth-inet {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"""


def find_dovecot() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)


class Dovecot:
    """One dovecot master process; the sockets stay the same across stop/start."""

    def __init__(self) -> None:
        # Not under pytest's 0700 tmp dir: Dovecot's auth process runs as the
        # unprivileged "dovecot" user and must reach the passwd file.
        self.root = Path(tempfile.mkdtemp(prefix="dovecot-test-", dir="/tmp"))
        self.root.chmod(0o755)
        self.port = free_port()
        self.unix_socket = self.root / "run" / "auth-client"
        self.conf = self.root / "dovecot.conf"
        self.conf.write_text(CONF.format(root=self.root, port=self.port))
        passwd = self.root / "passwd"
        passwd.write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        passwd.chmod(0o644)
        self.proc: subprocess.Popen | None = None

    @property
    def inet(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    @property
    def unix(self) -> str:
        return f"unix:{self.unix_socket}"

    def start(self) -> Dovecot:
        binary = find_dovecot()
        if binary is None:
            pytest.fail("dovecot is not installed: run `make deps-system` (dovecot-core)")
        self.proc = subprocess.Popen([binary, "-F", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"dovecot exited with {self.proc.returncode}:\n{self.log()}")
            if self.unix_socket.exists() and self._answers():
                return self
            time.sleep(0.05)
        pytest.fail(f"dovecot's auth socket did not answer within 15 s:\n{self.log()}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"VERSION\t1\t2\nCPID\t1\n")
                return b"DONE\n" in _read_until(s, b"DONE\n")
        except OSError:
            return False

    def children(self) -> list[int]:
        """Pids of the master's processes (auth, log, ...)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                             text=True).stdout
        return [int(pid) for pid in out.split()]

    def stop(self) -> None:
        """Stop the master and every child, as systemd stops the whole service: an
        auth process outlives its master while clients stay connected."""
        if self.proc and self.proc.poll() is None:
            children = self.children()
            self.proc.terminate()
            for pid in children:
                _signal(pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            deadline = time.monotonic() + 10
            while children and time.monotonic() < deadline:
                children = [pid for pid in children if _running(pid)]
                time.sleep(0.05)
            for pid in children:
                _signal(pid, signal.SIGKILL)
        self.proc = None

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _signal(pid: int, sig: int) -> bool:
    """Signal ``pid``; False if it is gone already."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _running(pid: int) -> bool:
    return _signal(pid, 0)


def _read_until(s: socket.socket, end: bytes) -> bytes:
    data = b""
    while end not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def dovecot():
    """A running private Dovecot; stopped and removed after the test."""
    if os.geteuid() != 0:
        pytest.skip("the private dovecot needs root (it drops to its own users)")
    server = Dovecot()
    try:
        yield server.start()
    finally:
        server.cleanup()
