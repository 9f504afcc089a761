"""Plugins through the real entry-point machinery: verdicts at every event, the
failure policy, monitor mode, the decision trace, header and recipient
operations, read-only context rules, the example third-party plugin."""

from __future__ import annotations

import json
import smtplib
import socket
import threading
import time

import pytest

from .conftest import read_reply
from .test_receive import MSG, connect, stored, talk

SCRIPTED = """
[plugins.test-scripted]
enabled = true
{mode}
[[plugins.test-scripted.rules]]
event = "{event}"
action = "{action}"
match = "{match}"
{extra}
"""


def scripted(event, action, match="", extra="", mode=""):
    return SCRIPTED.format(event=event, action=action, match=match, extra=extra, mode=mode)


def transaction(s, rcpt=b"b@example.net", body=b"Subject: t\r\n\r\nhi\r\n"):
    """Run one transaction; returns the replies of MAIL, RCPT, DATA, end of data."""
    out = [talk(s, b"MAIL FROM:<a@example.org>\r\n"), talk(s, b"RCPT TO:<%s>\r\n" % rcpt)]
    out.append(talk(s, b"DATA\r\n"))
    if out[-1].startswith(b"354"):
        out.append(talk(s, body + b".\r\n"))
    return out


@pytest.mark.parametrize("event,index", [("mail_from", 0), ("rcpt_to", 1),
                                         ("data_start", 2), ("headers_received", 3),
                                         ("message", 3)])
def test_reject_at_each_event_with_custom_reply(make_appliance, event, index):
    app = make_appliance(scripted(event, "reject", extra='code = 554\nenhanced = "5.7.9"\n'
                                                         'text = "no thanks"'))
    s = connect(app)
    talk(s, b"EHLO e.example\r\n")
    replies = transaction(s)
    assert replies[index] == b"554 5.7.9 no thanks\r\n", replies
    assert app.queued() == []
    assert talk(s, b"NOOP\r\n").startswith(b"250")  # session goes on
    assert f"trace {event} test-scripted reject 554 5.7.9" in app.log()


def test_tmpreject_and_defaults(make_appliance):
    app = make_appliance(scripted("rcpt_to", "tmpreject", match="later"))
    s = connect(app)
    talk(s, b"EHLO t.example\r\nMAIL FROM:<a@example.org>\r\n")
    assert talk(s, b"RCPT TO:<later@example.net>\r\n").startswith(b"451 4.7.1")
    assert talk(s, b"RCPT TO:<now@example.net>\r\n").startswith(b"250 2.1.5")


def test_abort_closes_session(make_appliance):
    app = make_appliance(scripted("ehlo", "abort", match="evil"))
    s = connect(app)
    assert talk(s, b"EHLO evil.example\r\n").startswith(b"421 4.7.0")
    assert s.recv(10) == b""


def test_connect_reject_gives_554_greeting_then_only_quit(make_appliance):
    app = make_appliance(scripted("connect", "reject", extra='text = "go away"'))
    s = socket.create_connection(("127.0.0.1", app.port), timeout=10)
    assert read_reply(s) == b"554 5.7.1 mx.test.example go away\r\n"
    assert talk(s, b"EHLO x.example\r\n").startswith(b"503")
    assert talk(s, b"QUIT\r\n").startswith(b"221")


def test_connect_tmpreject_closes_with_421(make_appliance):
    app = make_appliance(scripted("connect", "tmpreject"))
    s = socket.create_connection(("127.0.0.1", app.port), timeout=10)
    assert read_reply(s).startswith(b"421 ")
    assert s.recv(10) == b""


def test_discard_recipient_and_message(make_appliance):
    app = make_appliance(scripted("message", "discard", match="drop"))
    with smtplib.SMTP("127.0.0.1", app.port) as c:
        assert c.sendmail("drop@example.org", ["b@example.net"], MSG) == {}
        assert c.sendmail("keep@example.org", ["b@example.net"], MSG) == {}
    assert len(app.queued()) == 1
    assert stored(app)[0]["mail_from"]["address"] == "keep@example.org"


def test_monitor_mode_logs_but_accepts(make_appliance):
    app = make_appliance(scripted("rcpt_to", "reject", mode='mode = "monitor"'))
    with smtplib.SMTP("127.0.0.1", app.port) as c:
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    env, _ = stored(app)
    decided = [e for e in env["trace"] if e["action"] != "continue"]  # debug: all results
    assert decided == [{"event": "rcpt_to", "plugin": "test-scripted",
                             "action": "reject", "code": 550, "enhanced": "5.7.1",
                             "text": "Rejected by policy", "mode": "monitor"}]
    shown = app.cli("queue", "show", env["queue_id"])
    assert shown.returncode == 0, shown.stderr
    assert "rcpt_to" in shown.stdout and "(monitor)" in shown.stdout


def test_plugin_that_raises_gives_451_and_session_survives(make_appliance):
    app = make_appliance('[plugins.test-raise]\nenabled = true\nevent = "rcpt_to"\n')
    s = connect(app)
    talk(s, b"EHLO r.example\r\nMAIL FROM:<a@example.org>\r\n")
    assert talk(s, b"RCPT TO:<b@example.net>\r\n") == (
        b"451 4.3.0 Internal error in a policy plugin, try again later\r\n")
    assert talk(s, b"RSET\r\n").startswith(b"250")
    log = app.log()
    assert "plugin test-raise failed in on_rcpt_to" in log
    assert "RuntimeError: test-raise in rcpt_to" in log and "Traceback" in log


def test_plugin_time_budget(make_appliance):
    app = make_appliance('[server]\nplugin_timeout = "1s"\n'
                         '[plugins.test-slow]\nenabled = true\nevent = "mail_from"\n'
                         'delay = "60s"\n')
    s = connect(app)
    talk(s, b"EHLO slow.example\r\n")
    assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"451 4.3.0")
    assert "TimeBudgetExceeded" in app.log()
    # the session's budget is restarted for each call: it fires again, and only then
    assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"451 4.3.0")
    assert talk(s, b"NOOP\r\n").startswith(b"250")
    assert app.log().count("TimeBudgetExceeded") >= 2


def test_first_result_hooks_have_the_time_budget_too(make_appliance):
    """The hand-off (queue_message) is bounded by [queue] timeout, not plugin_timeout."""
    app = make_appliance('[server]\nplugin_timeout = "30s"\n[queue]\ntimeout = "1s"\n'
                         '[plugins.test-slow]\nenabled = true\nevent = "queue_message"\n'
                         'delay = "60s"\n')
    s = connect(app)
    talk(s, b"EHLO slow.example\r\n")
    started = time.monotonic()
    replies = transaction(s)
    assert replies[-1] == b"451 4.3.0 Could not queue the message, try again later\r\n"
    assert time.monotonic() - started < 10
    assert app.queued() == []
    assert "queue_failed" in app.log() and "TimeBudgetExceeded" in app.log()
    assert talk(s, b"NOOP\r\n").startswith(b"250")  # the session goes on


def test_slow_plugin_blocks_only_its_own_session(make_appliance):
    app = make_appliance('[plugins.test-slow]\nenabled = true\nevent = "rcpt_to"\n'
                         'delay = "3s"\n')
    order = []
    slow = connect(app)
    talk(slow, b"EHLO slow.example\r\nMAIL FROM:<a@example.org>\r\n")

    def slow_rcpt():
        talk(slow, b"RCPT TO:<b@example.net>\r\n")
        order.append("slow rcpt answered")

    t = threading.Thread(target=slow_rcpt)
    t.start()
    # a second client gets its banner and a full HELO/NOOP round trip meanwhile
    fast = connect(app)
    assert talk(fast, b"HELO fast.example\r\n").startswith(b"250")
    assert talk(fast, b"NOOP\r\n").startswith(b"250")
    order.append("fast done")
    t.join(30)
    assert order == ["fast done", "slow rcpt answered"]


def test_header_and_recipient_operations(make_appliance):
    app = make_appliance('[plugins.test-edit]\nenabled = true\ndelay_delivery = "+2h"\n')
    msg = (b"Subject: original\r\nX-Remove-Me: 1\r\nX-Multi: one\r\nX-Multi: two\r\n"
           b"X-Present: yes\r\nX-Remove-Me: 2\r\n\r\nbody\r\n")
    with smtplib.SMTP("127.0.0.1", app.port) as c:
        refused = c.sendmail("a@example.org", ["keep@example.net", "discard@example.net",
                                               "rewrite@example.net", "copy@example.net",
                                               "dropme@example.net"], msg)
        assert refused == {}
    env, data = stored(app)
    rcpts = {r["address"]: r for r in env["recipients"]}
    assert list(rcpts) == ["keep@example.net", "rewritten@example.net", "copy@example.net",
                           "copy-extra@example.net"]
    assert rcpts["rewritten@example.net"]["folder"] == "Archive"
    assert rcpts["rewritten@example.net"]["relay_host"] == "[192.0.2.1]:25"
    assert rcpts["copy-extra@example.net"]["folder"] == "Copies"
    head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    assert b"X-Remove-Me" not in head
    assert b"X-Multi: one\r\n" in head and b"X-Multi: two" not in head
    assert b"Subject: edited subject\r\n" in head
    assert b"X-Absent: added\r\n" in head and b"X-Present: yes\r\n" in head
    assert b"not-added" not in head
    assert b"X-Test-Edit: headers-stage\r\n" in head
    assert b"X-Test-End: size=6\r\n" in head
    assert env["delay_until"] is not None
    assert head.startswith(b"Received: ")


def test_read_only_variables_and_writable_limit(make_appliance):
    app = make_appliance('[plugins.test-context]\nenabled = true\nmax_recipients = 2\n')
    s = connect(app)
    talk(s, b"EHLO ctx.example\r\n")
    assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<a1@example.net>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<a2@example.net>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<a3@example.net>\r\n").startswith(b"452 4.5.3")


def test_priority_orders_plugins(make_appliance):
    # test-raise would fail the command, but the scripted accept runs first and decides.
    app = make_appliance(scripted("rcpt_to", "accept", mode="priority = 10") +
                         '[plugins.test-raise]\nenabled = true\npriority = 20\n')
    listing = app.cli("plugins")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    lines = [ln.split() for ln in listing.stdout.splitlines()[1:] if ln.strip()[:1].isdigit()]
    mine = ("test-scripted", "test-raise", "spool")  # built-in policy plugins run too
    assert [ln[1] for ln in lines if ln[1] in mine] == ["test-scripted", "test-raise", "spool"]
    with smtplib.SMTP("127.0.0.1", app.port) as c:
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}


def test_plugin_with_unknown_hook_is_skipped_not_fatal(make_appliance):
    app = make_appliance("[plugins.test-badhook]\nenabled = true\n")
    with smtplib.SMTP("127.0.0.1", app.port) as c:
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    assert "plugin test-badhook" in app.log() and "unknown hook 'on_rcpt'" in app.log()
    listing = app.cli("plugins")
    assert listing.returncode == 1 and "unknown hook 'on_rcpt'" in listing.stdout


def test_plugin_with_a_wrapper_hook_is_skipped_not_a_451(make_appliance):
    app = make_appliance("[plugins.test-wrapper]\nenabled = true\n")
    with smtplib.SMTP("127.0.0.1", app.port) as c:
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    assert len(app.queued()) == 1
    assert ("plugin test-wrapper: PluginValidationError: hook 'on_mail_from' is a wrapper"
            in app.log())
    listing = app.cli("plugins")
    assert listing.returncode == 1 and "hook 'on_mail_from' is a wrapper" in listing.stdout


def test_example_plugin_installed_from_its_own_distribution(make_appliance):
    app = make_appliance('[plugins.sender-blocklist]\nenabled = true\n'
                         'domains = ["spam.example"]\ntext = "Go away, spammer"\n')
    with smtplib.SMTP("127.0.0.1", app.port) as c:
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            c.sendmail("x@mail.spam.example", ["b@example.net"], MSG)
        assert (e.value.smtp_code, e.value.smtp_error) == (550, b"5.7.1 Go away, spammer")
        assert c.sendmail("x@ham.example", ["b@example.net"], MSG) == {}
    env, data = stored(app)
    assert b"X-Sender-Blocklist: checked\r\n" in data
    assert json.dumps(env)  # envelope is plain JSON
