"""``[logging]`` outputs through the real server (docs/configuration.md): JSON lines
on stderr, text lines in a file (that logrotate may move away), and syslog
datagrams on /dev/log, each checked line by line after a real session."""

from __future__ import annotations

import json
import os
import re
import smtplib
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.peers import wait_for

from .conftest import have
from .test_receive import MSG, stored

LEVELS = {"debug", "info", "warning", "error"}
#: TextFormatter: "2026-01-31 12:00:00,123 info event key=value ..."
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (debug|info|warning|error) (\S+)(.*)")


def send_one(app) -> tuple[str, str]:
    """One message through the server; its (session id, queue id) from the spool."""
    with smtplib.SMTP("127.0.0.1", app.port, timeout=10) as c:
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    env, _ = stored(app)
    return env["session_id"], env["queue_id"]


def session_events(lines: list[tuple[str, str, str]], session: str) -> list[str]:
    """Event names of one session, from parsed (level, event, rest) text lines."""
    return [event for _, event, rest in lines if f" session={session} " in rest + " "]


def test_json_lines_on_stderr(make_appliance):
    app = make_appliance('[logging]\nformat = "json"\n')
    before = time.time()
    session, queue_id = send_one(app)
    wait_for(lambda: f'"event": "disconnect", "session": "{session}"' in app.log())
    records = [json.loads(line) for line in app.log().splitlines() if line.strip()]
    for r in records:  # every line on stderr is one JSON object of the documented shape
        assert isinstance(r, dict), r
        assert r["level"] in LEVELS and r["logger"].startswith("smtp_appliance"), r
        assert isinstance(r["event"], str) and r["event"], r
        assert before - 60 < r["time"] < time.time() + 1, r
    mine = [r for r in records if r.get("session") == session]
    events = [r["event"] for r in mine]
    assert events[0] == "connect" and events[-1] == "disconnect", events
    assert "queued" in events
    connect = mine[0]
    assert connect["listener"] == "mta" and connect["client"].startswith("[127.0.0.1]:")
    queued = next(r for r in mine if r["event"] == "queued")
    assert queued["queue_id"] == queue_id and queued["rcpts"] == 1
    assert queued["mail_from"] == "<a@example.org>" and queued["size"] > len(MSG)
    assert mine[-1]["messages"] == 1


def test_json_trace_lines_carry_the_session_key(make_appliance):
    app = make_appliance('[logging]\nformat = "json"\n')
    session, _ = send_one(app)
    wait_for(lambda: f'"session": "{session}"' in app.log())
    records = [json.loads(line) for line in app.log().splitlines() if line.strip()]
    about = [r for r in records if session in json.dumps(r)]
    assert about and all(r.get("session") == session for r in about), \
        [r for r in about if "session" not in r][:3]


def test_text_lines_in_a_file_that_may_be_rotated(make_appliance, tmp_path):
    path = tmp_path / "mail.log"
    app = make_appliance(f'[logging]\ndestination = "file"\nfile = "{path}"\nlevel = "info"\n')
    session, queue_id = send_one(app)

    def parsed(p):
        lines = p.read_text().splitlines() if p.exists() else []
        out = []
        for line in lines:
            m = TEXT_LINE.fullmatch(line)
            assert m, f"malformed log line: {line!r}"
            out.append(m.groups())
        return out

    lines = wait_for(lambda: (x := parsed(path)) and "disconnect" in session_events(x, session)
                     and x)
    assert {level for level, _, _ in lines} <= {"info", "warning", "error"}  # level = info
    assert session_events(lines, session) == ["connect", "queued", "disconnect"]
    assert any(e == "queued" and f" queue_id={queue_id} " in rest
               for _, e, rest in lines)
    assert any(e == "listening" for _, e, _ in lines)
    # nothing of it on stderr
    assert "queued" not in app.log() and "connect" not in app.log()
    # logrotate moves the file away: the next lines go to a new file of that name
    os.rename(path, tmp_path / "mail.log.1")
    second, _ = send_one(app)
    lines = wait_for(lambda: (x := parsed(path)) and "disconnect" in session_events(x, second)
                     and x)
    assert session_events(lines, second) == ["connect", "queued", "disconnect"]
    assert session_events(parsed(tmp_path / "mail.log.1"), second) == []


# -- syslog ---------------------------------------------------------------------------------
# The default syslog address is /dev/log (test_logging_classes.py points
# syslog_address at a socket of its own). Here the default itself is tested: the server
# is run in a private mount namespace (unshare) whose /dev holds the usual devices and,
# as /dev/log, a datagram socket of this test: the real server, the real handler.

DEV_LOG = r"""
set -e
real=$1 sock=$2
shift 2
mount --rbind /dev "$real"
mount -t tmpfs -o mode=755 tmpfs /dev
for n in null zero full random urandom; do
    if [ -e "$real/$n" ]; then touch "/dev/$n"; mount --bind "$real/$n" "/dev/$n"; fi
done
if [ -d "$real/shm" ]; then mkdir /dev/shm; mount --rbind "$real/shm" /dev/shm; fi
ln -s /proc/self/fd /dev/fd
touch /dev/log
mount --bind "$sock" /dev/log
exec "$@"
"""

#: syslog severities (RFC 5424 6.2.1) of our levels
SEVERITY = {"debug": 7, "info": 6, "warning": 4, "error": 3}
LOCAL3 = 19


def _can_unshare() -> bool:
    if not have("unshare") or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c",
                            "mount -t tmpfs tmpfs /dev"], capture_output=True)
    return probe.returncode == 0


class Receiver:
    """A syslog daemon's /dev/log: a unix datagram socket read all the time (a sender
    blocks when a few unread datagrams are queued)."""

    def __init__(self, path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.datagrams: list[bytes] = []
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while self.running:
            try:
                self.datagrams.append(self.sock.recv(65536))
            except TimeoutError:
                continue

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


def parse_syslog(datagram: bytes) -> tuple[str, str, str]:
    m = re.fullmatch(rb"<(\d+)>(.*)\x00", datagram, re.S)
    assert m, datagram
    parsed = TEXT_LINE.fullmatch(m.group(2).decode())
    assert parsed, datagram
    assert int(m.group(1)) == LOCAL3 * 8 + SEVERITY[parsed.group(1)], datagram
    return parsed.groups()


@pytest.mark.skipif(not _can_unshare(), reason="needs unshare with mount namespaces")
def test_syslog_datagrams_on_dev_log(make_appliance, tmp_path):
    receiver = Receiver(tmp_path / "log.sock")
    app = make_appliance('[logging]\ndestination = "syslog"\nsyslog_facility = "local3"\n',
                         start=False)
    (app.root / "realdev").mkdir()
    app._log = open(app.log_path, "ab")
    app.proc = subprocess.Popen(
        ["unshare", "--mount", "--map-root-user", "sh", "-c", DEV_LOG, "sh",
         str(app.root / "realdev"), str(tmp_path / "log.sock"),
         sys.executable, "-m", "appliance", "serve", "--config-dir", str(app.config_dir)],
        stdout=app._log, stderr=subprocess.STDOUT, cwd=app.root)
    try:
        app.wait_ready()
        session, queue_id = send_one(app)
        wait_for(lambda: "disconnect" in session_events(
            [parse_syslog(d) for d in receiver.datagrams], session))
    finally:
        receiver.close()
    lines = [parse_syslog(d) for d in receiver.datagrams]
    assert {level for level, _, _ in lines} >= {"debug", "info"}  # level = debug
    assert any(e == "listening" for _, e, _ in lines)
    events = session_events(lines, session)
    assert "trace" in events  # at debug every plugin's answer is traced, with the session
    assert [e for e in events if e != "trace"] == ["connect", "mail", "queued", "disconnect"]
    assert any(e == "queued" and f" queue_id={queue_id} " in rest for _, e, rest in lines)
    assert "queued" not in app.log()  # nothing on stderr
