"""Signals, crash safety, a full disk, and the command-line tools."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time

import pytest

from appliance.spool import RECOVER_GRACE

from .conftest import read_reply
from .test_receive import MSG, connect, stored, talk


def test_sigterm_idle_gets_421_data_session_finishes(make_appliance):
    app = make_appliance()
    idle = connect(app)
    talk(idle, b"EHLO idle.example\r\n")
    busy = connect(app)
    talk(busy, b"EHLO busy.example\r\nMAIL FROM:<a@example.org>\r\n")
    talk(busy, b"RCPT TO:<b@example.net>\r\n")
    assert talk(busy, b"DATA\r\n").startswith(b"354")
    busy.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
    time.sleep(0.3)
    app.signal(signal.SIGTERM)
    assert read_reply(idle).startswith(b"421 4.3.2")
    busy.sendall(b"second half\r\n.\r\n")
    # the 250 for its message, then it is told to go (both may come in one segment)
    rest = b""
    while chunk := busy.recv(65536):
        rest += chunk
    lines = rest.split(b"\r\n")
    assert lines[0].startswith(b"250 2.0.0 Ok: queued as")
    assert lines[1].startswith(b"421 4.3.2") and lines[2:] == [b""]
    assert app.proc.wait(20) == 0
    assert len(app.queued()) == 1
    # nothing listens any more
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", app.port), timeout=2)


def test_sighup_reload_new_sessions_new_config_old_sessions_keep_theirs(make_appliance):
    app = make_appliance("[limits]\nmax_recipients = 1\n")
    old = connect(app)
    talk(old, b"EHLO old.example\r\nMAIL FROM:<a@example.org>\r\n")
    (app.config_dir / "50-extra.toml").write_text(
        '[server]\nbanner = "#HostName# reloaded"\n[limits]\nmax_recipients = 5\n')
    app.signal(signal.SIGHUP)
    for _ in range(100):
        if "reloaded" in app.log():
            break
        time.sleep(0.05)
    new = socket.create_connection(("127.0.0.1", app.port), timeout=10)
    assert read_reply(new) == b"220 mx.test.example reloaded\r\n"
    # the session opened before the reload keeps max_recipients = 1
    assert talk(old, b"RCPT TO:<r1@example.net>\r\n").startswith(b"250")
    assert talk(old, b"RCPT TO:<r2@example.net>\r\n").startswith(b"452 4.5.3")
    # a broken config is refused and the running one stays
    (app.config_dir / "60-broken.toml").write_text("[limits]\nmax_recipients = \"many\"\n")
    app.signal(signal.SIGHUP)
    for _ in range(100):
        if "reload_refused" in app.log():
            break
        time.sleep(0.05)
    assert "reload_refused" in app.log() and "60-broken.toml" in app.log()
    again = socket.create_connection(("127.0.0.1", app.port), timeout=10)
    assert read_reply(again) == b"220 mx.test.example reloaded\r\n"


def _wait_log(app, text):
    for _ in range(200):
        if text in app.log():
            return
        time.sleep(0.05)


def test_plugin_area_per_listener_check_config_and_reload(make_appliance):
    """The test-notice fixture plugin owns [test-notice]: each listener's effective table
    reaches its hook, check-config shows it, and a bad area key on reload is refused."""
    app = make_appliance(
        """
        [plugins.test-notice]
        enabled = true
        [test-notice.reply]
        text = "global notice"
        [listeners.b.test-notice.reply]
        text = "notice for b"
        """,
        listeners={"a": {}, "b": {}},
    )

    def mail_reply(listener):
        s = connect(app, app.ports[listener])
        talk(s, b"EHLO client.example\r\n")
        reply = talk(s, b"MAIL FROM:<x@example.org>\r\n")
        s.close()
        return reply

    assert mail_reply("a") == b"550 5.7.1 global notice\r\n"
    assert mail_reply("b") == b"550 5.7.1 notice for b\r\n"
    r = app.cli("check-config", "--listener", "b")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [" ".join(line.split()) for line in r.stdout.splitlines()]
    extra = app.config_dir / "50-extra.toml"
    assert "[listeners.b.test-notice.reply]" in lines
    assert f'text = "notice for b" # listener override, {extra}' in lines
    assert 'enhanced = "5.7.1" # [test-notice], default' in lines
    # a typo in the area on reload is refused; the running config stays
    (app.config_dir / "60-broken.toml").write_text("[test-notice]\ncod = 421\n")
    app.signal(signal.SIGHUP)
    _wait_log(app, "reload_refused")
    log = app.log()
    assert "reload_refused" in log and "60-broken.toml" in log and "test-notice.cod" in log
    assert mail_reply("b") == b"550 5.7.1 notice for b\r\n"
    r = app.cli("check-config")
    assert r.returncode == 1
    assert f"{app.config_dir / '60-broken.toml'}: test-notice.cod: unknown key 'cod'" in r.stdout


def _sender(port, count, acked, stop):
    """Send messages one per transaction; record the queue id of every 250."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        read_reply(s)
        talk(s, b"EHLO load.example\r\n")
        for i in range(count):
            if stop.is_set():
                return
            talk(s, b"MAIL FROM:<load@example.org>\r\n")
            talk(s, b"RCPT TO:<b@example.net>\r\n")
            talk(s, b"DATA\r\n")
            body = b"Subject: load %d\r\n\r\n" % i + (b"x" * 98 + b"\r\n") * 20
            reply = talk(s, body + b".\r\n")
            if reply.startswith(b"250 "):
                acked.append(reply.split()[-1].decode())
    except OSError:
        return


def test_kill_9_under_load_loses_nothing_acknowledged(make_appliance):
    app = make_appliance('[limits]\nmax_messages_per_session = 0\n')
    acked: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_sender, args=(app.port, 400, acked, stop))
               for _ in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 150 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(acked) >= 150, app.log()[-2000:]
    app.proc.send_signal(signal.SIGKILL)
    app.proc.wait()
    stop.set()
    for t in threads:
        t.join(30)
    queue = app.spool / "queue"
    names = {p.name for p in queue.iterdir()}
    for qid in acked:  # every 250 is a whole message
        assert f"{qid}.json" in names and f"{qid}.msg" in names, qid
        env = json.loads((queue / f"{qid}.json").read_text())
        assert env["size"] == (queue / f"{qid}.msg").stat().st_size
    # every committed envelope has its message; nothing half-committed is visible
    for name in names:
        stem, ext = name.rsplit(".", 1)
        if ext == "json":
            assert f"{stem}.msg" in names
    # after a restart, recovery clears what a crash left in tmp/ and orphan .msg files
    # once they are older than its grace period (a younger one may be a running
    # writer's that has not locked it yet): here, as if the restart came later
    then = time.time() - 2 * RECOVER_GRACE
    for p in [*(app.spool / "tmp").iterdir(), *queue.glob("*.msg")]:
        os.utime(p, (then, then))
    app.start()
    assert list((app.spool / "tmp").iterdir()) == []
    msgs = {p.stem for p in queue.glob("*.msg")}
    jsons = {p.stem for p in queue.glob("*.json")}
    assert msgs == jsons and set(acked) <= jsons


@pytest.fixture
def tiny_fs(tmp_path):
    """A 1 MiB tmpfs to fill up; skipped where mounting is not allowed."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_disk_full_gives_452_and_leaves_nothing(make_appliance, tiny_fs):
    app = make_appliance(start=False)
    conf = app.config_dir / "00-test.toml"
    conf.write_text(conf.read_text().replace(str(app.spool), str(tiny_fs / "spool")))
    app.spool = tiny_fs / "spool"
    app.start()
    big = b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 1500  # 1.5 MB > 1 MiB
    with smtplib.SMTP("127.0.0.1", app.port) as c:
        c.ehlo("full.example")
        with pytest.raises(smtplib.SMTPDataError) as e:
            c.sendmail("a@example.org", ["b@example.net"], big)
        assert (e.value.smtp_code, e.value.smtp_error[:5]) == (452, b"4.3.1")
        # the server keeps running and takes a message that fits
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    assert len(app.queued()) == 1
    assert list((app.spool / "tmp").iterdir()) == []
    assert len(list((app.spool / "queue").glob("*.msg"))) == 1
    # a storage failure is an error for the admin, with the system's reason
    assert re.search(r" error queue_failed session=\w+ queue_id=\w+ .*Errno 28\]", app.log())


def test_disk_full_at_the_queue_commit_is_logged_as_an_error(make_appliance, tiny_fs):
    app = make_appliance(start=False)
    conf = app.config_dir / "00-test.toml"
    conf.write_text(conf.read_text().replace(str(app.spool), str(tiny_fs / "spool")))
    app.spool = tiny_fs / "spool"
    app.start()
    filler = tiny_fs / "filler"
    with open(filler, "wb", buffering=0) as f:  # the disk fills up while the server runs
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    with smtplib.SMTP("127.0.0.1", app.port) as c:  # a small message: held in memory
        with pytest.raises(smtplib.SMTPDataError) as e:
            c.sendmail("a@example.org", ["b@example.net"], MSG)
        assert (e.value.smtp_code, e.value.smtp_error[:5]) == (452, b"4.3.1")
    assert app.queued() == []
    assert re.search(r" error queue_failed session=\w+ queue_id=\w+ .*Errno 28\]", app.log())
    assert not re.search(r" info queue_failed ", app.log())


def test_queue_cli_list_show_delete_count(appliance):
    with smtplib.SMTP("127.0.0.1", appliance.port) as c:
        c.sendmail("a@example.org", ["b@example.net"], MSG)
        c.sendmail("c@example.org", ["d@example.net"], MSG)
    count = appliance.cli("queue", "count")
    assert count.stdout.strip() == "2"
    listing = json.loads(appliance.cli("queue", "list", "--json").stdout)
    assert [m["mail_from"] for m in listing] == ["a@example.org", "c@example.org"]
    text = appliance.cli("queue", "list").stdout
    assert "<a@example.org> -> <b@example.net>" in text
    qid = listing[0]["queue_id"]
    shown = appliance.cli("queue", "show", qid)
    assert shown.returncode == 0 and f"queue id:    {qid}" in shown.stdout
    assert "accepted by default" in shown.stdout
    assert appliance.cli("queue", "delete", qid).returncode == 0
    assert appliance.cli("queue", "count").stdout.strip() == "1"
    missing = appliance.cli("queue", "show", qid)
    assert missing.returncode == 1 and "no message" in missing.stderr


def test_check_config_cli(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    (good / "10-l.toml").write_text("[listeners.mx]\nport = 2525\n")
    r = subprocess.run([sys.executable, "-m", "appliance", "check-config", "--config-dir",
                        str(good)], capture_output=True, text=True)
    assert r.returncode == 0 and "configuration OK" in r.stdout
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "10-l.toml").write_text("[listeners.mx]\nport = 2525\n[limits]\nmax_rcpt = 3\n")
    r = subprocess.run([sys.executable, "-m", "appliance", "check-config", "--config-dir",
                        str(bad)], capture_output=True, text=True)
    assert r.returncode == 1
    assert f"{bad / '10-l.toml'}: limits.max_rcpt: unknown key" in r.stdout


def test_no_monkey_patch_warning_and_serve_refuses_bad_config(appliance, tmp_path):
    log = appliance.log()
    assert "MonkeyPatchWarning" not in log and "Traceback" not in log
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "10.toml").write_text("[listeners.mx]\nport = 0\n")
    r = subprocess.run([sys.executable, "-m", "appliance", "serve", "--config-dir", str(bad)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "listeners.mx.port" in r.stderr


def _worker_pid(app, index: int) -> int:
    """The pid of the worker process that received a stored message (test-worker)."""
    _, data = stored(app, index)
    return int(re.search(rb"\r\nX-Worker-Pid: (\d+)\r\n", data).group(1))


def test_workers_share_the_listening_socket(make_appliance, tmp_path):
    held_pid = tmp_path / "held.pid"
    app = make_appliance(f"""
        [server]
        workers = 2
        [plugins.test-worker]
        enabled = true
        hold = "2s"
        held_pid_file = "{held_pid}"
        """)
    deadline = time.monotonic() + 10  # the supervisor logs the pids once both are forked
    while not (forked := re.search(r" workers count=2 pids=(\d+),(\d+)\n", app.log())):
        assert time.monotonic() < deadline, app.log()
        time.sleep(0.05)
    workers = {int(p) for p in forked.groups()}
    children = subprocess.run(["pgrep", "-P", str(app.proc.pid)], capture_output=True,
                              text=True).stdout.split()
    assert {int(p) for p in children} == workers and len(workers) == 2
    for _ in range(20):
        with smtplib.SMTP("127.0.0.1", app.port) as c:
            c.sendmail("a@example.org", ["b@example.net"], MSG)
    assert len(app.queued()) == 20
    assert {_worker_pid(app, i) for i in range(20)} <= workers
    # One worker is held busy (blocked in a plugin): a new connection on the same
    # port is then accepted and served by the other one.
    held = connect(app)
    held.sendall(b"EHLO hold.example\r\n")
    deadline = time.monotonic() + 10
    while not held_pid.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    with smtplib.SMTP("127.0.0.1", app.port, timeout=10) as c:
        c.sendmail("a@example.org", ["b@example.net"], MSG)
    assert read_reply(held).startswith(b"250-")
    talk(held, b"MAIL FROM:<a@example.org>\r\n")
    talk(held, b"RCPT TO:<b@example.net>\r\n")
    assert talk(held, b"DATA\r\n").startswith(b"354")
    assert talk(held, MSG + b".\r\n").startswith(b"250 2.0.0 Ok: queued as")
    held.close()
    served = {_worker_pid(app, 20), _worker_pid(app, 21)}
    assert served == workers and int(held_pid.read_text()) in served
    assert app.stop() == 0
    for pid in children:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(
            f"/proc/{pid}/status").read().lower()
