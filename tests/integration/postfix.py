"""A private Postfix instance used as a real SMTP *client* of the appliance:
everything it is given (with its own sendmail(1)) is relayed to one relayhost.
The lifecycle (own config/queue/data directories, postlogd to a file, no
chroot, stop/abort/kill) is bench/private_postfix.py, shared with the
benchmark; this module adds the relay configuration and the client-side tools.
The instance lives in a short /tmp directory: Postfix's UNIX socket paths
must stay under 108 bytes, which pytest's tmp_path can exceed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.private_postfix import PostfixError, PrivatePostfix
from bench.private_postfix import unavailable_reason as _postfix_unavailable

SENDMAIL = "/usr/sbin/sendmail"
POSTQUEUE = "/usr/sbin/postqueue"

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/spool
data_directory = {dir}/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}

myhostname = relay.test.example
mydomain = test.example
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
biff = no

# Everything goes to the appliance; no DNS (localhost comes from /etc/hosts).
relayhost = {relayhost}
default_transport = smtp
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtp_connect_timeout = 10s
smtp_helo_timeout = 20s
delay_warning_time = 0
"""

# No inet service: mail comes in through sendmail(1)/postdrop and pickup.
MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def unavailable_reason() -> str | None:
    """Why the relay cannot run here (None when it can)."""
    reason = _postfix_unavailable()
    if reason:
        return reason
    for tool in (SENDMAIL, POSTQUEUE):
        if not Path(tool).exists():
            return f"{tool} not found (run `make deps-system`)"
    return None


class PostfixRelay(PrivatePostfix):
    """``start(main_cf_extra, files)``; ``send()`` injects with sendmail -C,
    ``flush()`` runs postqueue -f, ``wait_log()`` polls the instance's maillog;
    ``stop()`` also removes the directory."""

    def __init__(self, relayhost: str) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="pf-", dir="/tmp")))
        self.relayhost = relayhost

    def start(self, main_cf_extra: str = "",  # type: ignore[override]
              files: dict[str, str] | None = None) -> PostfixRelay:
        main = MAIN_CF.format(dir=self.dir, relayhost=self.relayhost) + main_cf_extra
        super().start(main, MASTER_CF, files)
        return self

    def _run(self, *cmd: str, stdin: bytes | None = None) -> None:
        res = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60)
        if res.returncode != 0:
            raise PostfixError(f"{' '.join(cmd)} exited {res.returncode}: "
                               f"{res.stderr.decode(errors='replace')}\n--- maillog:\n{self.log()}")

    def send(self, sender: str, recipients: list[str], message: bytes) -> None:
        """Inject through Postfix's own sendmail(1) into this instance's maildrop."""
        self._run(SENDMAIL, "-C", str(self.etc), "-i", "-f", sender, "--", *recipients,
                  stdin=message)

    def flush(self) -> None:
        self._run(POSTQUEUE, "-c", str(self.etc), "-f")

    def wait_log(self, needle: str, timeout: float = 30) -> str:
        """Poll the maillog until a line contains ``needle``; return that line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log().splitlines():
                if needle in line:
                    return line
            time.sleep(0.1)
        raise PostfixError(f"{needle!r} not in the Postfix log after {timeout:.0f}s:\n{self.log()}")

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PostfixSmtpd(PostfixRelay):
    """The same instance with an smtpd(8) listening on ``port`` that accepts mail
    from loopback and discards it: a real server for probes to compare with."""

    def __init__(self, port: int) -> None:
        super().__init__(relayhost="[127.0.0.1]:9")
        self.port = port

    def start(self, main_cf_extra: str = "",  # type: ignore[override]
              files: dict[str, str] | None = None) -> PostfixSmtpd:
        main = (MAIN_CF.format(dir=self.dir, relayhost=self.relayhost)
                + "default_transport = discard\nsmtpd_banner = $myhostname ESMTP\n"
                + main_cf_extra)
        master = f"127.0.0.1:{self.port} inet n - n - - smtpd\n" + MASTER_CF
        PrivatePostfix.start(self, main, master, files)
        return self
