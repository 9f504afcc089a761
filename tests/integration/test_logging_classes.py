"""``[logging]`` event classes and outputs through the real server: all four
outputs at once, AUTH secrets in none of them, per-class thresholds, and the log
file reopened on SIGUSR1 by the supervisor and its workers.

syslog and the journal are each a unix datagram socket owned by the test, standing
in for the syslog daemon (``syslog_address``) and for systemd-journald
(``journal_socket``): no journald runs here, so the journal side is a stand-in that
reads the datagrams as journald would (``parse_journal``), not journald itself.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import smtplib

from appliance.users import make_entry, write_users
from tests.peers import wait_for

from ..unit.test_observability import parse_journal
from .test_logging_outputs import TEXT_LINE, Receiver, send_one
from .test_receive import MSG
from .test_tls import client_context

PASSWORD = "Tr0ub4dor&3-horse"
WRONG = "not-the-Passw0rd"


def _secrets() -> list[bytes]:
    """Every spelling of the secrets a log could leak: as typed, and as AUTH PLAIN
    and AUTH LOGIN send them (base64)."""
    out = []
    for word in (PASSWORD, WRONG):
        out += [word.encode(), base64.b64encode(word.encode()),
                base64.b64encode(b"\0alice\0" + word.encode()),
                base64.b64encode(b"alice\0alice\0" + word.encode())]
    return out


def _disconnected_after_ehlo(text: str) -> int:
    """How many of the sessions that said EHLO client.example have ended."""
    said = {m[1] for m in re.finditer(r'command session=(\S+) line="EHLO client.example"', text)}
    ended = {m[1] for m in re.finditer(r" disconnect session=(\S+)", text)}
    return len(said & ended)


def test_every_output_at_once_with_the_transcript_and_no_secret_anywhere(
        make_appliance, tmp_path, certs):
    users = tmp_path / "users.toml"
    write_users(users, {"alice": make_entry("alice", PASSWORD, ["PLAIN", "LOGIN"],
                                            "mx.test.example")})
    syslog, journal = Receiver(tmp_path / "s.sock"), Receiver(tmp_path / "j.sock")
    log_file = tmp_path / "mail.log"
    app = make_appliance(f"""
        [auth]
        users_file = "{users}"
        failure_delay = "0.1s"
        [logging]
        destination = ["stderr", "file", "syslog", "journal"]
        file = "{log_file}"
        syslog_address = "unix:{tmp_path / 's.sock'}"
        syslog_facility = "local3"
        journal_socket = "{tmp_path / 'j.sock'}"
        [logging.classes]
        transcript = "info"
        """, listeners={"mta": {"tls_mode": "starttls"}})
    try:
        for mechanism, password in (("PLAIN", PASSWORD), ("LOGIN", PASSWORD),
                                    ("PLAIN", WRONG), ("LOGIN", WRONG)):
            with smtplib.SMTP("localhost", app.port, timeout=10) as c:
                c.starttls(context=client_context(certs))
                c.ehlo("client.example")
                c.user, c.password = "alice", password
                try:
                    code, _ = c.auth(mechanism, getattr(c, f"auth_{mechanism.lower()}"),
                                     initial_response_ok=mechanism == "PLAIN")
                except smtplib.SMTPAuthenticationError as exc:
                    code = exc.smtp_code
                assert code == (235 if password == PASSWORD else 535)
                if code == 235:
                    assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
        wait_for(lambda: _disconnected_after_ehlo(log_file.read_text()) == 4)
        # the fixture's readiness probe may be a session too: as many as in the file
        disconnects = log_file.read_text().count(" disconnect ")
        wait_for(lambda: sum(b"EVENT=disconnect\n" in d for d in journal.datagrams)
                 == disconnects)
        wait_for(lambda: sum(b" disconnect " in d for d in syslog.datagrams) == disconnects)
    finally:
        syslog.close()
        journal.close()
    outputs = {"stderr": app.log().encode(), "file": log_file.read_bytes(),
               "syslog": b"\n".join(syslog.datagrams), "journal": b"\n".join(journal.datagrams)}
    for name, text in outputs.items():
        # the transcript was on, in every output: the secrets had every chance
        assert b"AUTH PLAIN (initial response not logged)" in text, name
        assert b"(AUTH response not logged)" in text, name  # LOGIN's username, password
        assert b"MAIL FROM:<a@example.org>" in text, name
        for secret in _secrets():
            assert secret not in text, (name, secret)
    # the journal's entries carry the events' fields as fields
    entries = [parse_journal(d) for d in journal.datagrams]
    queued = [e for e in entries if e.get("EVENT") == "queued"]
    assert len(queued) == 2 and all(e["QUEUE_ID"] and e["SESSION"] for e in queued)
    assert {e["EVENT_CLASS"] for e in queued} == {"queue"}
    assert all(e["PRIORITY"] == "6" and e["SYSLOG_FACILITY"] == "19" for e in queued)
    failed = [e for e in entries if e.get("EVENT") == "auth_failed"]
    assert len(failed) == 2 and {e["PRIORITY"] for e in failed} == {"4"}  # warning
    assert {e["MECHANISM"] for e in failed} == {"PLAIN", "LOGIN"}
    # syslog: local3 (19) and the severity of each line's level
    for d in syslog.datagrams:
        m = re.fullmatch(rb"<(\d+)>(.*)\x00", d, re.S)
        level = TEXT_LINE.fullmatch(m.group(2).decode()).group(1)
        assert int(m.group(1)) == 19 * 8 + {"debug": 7, "info": 6, "warning": 4,
                                            "error": 3}[level], d


def test_each_class_has_its_own_threshold(make_appliance, tmp_path):
    log_file = tmp_path / "mail.log"
    app = make_appliance(f"""
        [logging]
        destination = "file"
        file = "{log_file}"
        level = "info"
        [logging.classes]
        connection = "off"
        verdict = "warning"
        """)
    with smtplib.SMTP("127.0.0.1", app.port, timeout=10) as c:
        c.ehlo("client.example")
        assert c.docmd("MAIL FROM:<not an address")[0] == 501  # a refusal: verdict, info
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    wait_for(lambda: " disconnect " in log_file.read_text())
    events = [TEXT_LINE.fullmatch(line).group(2) for line in log_file.read_text().splitlines()]
    assert "connect" not in events and "reply" not in events and "mail" not in events
    assert "queued" in events and "disconnect" in events and "listening" in events
    # a reload brings the classes' new levels
    (app.config_dir / "60-classes.toml").write_text('[logging.classes]\nconnection = ""\n')
    assert app.cli("reload").returncode == 0
    session, _ = send_one(app)
    wait_for(lambda: f"disconnect session={session}" in log_file.read_text())
    assert f"connect session={session}" in log_file.read_text()


def _log_files_open(pid: int) -> set[str]:
    """The log files process ``pid`` has open (/proc/PID/fd)."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if "mail.log" in target:
            found.add(os.path.basename(target))
    return found


def test_sigusr1_reopens_the_file_in_every_process(make_appliance, tmp_path):
    log_file = tmp_path / "mail.log"
    app = make_appliance(f"""
        [server]
        workers = 2
        [logging]
        destination = "file"
        file = "{log_file}"
        format = "json"
        level = "info"
        """)
    session, _ = send_one(app)
    wait_for(lambda: f'"event": "disconnect", "session": "{session}"' in log_file.read_text())
    supervisor = app.proc.pid
    workers = [int(p) for p in open(f"/proc/{supervisor}/task/{supervisor}/children")
               .read().split()]
    assert len(workers) == 2
    os.rename(log_file, tmp_path / "mail.log.1")  # logrotate's move, before its postrotate
    for pid in (supervisor, *workers):
        assert _log_files_open(pid) == {"mail.log.1"}
    app.signal(signal.SIGUSR1)
    # reopened at the signal, by every process, before any new line
    for pid in (supervisor, *workers):
        wait_for(lambda pid=pid: _log_files_open(pid) == {"mail.log"})
    assert log_file.read_text() == ""
    sessions = [send_one(app)[0] for _ in range(3)]
    wait_for(lambda: log_file.read_text().count('"event": "disconnect"') == 3)
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert {r["session"] for r in records if r["event"] == "queued"} == set(sessions)
    assert [r["event"] for r in records if r.get("session") == sessions[0]] == \
        ["connect", "queued", "disconnect"]
    old = (tmp_path / "mail.log.1").read_text()
    assert not any(s in old for s in sessions)


def test_no_journal_or_syslog_daemon_at_the_socket(make_appliance, tmp_path):
    """check-config says so, naming the key; serve refuses to start, naming it too."""
    app = make_appliance(f"""
        [logging]
        destination = ["stderr", "journal", "syslog"]
        journal_socket = "{tmp_path / 'nojournal.sock'}"
        syslog_address = "unix:{tmp_path / 'nosyslog.sock'}"
        """, start=False)
    check = app.cli("check-config")
    assert check.returncode == 1
    assert (f"50-extra.toml: logging.journal_socket: {tmp_path / 'nojournal.sock'} is not a "
            "socket: is the journal running?") in check.stdout
    assert f"logging.syslog_address: {tmp_path / 'nosyslog.sock'} is not a socket" in check.stdout
    app.start(wait=False)
    assert app.proc.wait(20) == 1
    assert f"logging.journal_socket {tmp_path / 'nojournal.sock'}: " in app.log()
