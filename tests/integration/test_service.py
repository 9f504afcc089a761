"""The server as a system service: the readiness protocol systemd's Type=notify
speaks (a datagram socket of the test stands in for systemd, which is not PID 1
on the test machines), and the switch from root to ``server.user``."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from tests.peers import wait_for

from .conftest import read_reply
from .test_workers import workers


@pytest.fixture
def manager(tmp_path, monkeypatch):
    """The service manager's end: a datagram socket named in $NOTIFY_SOCKET, which
    the server started by the test inherits. Linux's abstract namespace ("@..."),
    as systemd uses, keeps the name short and leaves nothing on disk."""
    name = f"@smtp-appliance-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    sock.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    yield sock
    sock.close()


def message(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n") if line)


def rest(sock: socket.socket) -> list[dict[str, str]]:
    """Every message still queued (the server has exited)."""
    sock.settimeout(0.5)
    out = []
    try:
        while True:
            out.append(message(sock))
    except TimeoutError:
        return out


def banner(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        return read_reply(s)


@pytest.mark.parametrize("count", [1, 2])
def test_ready_reloading_stopping(make_appliance, manager, count):
    app = make_appliance(f"[server]\nworkers = {count}\n", start=False)
    app.start(wait=False)
    ready = message(manager)
    assert ready == {"READY": "1", "MAINPID": str(app.proc.pid)}
    # READY=1 means every listener is bound: a client is served at once.
    assert banner(app.port).startswith(b"220 ")
    if count > 1:
        wait_for(lambda: len(workers(app)) == count, f"{count} workers", 15)

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    app.signal(signal.SIGHUP)
    reloading = message(manager)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    assert message(manager)["READY"] == "1"
    assert banner(app.port).startswith(b"220 ")

    assert app.stop() == 0
    # Only the process systemd started speaks: one STOPPING=1, no worker's own.
    assert rest(manager) == [{"STOPPING": "1"}]


def test_a_refused_reload_still_ends_with_ready(make_appliance, manager):
    app = make_appliance(start=False)
    app.start(wait=False)
    assert message(manager)["READY"] == "1"
    (app.config_dir / "60-broken.toml").write_text("[server]\nno_such_key = 1\n")
    app.signal(signal.SIGHUP)
    assert message(manager)["RELOADING"] == "1"
    assert message(manager) == {"READY": "1", "MAINPID": str(app.proc.pid)}
    assert "reload_refused" in app.log()
    assert banner(app.port).startswith(b"220 ")


def test_without_notify_socket_nothing_is_sent(make_appliance, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    app = make_appliance()
    assert banner(app.port).startswith(b"220 ")
    assert app.stop() == 0


# --- privileges ---------------------------------------------------------------------------

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.fixture
def nobody_spool():
    """A spool ``nobody`` can write. Not under tmp_path: pytest makes its temporary
    directories 0700 root, which ``nobody`` cannot enter; a private directory of
    its own, removed after the test, instead."""
    path = tempfile.mkdtemp(prefix="smtp-appliance-test-spool-")
    os.chmod(path, 0o755)
    spool = os.path.join(path, "spool")
    os.mkdir(spool)
    os.chown(spool, pwd.getpwnam("nobody").pw_uid, -1)
    yield spool
    shutil.rmtree(path)


def ids(pid: int, kind: str) -> tuple[int, ...]:
    """Real, effective, saved and filesystem uid ("Uid") or gid ("Gid") of a process."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{kind}:"):
                return tuple(int(n) for n in line.split()[1:])
    raise AssertionError(f"no {kind} line for {pid}")


@root_only
@pytest.mark.parametrize("count", [1, 2])
def test_started_as_root_it_serves_as_server_user(make_appliance, nobody_spool, count):
    nobody = pwd.getpwnam("nobody")
    app = make_appliance(f'[server]\nworkers = {count}\nuser = "nobody"\n'
                         f'[queue]\ndirectory = "{nobody_spool}"\n')
    procs = {app.proc.pid}
    if count > 1:
        procs |= wait_for(lambda: len(w := workers(app)) == count and w, "workers", 15)
    for pid in procs:  # supervisor and workers alike, for good (saved uid too)
        assert ids(pid, "Uid") == (nobody.pw_uid,) * 4, pid
        assert ids(pid, "Gid") == (nobody.pw_gid,) * 4, pid
    with smtplib.SMTP("127.0.0.1", app.port, timeout=10) as client:
        client.sendmail("a@example.org", ["b@example.net"], b"Subject: t\r\n\r\nhello\r\n")
    queued = [f for f in os.listdir(os.path.join(nobody_spool, "queue"))
              if f.endswith(".json")]
    assert len(queued) == 1
    assert os.stat(os.path.join(nobody_spool, "queue", queued[0])).st_uid == nobody.pw_uid
    assert "privileges_dropped user=nobody" in app.log()
    assert app.stop() == 0


@root_only
def test_started_as_root_without_user_it_warns(make_appliance):
    app = make_appliance()
    assert ids(app.proc.pid, "Uid")[0] == 0
    assert "running_as_root" in app.log()


@pytest.mark.parametrize("key, value, expected", [
    ("user", "no-such-user-x", "server.user: expected a user of this machine "
                               "(got 'no-such-user-x': no such user)"),
    ("group", "no-such-group-x", "server.group: expected a group of this machine "
                                 "(got 'no-such-group-x': no such group)"),
])
def test_an_unknown_user_or_group_is_named(make_appliance, key, value, expected):
    extra = f'[server]\n{key} = "{value}"\n' + ('user = "nobody"\n' if key == "group" else "")
    app = make_appliance(extra, start=False)
    check = app.cli("check-config")
    assert check.returncode == 1
    assert f"{app.config_dir / '50-extra.toml'}: {expected}" in check.stdout
    served = subprocess.run(
        [sys.executable, "-m", "appliance", "serve", "--config-dir", str(app.config_dir)],
        capture_output=True, text=True, timeout=60)
    assert served.returncode == 1
    assert f"{app.config_dir / '50-extra.toml'}: {expected}" in served.stderr
