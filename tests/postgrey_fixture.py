"""A private, real postgrey (Debian's greylisting policy server) for the tests: a
free loopback port, its own database directory, a 1-second greylisting delay and
no whitelists; stopped at the end of the test session."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.peers import free_port, stop_process

#: Seconds a new (client, sender, recipient) triplet is greylisted.
DELAY = 1


class Postgrey:
    def __init__(self) -> None:
        # Not under pytest's tmp dir: its 0700 parents would lock out the postgrey
        # user that postgrey switches to when started as root.
        self.directory = Path(tempfile.mkdtemp(prefix="postgrey-"))
        self.directory.chmod(0o755)
        self.port = free_port()
        self.address = f"inet:127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Postgrey:
        binary = shutil.which("postgrey") or "/usr/sbin/postgrey"
        if not Path(binary).exists():
            pytest.fail("postgrey is not installed: run `make deps-system`")
        db = self.directory / "db"
        db.mkdir(parents=True, exist_ok=True)
        # As root postgrey drops to its own user, which must own the database.
        user = "postgrey" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            shutil.chown(db, "postgrey", "postgrey")
        empty = self.directory / "empty"
        empty.write_text("")
        self.log = open(self.directory / "postgrey.log", "ab")
        self.proc = subprocess.Popen(
            [binary, f"--inet=127.0.0.1:{self.port}", f"--delay={DELAY}", f"--dbdir={db}",
             f"--user={user}", f"--group={user}", "--hostname=greylist.test",
             f"--whitelist-clients={empty}", f"--whitelist-recipients={empty}",
             "--auto-whitelist-clients=0", "--lookup-by-host"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.directory,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"postgrey exited with {self.proc.returncode}: "
                            f"{(self.directory / 'postgrey.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        pytest.fail("postgrey did not listen within 15 s")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgrey():
    """A postgrey shared by the test session (use triplets of your own)."""
    server = Postgrey().start()
    yield server
    server.stop()
