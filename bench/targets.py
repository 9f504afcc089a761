"""The servers under test, each started on its own free loopback port.

* :class:`ApplianceTarget`: ``smtp-appliance serve`` from the venv, with a config dir
  and a spool of its own (fsync on, logging at warning).
* :class:`PostfixTarget`: a private Postfix instance (its own config_directory,
  queue_directory and data_directory under the run's work dir; the system
  /etc/postfix and /var/spool/postfix are never touched) that accepts everything
  from 127.0.0.0/8 and discards it. Its lifecycle is bench/private_postfix.py,
  shared with the Postfix relay test in tests/integration.

Both expose the same small interface to the runner: ``start()``, ``stop()``,
``port``, ``root_pid`` (the process whose tree is measured), ``settle()`` (wait until
the server has finished the work of the last run), ``accepted()`` (messages known to
be accepted, or None when the server keeps no countable trace) and ``reset()``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from private_postfix import PostfixError, PrivatePostfix, tail

LOOPBACK = "127.0.0.1"


class TargetError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def read_reply(sock: socket.socket) -> tuple[int, bytes]:
    """Read one (possibly multi-line) SMTP reply; return its code and raw bytes."""
    buf = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"connection closed (got {buf[-200:]!r})")
        buf += chunk
        lines = buf.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) >= 3 and line[:3].isdigit() and (len(line) == 3 or line[3:4] == b" "):
                return int(line[:3]), buf


def banner_time(port: int, timeout: float = 5.0) -> float:
    """Seconds from connect() to a complete 220 greeting; QUIT politely afterwards."""
    t0 = time.perf_counter()
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        code, raw = read_reply(s)
        elapsed = time.perf_counter() - t0
        if code != 220:
            raise ConnectionError(f"greeting is not 220: {raw[:200]!r}")
        try:
            s.sendall(b"QUIT\r\n")
            read_reply(s)
        except OSError:
            pass
    return elapsed


def wait_for_banner(port: int, timeout: float, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise TargetError("server exited during startup")
        try:
            banner_time(port, timeout=2.0)
            return
        except (OSError, ConnectionError) as exc:
            last = exc
            time.sleep(0.1)
    raise TargetError(f"no SMTP greeting on {LOOPBACK}:{port} after {timeout:.0f}s: {last}")


# --------------------------------------------------------------------------- appliance


class ApplianceTarget:
    name = "appliance"

    def __init__(
        self,
        workdir: Path,
        executable: Path,
        workers: int = 1,
        max_sessions: int = 10000,
        extra_config: list[Path] | None = None,
    ) -> None:
        self.dir = workdir / "appliance"
        self.executable = executable
        self.workers = workers
        self.max_sessions = max_sessions
        self.extra_config = extra_config or []
        self.conf_dir = self.dir / "conf.d"
        self.spool = self.dir / "spool"
        self.log = self.dir / "server.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self._generation = 0

    @property
    def root_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def config_text(self) -> str:
        return f"""\
# Written by bench/run.py for one benchmark run.
[server]
hostname = "bench.localhost"
workers = {self.workers}
max_sessions = {self.max_sessions}
graceful_timeout = "5s"

[listeners.bench]
address = "{LOOPBACK}"
port = {self.port}
tls_mode = "none"

[limits]
max_messages_per_session = 0
max_message_size = "20 MiB"

[queue]
directory = "{self.spool}"
fsync = true

[logging]
level = "warning"
"""

    def start(self) -> None:
        if not self.executable.exists():
            raise TargetError(f"{self.executable} not found (run `make .venv`)")
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (self.conf_dir / "10-bench.toml").write_text(self.config_text())
        for i, extra in enumerate(self.extra_config):
            shutil.copy(extra, self.conf_dir / f"{20 + i:02d}-{extra.name}")
        check = subprocess.run(
            [str(self.executable), "check-config", "--config-dir", str(self.conf_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check.returncode != 0:
            raise TargetError(
                "check-config refused the bench config:\n" + (check.stderr or check.stdout)
            )
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(self.executable), "serve", "--config-dir", str(self.conf_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() can reap stragglers
            )
        try:
            wait_for_banner(self.port, 60, alive=lambda: self.proc.poll() is None)
        except TargetError as exc:
            self.stop()
            raise TargetError(f"{exc}\n--- {self.log}:\n{tail(self.log)}") from None

    def queue_dir(self) -> Path:
        return self.spool / "queue"

    def accepted(self) -> int | None:
        try:
            with os.scandir(self.queue_dir()) as it:
                return sum(1 for e in it if e.name.endswith(".json"))
        except FileNotFoundError:
            return 0

    def settle(self, timeout: float = 60) -> None:
        # The spool commits (fsync) before the 250 reply: nothing is left to do
        # once the client has its replies.
        return None

    def reset(self) -> None:
        """Give every run an empty queue directory of its own.

        The old one is renamed aside, not emptied: deleting tens of thousands of
        files makes the kernel work (journal, inode freeing) during the next run and
        leaves a large sparse directory behind, which made later runs measurably
        slower than the first. The work dir, old queues included, is removed at the
        end of the benchmark."""
        queue = self.queue_dir()
        try:
            with os.scandir(queue) as it:
                if next(it, None) is None:
                    return
        except FileNotFoundError:
            queue.mkdir(parents=True)
            return
        self._generation += 1
        queue.rename(self.spool / f"queue.old-{self._generation}")
        queue.mkdir()

    def log_tail(self) -> str:
        return tail(self.log)

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, pgid = self.proc, self.proc.pid
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        # Workers or anything else left in the server's own process group.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(timeout=10)
        self.exit_code = proc.returncode
        self.proc = None


# --------------------------------------------------------------------------- postfix

MAIN_CF = """\
# A private Postfix instance for bench/run.py: accept everything from loopback,
# discard it. Nothing here refers to /etc/postfix except meta_directory (the
# package's postfix-files, read by `postfix check`).
compatibility_level = 3.6
queue_directory = {dir}/spool
data_directory = {dir}/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop

myhostname = bench.localhost
mydomain = localhost
myorigin = $myhostname
mydestination =
relay_domains =
inet_interfaces = {address}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8

# Every destination goes to the discard(8) delivery agent.
default_transport = discard
local_transport = discard
relay_transport = discard
virtual_transport = discard
alias_maps =
alias_database =
local_recipient_maps =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject

# No rate or connection limits, no throttling of smtpd when delivery lags.
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_client_new_tls_session_rate_limit = 0
smtpd_client_auth_rate_limit = 0
in_flow_delay = 0s
default_process_limit = 200
smtpd_timeout = 300s
message_size_limit = 52428800
mailbox_size_limit = 0

disable_dns_lookups = yes
smtp_dns_support_level = disabled
biff = no
smtpd_banner = $myhostname ESMTP

maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
"""

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{address}:{port} inet n - n - {smtpd_maxproc} smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixTarget:
    name = "postfix"

    def __init__(self, workdir: Path, smtpd_maxproc: int | None = None) -> None:
        self.instance = PrivatePostfix(workdir / "postfix")
        self.dir = self.instance.dir
        self.maillog = self.instance.maillog
        self.smtpd_maxproc = smtpd_maxproc
        self.port = 0

    @property
    def root_pid(self) -> int:
        return self.instance.master_pid

    def start(self) -> None:
        self.port = free_port()
        maxproc = "-" if self.smtpd_maxproc is None else str(self.smtpd_maxproc)
        fmt = {"dir": self.dir, "address": LOOPBACK, "port": self.port, "smtpd_maxproc": maxproc}
        try:
            self.instance.start(MAIN_CF.format(**fmt), MASTER_CF.format(**fmt))
        except PostfixError as exc:
            raise TargetError(str(exc)) from exc
        wait_for_banner(self.port, 60, alive=self.instance.alive)

    def queued(self) -> int:
        return self.instance.queued()

    def settle(self, timeout: float = 300) -> None:
        """Wait until every accepted message has been delivered (discarded), so the
        CPU the instance spends on its queue is counted in the run that caused it."""
        deadline = time.monotonic() + timeout
        while self.queued() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.queued():
            raise TargetError(f"Postfix queue not empty after {timeout:.0f}s")

    def accepted(self) -> int | None:
        return None  # Postfix delivers and removes: smtp-source's status is the check

    def delivered(self) -> int:
        """Messages discarded so far, from the instance's maillog (informative)."""
        try:
            with open(self.maillog, "rb") as f:
                return sum(1 for line in f if b" status=sent (" in line)
        except FileNotFoundError:
            return 0

    def reset(self) -> None:
        return None

    def log_tail(self) -> str:
        return tail(self.maillog)

    def stop(self) -> None:
        self.instance.stop()
