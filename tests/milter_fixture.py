"""Real milters for the tests: Debian's opendkim in signing mode with a key made at
set-up, and clamav-milter in front of clamd with a one-signature database written
at set-up (no download). Each is started once per test session on a free loopback
port and stopped at the end."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.peers import free_port, stop_process

DKIM_DOMAIN = "test.example"
DKIM_SELECTOR = "sel"


def _wait_port(port: int, proc: subprocess.Popen, what: str, log: Path | None = None,
               timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace") if log and log.exists() else ""
            pytest.fail(f"{what} exited with {proc.returncode}\n{text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{what} did not listen on port {port} within {timeout} s")


def _binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                  else None)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make deps-system`")
    return path


class OpenDKIM:
    """opendkim signing every message from 127.0.0.1 for ``test.example``."""

    def __init__(self, root: Path) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.root = root
        self.port = free_port()
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        key_file = root / f"{DKIM_SELECTOR}.private"
        key_file.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))
        key_file.chmod(0o600)
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        #: The TXT record a resolver would give for sel._domainkey.test.example.
        self.txt_record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
        self.conf = root / "opendkim.conf"
        self.log = root / "opendkim.log"
        self.conf.write_text(f"""\
Mode s
Domain {DKIM_DOMAIN}
Selector {DKIM_SELECTOR}
KeyFile {key_file}
Socket inet:{self.port}@127.0.0.1
Background no
Syslog no
RequireSafeKeys no
InternalHosts 127.0.0.1
Canonicalization relaxed/simple
PidFile {root}/opendkim.pid
""")
        self.proc: subprocess.Popen | None = None

    @property
    def socket(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def start(self) -> OpenDKIM:
        self.proc = subprocess.Popen([_binary("opendkim"), "-f", "-x", str(self.conf)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        _wait_port(self.port, self.proc, "opendkim", self.log)
        return self

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture(scope="session")
def opendkim():
    root = Path(tempfile.mkdtemp(prefix="opendkim-test-", dir="/tmp"))
    server = OpenDKIM(root).start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


#: A string no real file contains: the one signature of the test ClamAV database.
VIRUS_MARKER = b"SMTP-APPLIANCE-TEST-VIRUS-7f3a"


class ClamAVMilter:
    """clamd with a one-signature database (``VIRUS_MARKER``), and clamav-milter
    in front of it rejecting infected mail and adding X-Virus-Status to clean."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        db = root / "db"
        db.mkdir()
        (db / "test.ndb").write_text(f"SmtpApplianceTestSig:0:*:{VIRUS_MARKER.hex()}\n")
        self.clamd_socket = root / "clamd.sock"
        self.clamd_conf = root / "clamd.conf"
        self.clamd_conf.write_text(f"""\
LocalSocket {self.clamd_socket}
DatabaseDirectory {db}
Foreground yes
LogFile {root}/clamd.log
PidFile {root}/clamd.pid
""")
        self.milter_conf = root / "clamav-milter.conf"
        self.milter_conf.write_text(f"""\
MilterSocket inet:{self.port}@127.0.0.1
ClamdSocket unix:{self.clamd_socket}
Foreground yes
OnInfected Reject
AddHeader Replace
LogFile {root}/clamav-milter.log
PidFile {root}/clamav-milter.pid
""")
        self.clamd: subprocess.Popen | None = None
        self.milter: subprocess.Popen | None = None

    @property
    def socket(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def start(self) -> ClamAVMilter:
        log = self.root / "clamd.out"
        self.clamd = subprocess.Popen([_binary("clamd"), "-c", str(self.clamd_conf)],
                                      stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self.clamd_socket.exists():
            if self.clamd.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"clamd did not start\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        self.milter = subprocess.Popen(
            [_binary("clamav-milter"), "-c", str(self.milter_conf)],
            stdout=open(self.root / "clamav-milter.out", "ab"), stderr=subprocess.STDOUT)
        _wait_port(self.port, self.milter, "clamav-milter", self.root / "clamav-milter.out")
        return self

    def stop(self) -> None:
        # clamav-milter lingers on SIGTERM once it has served: a test peer, killed soon
        stop_process(self.milter, timeout=0.5)
        stop_process(self.clamd, timeout=0.5)


@pytest.fixture(scope="session")
def clamav_milter():
    root = Path(tempfile.mkdtemp(prefix="clamav-test-", dir="/tmp"))
    server = ClamAVMilter(root).start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


class ScriptedMilter:
    """tests/milter_scripted.py (purepythonmilter) in its own process."""

    def __init__(self, name: str = "scripted", add_first: bool = False) -> None:
        self.name = name
        self.port = free_port()
        self.args = ["--name", name] + (["--add-first"] if add_first else [])
        self.proc: subprocess.Popen | None = None

    @property
    def socket(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def start(self) -> ScriptedMilter:
        import sys

        root = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.milter_scripted", "--port", str(self.port),
             *self.args], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, f"scripted milter {self.name}")
        return self

    def stop(self) -> None:
        stop_process(self.proc, timeout=3)


@pytest.fixture(scope="session")
def scripted_milters():
    """Two scripted milters: ``first`` adds X-First, ``second`` reports it."""
    first = ScriptedMilter("first", add_first=True).start()
    second = ScriptedMilter("second").start()
    yield first, second
    first.stop()
    second.stop()


class SilentMilter:
    """A listening socket that accepts connections and never answers (a hung milter)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    @property
    def socket(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="session")
def silent_milter():
    milter = SilentMilter()
    yield milter
    milter.close()
