"""A private opendkim (Debian's) signing for the bench sender's domain, for the
"S1 with milters" figures: ``bench/run.py --opendkim``. Standard library only: the
key is made with ``openssl genrsa``."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from targets import TargetError, free_port

DOMAIN = "bench.example"  # the domain of smtp-source's -f sender and From: field
SELECTOR = "bench"


class PrivateOpenDKIM:
    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "opendkim"
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("opendkim") or "/usr/sbin/opendkim"
        if not Path(binary).exists():
            raise TargetError("opendkim not found: run `make deps-system`")
        self.root.mkdir(parents=True, exist_ok=True)
        key = self.root / f"{SELECTOR}.private"
        subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(key), "2048"],
                       check=True, capture_output=True)
        key.chmod(0o600)
        self.port = free_port()
        conf = self.root / "opendkim.conf"
        conf.write_text(f"""\
Mode s
Domain {DOMAIN}
Selector {SELECTOR}
KeyFile {key}
Socket inet:{self.port}@127.0.0.1
Background no
Syslog no
RequireSafeKeys no
InternalHosts 127.0.0.1
Canonicalization relaxed/simple
PidFile {self.root}/opendkim.pid
""")
        log = open(self.root / "opendkim.log", "ab")
        self.proc = subprocess.Popen([binary, "-f", "-x", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TargetError(f"opendkim exited {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise TargetError("opendkim did not listen within 30 s")

    def appliance_config(self) -> Path:
        """The conf.d file that puts this opendkim in front of the spool."""
        path = self.root / "milter.toml"
        path.write_text(f"""\
[[milter.milters]]
name = "opendkim"
socket = "inet:127.0.0.1:{self.port}"
default_action = "tempfail"
""")
        return path

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def first_message_signed(queue_dir: Path) -> bool:
    """Does a stored message carry opendkim's signature (checks the milter ran)?"""
    for path in queue_dir.glob("*.msg"):
        return path.read_bytes().startswith(b"DKIM-Signature:")
    return False
