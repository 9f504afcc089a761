"""A private, real MIT Kerberos KDC (Debian's krb5-kdc) for the GSSAPI tests: a
throwaway realm in a temp dir on a free loopback port, a user with a password,
the appliance's service principal with its key exported to a keytab, and a
client ticket obtained with kinit. ``kdc_env`` points KRB5_CONFIG and KRB5CCNAME
at it for the test process and the server processes it starts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.peers import free_port, stop_process

REALM = "TEST.EXAMPLE"
USER, PASSWORD = "alice", "correct-horse-battery-staple"
HOSTNAME = "mx.test.example"  # the integration fixture's [server] hostname
SERVICE = f"smtp/{HOSTNAME}"
OTHER_SERVICE = "smtp/other.test.example"  # in the KDC but not in the keytab

KDC_CONF = """\
[kdcdefaults]
 kdc_ports = {port}
 kdc_tcp_ports = {port}
[realms]
 {realm} = {{
  database_name = {root}/principal
  key_stash_file = {root}/stash
  acl_file = {root}/kadm5.acl
  kdc_ports = {port}
  kdc_tcp_ports = {port}
  max_life = 1h
 }}
[logging]
 kdc = FILE:{root}/kdc.log
"""

KRB5_CONF = """\
[libdefaults]
 default_realm = {realm}
 dns_lookup_kdc = false
 dns_lookup_realm = false
 dns_canonicalize_hostname = false
 rdns = false
 udp_preference_limit = 1
[realms]
 {realm} = {{
  kdc = 127.0.0.1:{port}
 }}
[domain_realm]
 .test.example = {realm}
 test.example = {realm}
"""

TOOLS = ("kdb5_util", "krb5kdc", "kadmin.local", "kinit")


def find_tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (f"{d}/{name}" for d in ("/usr/sbin", "/usr/bin") if Path(f"{d}/{name}").exists()), None)


class KDC:
    """One krb5kdc process (``-n``: foreground) and its realm's files."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="kdc-test-", dir="/tmp"))
        self.port = free_port()
        self.krb5_conf = self.root / "krb5.conf"
        self.kdc_conf = self.root / "kdc.conf"
        self.keytab = self.root / "smtp.keytab"
        self.ccache = self.root / "ccache"
        fmt = {"root": self.root, "port": self.port, "realm": REALM}
        self.kdc_conf.write_text(KDC_CONF.format(**fmt))
        self.krb5_conf.write_text(KRB5_CONF.format(**fmt))
        (self.root / "kadm5.acl").write_text("")
        self.env = {"KRB5_CONFIG": str(self.krb5_conf), "KRB5_KDC_PROFILE": str(self.kdc_conf),
                    "KRB5CCNAME": f"FILE:{self.ccache}"}
        self.proc: subprocess.Popen | None = None

    def _run(self, *args: str, stdin: str | None = None) -> None:
        done = subprocess.run([find_tool(args[0]), *args[1:]], input=stdin, text=True,
                              capture_output=True, timeout=60, env={**os.environ, **self.env})
        if done.returncode:
            raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr}")

    def kadmin(self, query: str) -> None:
        # kadmin.local exits 0 even when the query fails: check what it printed
        done = subprocess.run([find_tool("kadmin.local"), "-r", REALM, "-q", query], text=True,
                              capture_output=True, timeout=60, env={**os.environ, **self.env})
        if done.returncode or "while " in done.stderr:
            raise RuntimeError(f"kadmin.local -q {query!r}: {done.stderr}")

    def start(self) -> KDC:
        self._run("kdb5_util", "create", "-s", "-r", REALM, "-P", "master-key-for-tests")
        self.kadmin(f"addprinc -pw {PASSWORD} {USER}")
        self.kadmin(f"addprinc -randkey {SERVICE}")
        self.kadmin(f"addprinc -randkey {OTHER_SERVICE}")
        self.kadmin(f"ktadd -k {self.keytab} {SERVICE}")
        self.keytab.chmod(0o644)
        self.proc = subprocess.Popen(
            [find_tool("krb5kdc"), "-n", "-r", REALM], env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"krb5kdc exited {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("krb5kdc did not listen")
        self.kinit()
        return self

    def kinit(self) -> None:
        """A fresh ticket-granting ticket for USER in the ccache."""
        self._run("kinit", f"{USER}@{REALM}", stdin=PASSWORD + "\n")

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def kdc():
    missing = [t for t in TOOLS if find_tool(t) is None]
    if missing:
        pytest.skip(f"MIT Kerberos not installed ({', '.join(missing)}): "
                    "scripts/deps-system.sh installs krb5-kdc and krb5-user")
    server = KDC().start()
    yield server
    server.stop()


@pytest.fixture
def kdc_env(kdc, monkeypatch):
    """The KDC, with this process's environment (inherited by the server processes
    the integration fixtures start) pointing at its realm and ticket cache."""
    for key, value in kdc.env.items():
        monkeypatch.setenv(key, value)
    return kdc
