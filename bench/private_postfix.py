"""Start and stop a private Postfix instance: its own config_directory,
queue_directory and data_directory under one directory, no chroot, logging to
a file through postlogd (``maillog_file``). The system /etc/postfix and
/var/spool/postfix are never touched, and the system Postfix need not run.

Shared by bench/targets.py (the reference smtpd the benchmark measures) and
tests/integration/postfix.py (a real relay client of the appliance); each
writes its own main.cf and master.cf, this module owns only the lifecycle.
The main.cf must set ``queue_directory = DIR/spool``, ``data_directory =
DIR/data`` and ``maillog_file = DIR/maillog``.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")


class PostfixError(RuntimeError):
    pass


def unavailable_reason() -> str | None:
    """Why a private Postfix cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "a private Postfix instance can only be started as root"
    if not Path(POSTFIX).exists():
        return f"{POSTFIX} not found (run `make deps-system`)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no 'postfix' system user (Debian package postfix not installed)"
    return None


def tail(path: Path, n: int = 20) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"


class PrivatePostfix:
    """One instance under ``directory`` (etc/, spool/, data/, maillog)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.etc = self.dir / "etc"
        self.queue = self.dir / "spool"
        self.data = self.dir / "data"
        self.maillog = self.dir / "maillog"
        self.master_pid = 0
        self.started = False

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``postfix -c ETC ARGS``; on failure raise with the maillog's tail."""
        cmd = [POSTFIX, "-c", str(self.etc), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and res.returncode != 0:
            # Postfix writes to stderr only when it is a terminal; its reasons
            # are in the instance's maillog (or syslog before maillog works).
            raise PostfixError(
                f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.strip()}\n"
                f"--- {self.maillog}:\n{tail(self.maillog)}"
            )
        return res

    def start(self, main_cf: str, master_cf: str, files: dict[str, str] | None = None,
              timeout: float = 30) -> None:
        """Write the config (plus ``files`` into etc/, mode 0600), check, start, and
        wait for the master's pid file."""
        reason = unavailable_reason()
        if reason:
            raise PostfixError(reason)
        owner = pwd.getpwnam("postfix")
        for d in (self.etc, self.queue, self.data):
            d.mkdir(parents=True, exist_ok=True)
        # the postfix user must reach data/ (master.lock) through every parent we made
        self.dir.chmod(self.dir.stat().st_mode | 0o755)
        os.chown(self.data, owner.pw_uid, owner.pw_gid)
        (self.etc / "main.cf").write_text(main_cf)
        (self.etc / "master.cf").write_text(master_cf)
        for name, text in (files or {}).items():
            (self.etc / name).write_text(text)
            (self.etc / name).chmod(0o600)
        self.postfix("check")  # also creates the queue directories with their owners
        self.postfix("start")
        self.started = True
        pidfile = self.queue / "pid" / "master.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.master_pid = int(pidfile.read_text().strip())
                return
            except (OSError, ValueError):
                time.sleep(0.1)
        raise PostfixError(f"no {pidfile} after start\n{tail(self.maillog)}")

    def alive(self) -> bool:
        return bool(self.master_pid) and pid_alive(self.master_pid)

    def queued(self) -> int:
        """Messages in the instance's queues (files, as mailq would count them)."""
        n = 0
        for q in QUEUES:
            for _root, _dirs, files in os.walk(self.queue / q):
                n += len(files)
        return n

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """``postfix stop``; if the master lingers, ``postfix abort``; then SIGKILL."""
        if not self.started:
            return
        self.started = False
        self.postfix("stop", check=False)
        if self._gone_within(20):
            return
        self.postfix("abort", check=False)
        if not self._gone_within(5):
            try:
                os.kill(self.master_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _gone_within(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        return not self.alive()
