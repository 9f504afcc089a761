"""The .deb installed on this machine, as an administrator would: the installed
server runs from root with the shipped configuration moved to loopback test ports
(a conf.d file of the test's), drops to its user, takes mail from swaks into the
shipped spool, takes a third-party plugin installed with smtp-appliance-pip on a
reload; then remove and purge leave what Debian policy says (packaging/README.md).

One test, in order, because each step needs the one before; the fixture purges
whatever the test left installed, so the machine ends as it was. It needs root
and a machine without smtp-appliance installed (a throwaway CI machine)."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
from pathlib import Path

import pytest

from tests.peers import free_port, wait_for

from .conftest import ROOT, deb

# Building the packages once per session (`make package`) takes about two minutes.
pytestmark = pytest.mark.timeout(900)

PACKAGE = "smtp-appliance"
USER = "smtp-appliance"
ETC = Path("/etc/smtp-appliance")
CONF_D = ETC / "conf.d"
SPOOL = Path("/var/spool/smtp-appliance")
STATE = Path("/var/lib/smtp-appliance")
LOGS = Path("/var/log/smtp-appliance")
VENV = Path("/opt/smtp-appliance")
UNIT = Path("/lib/systemd/system/smtp-appliance.service")


def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    if check:
        assert done.returncode == 0, f"{cmd}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def status() -> str:
    return run("dpkg-query", "-W", "-f=${Status}", PACKAGE, check=False).stdout


def user_exists() -> bool:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return False
    return True


@pytest.fixture
def machine(packages):
    """This machine, without the package before and after the test."""
    if os.geteuid() != 0:
        pytest.skip("installing a package needs root")
    if status():
        pytest.skip(f"{PACKAGE} is already known to dpkg here ({status()}): not touching it")
    had_user = user_exists()
    yield deb(packages)
    for extra in CONF_D.glob("9*-test*.toml"):
        extra.unlink()
    if status():
        run("dpkg", "--purge", PACKAGE, check=False)
    shutil.rmtree(SPOOL, ignore_errors=True)  # a spool the purge kept for its mail
    if not had_user and user_exists():
        run("userdel", USER, check=False)
        run("groupdel", USER, check=False)


def owner(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, \
        stat.S_IMODE(st.st_mode)


def ids(pid: int) -> tuple[int, int]:
    """Effective uid and gid of a process."""
    with open(f"/proc/{pid}/status") as f:
        lines = dict(line.split(":", 1) for line in f)
    return int(lines["Uid"].split()[1]), int(lines["Gid"].split()[1])


def swaks(port: int, sender: str, rcpt: str) -> subprocess.CompletedProcess:
    return run("swaks", "--server", f"127.0.0.1:{port}", "--from", sender, "--to", rcpt,
               "--helo", "client.test", "--timeout", "20", check=False)


def queued() -> list[Path]:
    return sorted((SPOOL / "queue").glob("*.json"))


class Installed:
    """The installed server, started from root as an admin's shell would."""

    def __init__(self, log: Path) -> None:
        self.log_path = log
        self.ports = {name: free_port() for name in ("mta", "submission", "submissions")}
        lines = ["[server]", "workers = 2", 'hostname = "mx.test.example"',
                 "[relay]", "relay_networks = []", 'local_domains = ["example.test"]',
                 "check_recipients = false"]
        for name, port in self.ports.items():
            lines += [f"[listeners.{name}]", 'address = "127.0.0.1"', f"port = {port}"]
        (CONF_D / "90-test.toml").write_text("\n".join(lines) + "\n")
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(["/usr/bin/smtp-appliance", "serve"], cwd="/",
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        def listening():
            assert self.proc.poll() is None, f"server exited:\n{self.text()}"
            for port in self.ports.values():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    return False
            return True
        wait_for(listening, "the installed server's listeners", 30)

    def workers(self) -> set[int]:
        out = run("pgrep", "-P", str(self.proc.pid), check=False).stdout
        return {int(p) for p in out.split()}

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            self.log.close()

    def kill(self) -> None:
        """After a failure: the workers too, which outlive a killed supervisor."""
        for pid in self.workers() | {self.proc.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


def test_install_serve_plugin_remove_purge(machine, tmp_path):
    run("dpkg", "-i", str(machine))
    assert status() == "install ok installed"

    # --- what the package set up ----------------------------------------------------
    account = pwd.getpwnam(USER)
    assert account.pw_uid < 1000 and account.pw_shell.endswith("nologin")
    assert account.pw_dir == str(STATE)
    assert owner(SPOOL) == (USER, USER, 0o750)
    assert owner(STATE) == (USER, USER, 0o750)
    assert owner(LOGS) == (USER, "adm", 0o2750)
    assert owner(ETC / "tls" / "key.pem") == ("root", USER, 0o640)
    assert owner(ETC / "tls" / "cert.pem")[2] == 0o644
    conffiles = Path("/var/lib/dpkg/info/smtp-appliance.conffiles").read_text().split()
    shipped = sorted(str(p) for p in CONF_D.glob("*.toml"))
    assert shipped and set(shipped) <= set(conffiles)
    assert "/etc/logrotate.d/smtp-appliance" in conffiles
    assert list(VENV.glob("lib/python3.11/site-packages/appliance/__pycache__/*.pyc"))

    # The shipped configuration: valid here, public ports, relay closed.
    summary = run("smtp-appliance", "check-config").stdout
    for name, port in (("mta", 25), ("submission", 587), ("submissions", 465)):
        assert re.search(rf"^ +{name} +0\.0\.0\.0:{port} ", summary, re.M), summary
    relay = run("smtp-appliance", "check-config", "--listener", "mta").stdout
    assert re.search(r'^relay_networks = \["127\.0\.0\.0/8", "::1/128"\] ', relay, re.M)

    verify = run("systemd-analyze", "verify", str(UNIT), check=False)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    unit = UNIT.read_text()
    for line in ("Type=notify", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "PrivateTmp=yes", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                 f"ReadWritePaths={SPOOL} {STATE} {LOGS}", "User=smtp-appliance",
                 "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in unit.splitlines(), line
    assert "check-config" in next(x for x in unit.splitlines() if x.startswith("ExecStartPre"))
    assert run("man", "-w", "smtp-appliance.conf").returncode == 0

    # --- the installed server, started as root ---------------------------------------
    server = Installed(tmp_path / "server.log")
    try:
        server.wait_ready()
        procs = {server.proc.pid} | wait_for(
            lambda: len(w := server.workers()) == 2 and w, "two workers", 30)
        for pid in procs:
            assert ids(pid) == (account.pw_uid, account.pw_gid), pid

        sent = swaks(server.ports["mta"], "alice@example.org", "bob@example.test")
        assert sent.returncode == 0, sent.stdout
        (envelope,) = queued()
        assert envelope.stat().st_uid == account.pw_uid
        assert "bob@example.test" in envelope.read_text()
        relayed = swaks(server.ports["mta"], "alice@example.org", "carol@elsewhere.example")
        assert "554 5.7.1" in relayed.stdout and len(queued()) == 1

        ctx = ssl.create_default_context(cafile=str(ETC / "tls" / "cert.pem"))
        ctx.check_hostname = False
        with ctx.wrap_socket(socket.create_connection(
                ("127.0.0.1", server.ports["submissions"]), timeout=10)) as tls:
            assert tls.recv(1024).startswith(b"220 ")

        # --- a third-party plugin, installed into the running appliance ---------------
        installed = run("smtp-appliance-pip", "install", "--no-input", "--quiet",
                        str(ROOT / "examples" / "sender-blocklist"))
        assert installed.returncode == 0
        listed = run("smtp-appliance", "plugins").stdout
        assert "sender-blocklist" in listed and "disabled" in listed.split(
            "sender-blocklist")[1].splitlines()[0]
        (CONF_D / "91-test-blocklist.toml").write_text(
            '[plugins.sender-blocklist]\nenabled = true\ndomains = ["spam.example"]\n')
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: server.text().count("reloaded") >= 2, "both workers' reload", 30)
        assert "reload_refused" not in server.text()
        refused = swaks(server.ports["mta"], "x@spam.example", "bob@example.test")
        assert "550 5.7.1 Sender domain refused by local policy" in refused.stdout
        assert len(queued()) == 1
        assert server.stop() == 0
    finally:
        if server.proc.poll() is None:
            server.kill()
    (CONF_D / "90-test.toml").unlink()
    (CONF_D / "91-test-blocklist.toml").unlink()

    # --- remove: configuration, spool, user and plugins stay ----------------------
    run("dpkg", "--remove", PACKAGE)
    assert status() == "deinstall ok config-files"
    assert not Path("/usr/bin/smtp-appliance").exists()
    assert not (VENV / "bin" / "smtp-appliance").exists()
    assert (CONF_D / "00-server.toml").exists() and (ETC / "tls" / "key.pem").exists()
    assert len(queued()) == 1 and user_exists()
    assert list(VENV.glob("lib/python3.11/site-packages/smtp_appliance_sender_blocklist"))

    # --- purge: all gone but the user and a spool holding mail ------------------------
    purged = run("dpkg", "--purge", PACKAGE)
    assert status() == ""
    for gone in (ETC, STATE, LOGS, VENV):
        assert not gone.exists(), gone
    assert len(queued()) == 1 and f"{SPOOL} still holds messages: kept" in purged.stderr
    assert user_exists()
