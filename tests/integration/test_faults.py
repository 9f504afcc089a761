"""Faults injected into the real server: disk errors in the spool's writes and fsyncs
(an LD_PRELOAD shim, tests/integration/faultshim.c, built here with gcc: the server's
code is not touched) and a worker killed outright. Each fault must give a 4xx, a log
line, no 250, nothing half-written visible in queue/, and the server must go on."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import smtplib
import subprocess
from pathlib import Path

import pytest

from tests.peers import wait_for

from .conftest import Appliance
from .test_receive import connect, talk
from .test_spool_space import MIB, small_tmpfs  # noqa: F401 - a fixture
from .test_workers import worker_of, workers

SHIM_SOURCE = Path(__file__).with_name("faultshim.c")


@pytest.fixture(scope="session")
def shim(tmp_path_factory) -> Path:
    if not shutil.which("gcc"):
        pytest.skip("gcc not found (run `make deps-system`)")
    out = tmp_path_factory.mktemp("shim") / "faultshim.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(out),
                    str(SHIM_SOURCE), "-ldl"], check=True, capture_output=True)
    return out


@pytest.fixture
def faulty(make_appliance, shim, tmp_path, monkeypatch):
    """A server whose write/fsync/fdatasync fail as ``control`` says (see the shim)."""
    control = tmp_path / "faults"
    control.write_text("")
    app = make_appliance(start=False)
    monkeypatch.setenv("LD_PRELOAD", str(shim))
    monkeypatch.setenv("FAULT_CONTROL", str(control))
    app.start()
    monkeypatch.delenv("LD_PRELOAD")
    return app, control


MESSAGE = b"From: a@example.org\r\nSubject: fault\r\n\r\nbody\r\n.\r\n"


def send_message(sock) -> bytes:
    for line, code in ((b"MAIL FROM:<a@example.org>\r\n", b"250"),
                       (b"RCPT TO:<b@example.net>\r\n", b"250"), (b"DATA\r\n", b"354")):
        assert talk(sock, line).startswith(code)
    return talk(sock, MESSAGE)


def visible(app) -> list[str]:
    """Files a consumer of queue/ could see, and what is left in tmp/."""
    return sorted(p.name for d in (app.spool / "queue", app.spool / "tmp") if d.exists()
                  for p in d.iterdir())


FAULTS = [(call, suffix, err) for call, suffix in (("write", ".msg"), ("fsync", ".msg"),
                                                   ("write", ".json"), ("fsync", ".json"),
                                                   ("fsync", "/queue"))
          for err in (errno.EIO, errno.ENOSPC)]


@pytest.mark.parametrize("call, suffix, err", FAULTS,
                         ids=[f"{c}-{s.strip('./')}-{errno.errorcode[e]}" for c, s, e in FAULTS])
def test_disk_error_gives_4xx_log_line_and_leaves_nothing(faulty, call, suffix, err):
    app, control = faulty
    sock = connect(app)
    assert talk(sock, b"EHLO client.example\r\n").startswith(b"250")
    control.write_text(f"{call} {os.path.realpath(app.spool)} {suffix} {err}\n")
    reply = send_message(sock)
    expected = b"452 4.3.1 " if err == errno.ENOSPC else b"451 4.3.0 "
    assert reply.startswith(expected), reply
    assert visible(app) == []
    line = wait_for(lambda: next((ln for ln in app.log().splitlines() if "queue_failed" in ln),
                                 None), "the queue_failed log line")
    assert os.strerror(err) in line, line

    control.write_text("")  # the disk is back: the same session goes on
    assert send_message(sock).startswith(b"250 2.0.0 Ok: queued as ")
    assert len(app.queued()) == 1
    sock.close()


def test_a_full_disk_while_a_large_body_is_staged(tmp_path, small_tmpfs):  # noqa: F811
    """A real ENOSPC (a 16 MiB tmpfs holds the spool): a 20 MiB body fills it while it
    is staged in tmp/ (the path the shim does not see). 452 4.3.1, nothing left, and
    the space is given back: the next message is stored."""
    app = Appliance(tmp_path / "app", '[limits]\nmax_message_size = "40 MiB"\n',
                    {"mta": {}}, None)
    (app.config_dir / "60-spool.toml").write_text(f'[queue]\ndirectory = "{small_tmpfs}"\n')
    app.spool = Path(small_tmpfs)
    app.start()
    try:
        with smtplib.SMTP("127.0.0.1", app.port, timeout=60) as c:
            big = b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * (20 * MIB // 78)
            with pytest.raises(smtplib.SMTPDataError) as refused:
                c.sendmail("a@example.org", ["b@example.net"], big)
            assert refused.value.smtp_code == 452
            assert refused.value.smtp_error.startswith(b"4.3.1 ")
            assert visible(app) == []
            assert c.sendmail("a@example.org", ["b@example.net"], MESSAGE[:-3]) == {}
    finally:
        app.stop()
    assert 'error queue_failed' in app.log() and "No space left on device" in app.log()
    assert len(app.queued()) == 1


def test_a_killed_worker_is_replaced_and_the_others_keep_serving(make_appliance):
    app = make_appliance("[server]\nworkers = 2\n")
    pids = wait_for(lambda: len(workers(app)) == 2 and workers(app), "two workers", 15)
    # A session held open on one worker, then the other worker killed outright.
    held = connect(app)
    assert talk(held, b"EHLO client.example\r\n").startswith(b"250")
    survivor = worker_of(app, held, pids)
    victim = (pids - {survivor}).pop()
    os.kill(victim, signal.SIGKILL)
    replaced = wait_for(lambda: (w := workers(app)) - pids and len(w) == 2 and w,
                        "the killed worker's replacement")
    assert survivor in replaced and victim not in replaced
    assert "worker_died" in app.log()
    assert send_message(held).startswith(b"250 2.0.0 Ok: queued as ")
    held.close()
    for _ in range(6):  # new connections, to whichever worker takes them
        s = connect(app)
        assert talk(s, b"EHLO client.example\r\n").startswith(b"250")
        assert send_message(s).startswith(b"250 2.0.0 ")
        s.close()
    assert len(app.queued()) == 7
