"""Admin-written rules ([[rules]]) through the real server: every operator, the
replies and variables, the methods, monitor mode, a rule that fails, the decision
trace, and the shipped examples enabled. Clients are smtplib and raw sockets."""

from __future__ import annotations

import base64
import json
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from appliance.users import make_entry, write_users

from .conftest import have, read_reply
from .test_receive import MSG, connect, stored, talk
from .test_tls import client_context

REPO = Path(__file__).resolve().parents[2]

OPERATORS = """
[[rules]]
name = "helo-regex"
event = "mail_from"
condition = 'helo_name matches "^bad[0-9]+\\\\." or helo_name like "*.dynamic.example"'
[[rules.actions]]
action = "reject"
code = 550
enhanced_code = "5.7.1"
text = "HELO #helo_name# refused"

[[rules]]
name = "sender-list"
event = "mail_from"
condition = 'mail_from in ["spam@example.com", "*@spam.example", "*.bulk.example"]'
actions = [{ action = "reject", text = "sender #mail_from# refused" }]

[[rules]]
name = "sender-file"
event = "mail_from"
condition = 'mail_from_domain in file("LIST")'
[[rules.actions]]
action = "tmpreject"
code = 450
enhanced_code = "4.7.1"
text = "listed domain #mail_from_domain#"

[[rules]]
name = "size-announced"
event = "mail_from"
condition = "mail_from_size > 5000 and not (auth_user != '')"
[[rules.actions]]
action = "reject"
code = 552
enhanced_code = "5.3.4"
text = "too big for you: #mail_from_size#"

[[rules]]
name = "net"
event = "rcpt_to"
condition = 'remote_ip in ["192.0.2.0/24", "127.0.0.0/8"] and rcpt_local_part == "nets"'
actions = [{ action = "reject", code = 551, enhanced_code = "5.7.1", text = "network matched" }]

[[rules]]
name = "not-in"
event = "rcpt_to"
condition = 'rcpt_domain not in ["example.net", "example.org"] and starts_with(rcpt, "odd")'
actions = [{ action = "reject", code = 553, enhanced_code = "5.1.3", text = "odd domain" }]

[[rules]]
name = "count"
event = "rcpt_to"
condition = "rcpt_count >= 2 and lower(rcpt_local_part) == 'third'"
actions = [{ action = "tmpreject", text = "only two for now" }]

[[rules]]
name = "folder"
event = "rcpt_to"
condition = 'ends_with(rcpt_local_part, "+spam")'
[[rules.actions]]
set = "rcpt_folder"
value = "Junk"
[[rules.actions]]
set = "rcpt"
value = "#rcpt_local_part#-moved@example.net"

[[rules]]
name = "copy"
event = "rcpt_to"
condition = 'rcpt == "boss@example.net"'
actions = [{ method = "add_rcpt", address = "archive@example.net", folder = "Archive" }]

[[rules]]
name = "drop"
event = "rcpt_to"
condition = 'rcpt_local_part == "blackhole"'
actions = [{ method = "discard_rcpt" }]

[[rules]]
name = "subject"
event = "headers_received"
condition = 'has_header("X-Spam-Flag") and contains(header("Subject"), "viagra")'
actions = [{ action = "reject", code = 554, enhanced_code = "5.7.1", text = "spam" }]

[[rules]]
name = "headers"
event = "headers_received"
condition = 'header_count("Received") < 5'
actions = [
  { method = "add_header", name = "X-Rule", value = "from #remote_ip# via #listener#" },
  { method = "add_header_if_absent", name = "X-Once", value = "1" },
  { method = "add_header_if_absent", name = "X-Once", value = "2" },
  { method = "remove_header", name = "X-Remove-Me" },
  { method = "remove_first_header", name = "X-First" },
  { method = "remove_header_value", name = "X-Value", value = "drop" },
  { method = "modify_header", name = "X-Modified", value = "new" },
  { method = "modify_header_if_exists", name = "X-Absent", value = "never" },
  { method = "read_header", name = "Subject" },
]

[[rules]]
name = "after-read"
event = "headers_received"
condition = 'header_value == "quarantine me"'
actions = [{ method = "quarantine", reason = "subject said so" }]

[[rules]]
name = "delay"
event = "message"
condition = 'header("Subject") == "later"'
actions = [{ set = "delay_delivery", value = "+1h" }]

[[rules]]
name = "would"
event = "rcpt_to"
mode = "monitor"
condition = 'rcpt_local_part == "watched"'
actions = [{ action = "reject", text = "would refuse #rcpt#" }]

[[rules]]
name = "limit"
event = "mail_from"
condition = 'mail_from_domain == "few.example"'
actions = [{ set = "max_recipients", value = 1 }]
stop = true

[[rules]]
name = "after-stop"
event = "mail_from"
condition = 'mail_from_domain == "few.example"'
actions = [{ action = "reject", text = "never reached: the rule before stops" }]
"""


@pytest.fixture
def ops_app(make_appliance, tmp_path):
    listed = tmp_path / "domains.txt"
    listed.write_text("# domains\nlisted.example\n\n*.listed-too.example  # wildcard\n")
    return make_appliance(OPERATORS.replace("LIST", str(listed)) + """
[relay]
local_domains = ["example.net"]
check_recipients = false
""")


def _mail(app, sender: str, helo: str = "client.example", size: str = "") -> bytes:
    s = connect(app)
    talk(s, f"EHLO {helo}\r\n".encode())
    return talk(s, f"MAIL FROM:<{sender}>{size}\r\n".encode())


@pytest.mark.parametrize("sender,helo,size,reply", [
    ("a@example.org", "bad42.example", "", b"550 5.7.1 HELO bad42.example refused"),
    ("a@example.org", "host.dynamic.example", "", b"550 5.7.1 HELO host.dynamic.example"),
    ("a@example.org", "good.example", "", b"250 2.1.0"),
    ("spam@EXAMPLE.com", "good.example", "", b"550 5.7.1 sender spam@EXAMPLE.com refused"),
    ("x@spam.example", "good.example", "", b"550 5.7.1 sender x@spam.example refused"),
    ("x@a.bulk.example", "good.example", "", b"550 5.7.1 sender"),
    ("x@bulk.example", "good.example", "", b"250 2.1.0"),
    ("x@listed.example", "good.example", "", b"450 4.7.1 listed domain listed.example"),
    ("x@b.listed-too.example", "good.example", "", b"450 4.7.1 listed domain"),
    ("x@example.org", "good.example", " SIZE=5001", b"552 5.3.4 too big for you: 5001"),
    ("x@example.org", "good.example", " SIZE=5000", b"250 2.1.0"),
])
def test_conditions_at_mail_from(ops_app, sender, helo, size, reply):
    assert _mail(ops_app, sender, helo, size).startswith(reply)


def test_conditions_and_variables_at_rcpt_to(ops_app):
    s = connect(ops_app)
    talk(s, b"EHLO client.example\r\n")
    assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<nets@example.net>\r\n").startswith(b"551 5.7.1 network matched")
    assert talk(s, b"RCPT TO:<odd@example.com>\r\n").startswith(b"553 5.1.3 odd domain")
    assert talk(s, b"RCPT TO:<odd@example.org>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<me+spam@example.net>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<Third@example.net>\r\n").startswith(
        b"451 4.7.1 only two for now")
    assert talk(s, b"RCPT TO:<boss@example.net>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<blackhole@example.net>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<watched@example.net>\r\n").startswith(b"250")
    assert talk(s, b"DATA\r\n").startswith(b"354")
    assert talk(s, MSG + b".\r\n").startswith(b"250")
    env, _ = stored(ops_app)
    rcpts = [(r["address"], r["folder"]) for r in env["recipients"]]
    assert rcpts == [("odd@example.org", "INBOX"), ("me+spam-moved@example.net", "Junk"),
                     ("boss@example.net", "INBOX"), ("archive@example.net", "Archive"),
                     ("watched@example.net", "INBOX")]
    monitored = [e for e in env["trace"] if e["mode"] == "monitor"]
    assert monitored[0]["rule"] == "would"
    assert monitored[0]["text"] == "would refuse watched@example.net"


def test_set_max_recipients_and_stop(ops_app):
    s = connect(ops_app)
    talk(s, b"EHLO client.example\r\n")
    assert talk(s, b"MAIL FROM:<a@few.example>\r\n").startswith(b"250")  # stop: no reject
    assert talk(s, b"RCPT TO:<a@example.net>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<b@example.net>\r\n").startswith(b"452 4.5.3")
    assert talk(s, b"NOOP\r\n").startswith(b"250")


def _send(app, message: bytes) -> bytes:
    s = connect(app)
    talk(s, b"EHLO client.example\r\n")
    talk(s, b"MAIL FROM:<a@example.org>\r\n")
    talk(s, b"RCPT TO:<b@example.net>\r\n")
    talk(s, b"DATA\r\n")
    return talk(s, message + b".\r\n")


def test_header_methods_and_quarantine(ops_app):
    message = (b"Subject: quarantine me\r\nX-Remove-Me: 1\r\nX-Remove-Me: 2\r\n"
               b"X-First: one\r\nX-First: two\r\nX-Value: keep\r\nX-Value: drop\r\n"
               b"X-Modified: old\r\n\r\nbody\r\n")
    assert _send(ops_app, message).startswith(b"250")
    env, data = stored(ops_app)
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    assert "X-Rule: from 127.0.0.1 via mta" in head
    assert head.count("X-Once:") == 1 and "X-Once: 1" in head
    assert "X-Remove-Me" not in head
    assert "X-First: one" not in head and "X-First: two" in head
    assert "X-Value: keep" in head and "X-Value: drop" not in head
    assert "X-Modified: new" in head and "X-Modified: old" not in head
    assert "X-Absent" not in head
    assert env["quarantine"] == "subject said so"


def test_header_condition_refuses_after_data_and_delay(ops_app):
    spam = b"Subject: cheap VIAGRA\r\nX-Spam-Flag: YES\r\n\r\nbody\r\n"
    assert _send(ops_app, spam).startswith(b"554 5.7.1 spam")
    assert _send(ops_app, b"Subject: later\r\n\r\nbody\r\n").startswith(b"250")
    env, _ = stored(ops_app)
    assert env["delay_until"]


def test_trace_and_queue_show_name_the_rule(make_appliance):
    app = make_appliance("""
        [[rules]]
        name = "tag-and-accept"
        event = "message"
        actions = [{ action = "accept", text = "accepted by the tagging rule" }]
        """)
    assert _send(app, MSG).startswith(b"250")
    env, _ = stored(app)
    assert {"plugin": "rules", "rule": "tag-and-accept", "action": "accept"}.items() <= \
        env["trace"][-1].items()
    shown = app.cli("queue", "show", app.queued()[-1].stem).stdout
    assert re.search(r"message\s+rules:tag-and-accept\s+accept", shown)


def test_a_failing_rule_answers_451_and_names_the_rule(make_appliance):
    # check_geoip needs the geoip plugin's result; without it the rule fails at run time.
    app = make_appliance("""
        [[rules]]
        name = "country-check"
        event = "mail_from"
        actions = [{ method = "check_geoip", banned = ["XX"] }]
        """)
    assert _mail(app, "a@example.org").startswith(b"451 4.3.0")
    deadline = time.monotonic() + 5
    while "rule_failed" not in app.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(x for x in app.log().splitlines() if "rule_failed" in x)
    assert "rule=country-check" in line and "event=mail_from" in line
    s = connect(app)  # the server goes on serving
    assert talk(s, b"EHLO again.example\r\n").startswith(b"250")


def test_dnsbl_method_then_condition(make_appliance, dns_server):
    app = make_appliance(dns_server.toml() + """
        [[rules]]
        name = "ask-dnsbl"
        event = "connect"
        actions = [{ method = "check_dnsbl", zones = ["dnsbl.test"] }]
        [[rules]]
        name = "refuse-listed"
        event = "mail_from"
        condition = 'dnsbl_result != ""'
        [[rules.actions]]
        action = "reject"
        code = 554
        enhanced_code = "5.7.1"
        text = "listed in #dnsbl_zone#: #dnsbl_explanation#"
        """)
    listed = smtplib.SMTP(timeout=10, source_address=("127.0.0.2", 0))
    listed.connect("127.0.0.1", app.port)
    listed.ehlo("client.example")
    code, text = listed.mail("a@example.org")
    assert code == 554 and text.startswith(b"5.7.1 listed in dnsbl.test")
    clean = smtplib.SMTP(timeout=10, source_address=("127.0.0.4", 0))
    clean.connect("127.0.0.1", app.port)
    clean.ehlo("client.example")
    assert clean.mail("a@example.org")[0] == 250


def _shipped_rules_enabled(tmp_path: Path) -> str:
    text = (REPO / "conf.d" / "49-rules.toml").read_text()
    assert text.count("enabled = false") == 4
    return text.replace("enabled = false", "enabled = true")


def test_shipped_examples_enabled(make_appliance, certs, tmp_path):
    users = tmp_path / "users.toml"
    write_users(users, {"alice": make_entry("alice", "pw", ["PLAIN", "LOGIN"], "mx")})
    app = make_appliance(_shipped_rules_enabled(tmp_path) + f"""
        [auth]
        users_file = "{users}"
        plaintext_mechanisms = ["PLAIN", "LOGIN"]
        [relay]
        local_domains = ["mydomain.example"]
        check_recipients = false
        """, listeners={"mta": {"tls_mode": "starttls"}})
    # 1. AUTH is not offered, nor taken, before TLS; after STARTTLS, PLAIN and LOGIN.
    s = connect(app)
    assert b"AUTH" not in talk(s, b"EHLO plain.example\r\n")
    token = base64.b64encode(b"\0alice\0pw")
    assert talk(s, b"AUTH PLAIN " + token + b"\r\n").startswith(b"538 5.7.11")
    # 2. mail for mydomain.example refused without TLS; 3. relaying refused too
    assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<x@mydomain.example>\r\n") == (
        b"530 5.7.0 Accepting only secure delivery (STARTTLS) for mydomain.example\r\n")
    assert talk(s, b"RCPT TO:<x@example.com>\r\n").startswith(
        b"554 5.7.1 Relaying only over TLS 1.2 or later")
    with smtplib.SMTP("localhost", app.port, timeout=10) as c:
        c.ehlo("tls.example")
        c.starttls(context=client_context(certs))
        c.ehlo("tls.example")
        assert c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        c.login("alice", "pw")
        assert c.mail("a@example.org")[0] == 250
        assert c.rcpt("x@mydomain.example")[0] == 250
        assert c.rcpt("x@example.com")[0] == 250


def test_disable_starttls_for_a_client(make_appliance, certs):
    app = make_appliance("""
        [[rules]]
        name = "no-tls-for-brokenpeer"
        event = "ehlo"
        condition = 'helo_name == "broken.example"'
        actions = [{ method = "disable_starttls" }]
        """, listeners={"mta": {"tls_mode": "starttls"}})
    s = connect(app)
    assert b"STARTTLS" not in talk(s, b"EHLO broken.example\r\n")
    assert talk(s, b"STARTTLS\r\n").startswith(b"502 5.5.1")
    s = connect(app)
    assert b"STARTTLS" in talk(s, b"EHLO fine.example\r\n")


def test_reload_with_a_bad_rule_keeps_the_old_rules(make_appliance):
    app = make_appliance("""
        [[rules]]
        name = "old"
        event = "mail_from"
        condition = 'mail_from_domain == "old.example"'
        actions = [{ action = "reject", text = "old rules" }]
        """)
    extra = app.config_dir / "50-extra.toml"
    bad = 'old.example" and helo_name matches "("'
    extra.write_text(extra.read_text().replace('old.example"', bad))
    app.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload" not in app.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert "bad regular expression" in app.log()
    assert _mail(app, "a@old.example").startswith(b"550 5.7.1 old rules")


def test_rules_list_cli(make_appliance):
    app = make_appliance("""
        [[rules]]
        name = "second"
        event = "rcpt_to"
        priority = 20
        [[rules]]
        name = "first"
        event = "rcpt_to"
        priority = 10
        condition = "not tls"
        [[listeners.mta.rules]]
        name = "mine"
        event = "connect"
        """, start=False)
    out = app.cli("rules", "list", "--listener", "mta")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    first, second = (next(i for i, x in enumerate(lines) if name in x)
                     for name in ("first", "second"))
    assert first < second
    assert any("mine" in x for x in lines)
    assert json.loads(app.cli("rules", "list", "--json").stdout)["mta"]["rcpt_to"][0][
        "name"] == "first"


EXPLAINED = """
[relay]
local_domains = ["example.net", "mydomain.example"]
check_recipients = false

[[rules]]
name = "no-plain-mydomain"
event = "rcpt_to"
condition = 'not tls and rcpt_domain == "mydomain.example"'
actions = [{ action = "reject", code = 530, enhanced_code = "5.7.0", text = "TLS for #rcpt#" }]

[[rules]]
name = "helo-check"
event = "ehlo"
condition = 'helo_name like "*.dyn.example"'
actions = [{ action = "reject", code = 550, enhanced_code = "5.7.1", text = "dynamic" }]

[[rules]]
name = "from-127-0-0-9"
event = "mail_from"
condition = 'remote_ip in ["127.0.0.9"] and mail_from_domain != "ok.example"'
actions = [{ action = "tmpreject", code = 451, enhanced_code = "4.7.1", text = "later" }]

[[rules]]
name = "authenticated-only"
event = "rcpt_to"
condition = 'rcpt_local_part == "private" and auth_user == ""'
actions = [{ action = "reject", code = 550, enhanced_code = "5.7.1", text = "private" }]

[[rules]]
name = "spam-subject"
event = "headers_received"
condition = 'contains(header("Subject"), "spam")'
actions = [{ action = "reject", code = 554, enhanced_code = "5.7.1", text = "no spam" }]
"""

#: (client ip, helo, mail from, recipients, subject)
SESSIONS = [
    ("127.0.0.1", "client.example", "a@example.org", ["x@example.net"], "hello"),
    ("127.0.0.1", "client.example", "a@example.org",
     ["x@mydomain.example", "y@example.net"], "hello"),
    ("127.0.0.1", "host.dyn.example", "a@example.org", ["x@example.net"], "hello"),
    ("127.0.0.9", "client.example", "a@example.org", ["x@example.net"], "hello"),
    ("127.0.0.9", "client.example", "a@ok.example", ["private@example.net"], "hello"),
    ("127.0.0.1", "client.example", "a@example.org", ["x@example.net"], "buy spam now"),
    ("127.0.0.1", "client.example", "a@example.org", ["x@elsewhere.example"], "hello"),
]


def _normal(lines: list[str]) -> list[str]:
    return [re.sub(r"queued as \S.*", "queued as ID", line) for line in lines]


def _server_replies(app, ip, helo, sender, rcpts, message) -> list[str]:
    s = socket.create_connection(("127.0.0.1", app.port), timeout=10,
                                 source_address=(ip, 0))
    sent = [None, f"EHLO {helo}\r\n".encode(), f"MAIL FROM:<{sender}>\r\n".encode(),
            *(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts), b"DATA\r\n",
            message.replace(b"\n", b"\r\n") + b".\r\n", b"QUIT\r\n"]
    lines: list[str] = []
    for data in sent:
        if data is not None:
            s.sendall(data)
        reply = read_reply(s).decode().splitlines()
        lines += reply
        if not reply or (data == b"DATA\r\n" and not reply[0].startswith("354")) or \
                reply[-1][:3] in ("421", "221"):
            break
    s.close()
    return _normal(lines)


@pytest.mark.parametrize("ip,helo,sender,rcpts,subject", SESSIONS)
def test_explain_gives_the_servers_replies(make_appliance, tmp_path, ip, helo, sender, rcpts,
                                           subject):
    app = make_appliance(EXPLAINED)
    message = f"Subject: {subject}\nFrom: <{sender}>\n\nbody\n".encode()
    file = tmp_path / "message.eml"
    file.write_bytes(message)
    out = app.cli("rules", "explain", "--listener", "mta", "--client-ip", ip, "--helo", helo,
                  "--from", sender, "--rcpt", *rcpts, "--message", str(file))
    assert out.returncode == 0, out.stdout + out.stderr
    explained = _normal([line[4:] for line in out.stdout.splitlines()
                         if line.startswith("<<< ")])
    assert explained == _server_replies(app, ip, helo, sender, rcpts, message)
    assert len(app.queued()) == (1 if explained[-2].startswith("250 2.0.0") else 0)


def test_explain_names_every_rule_and_what_decided(make_appliance):
    app = make_appliance(EXPLAINED, start=False)
    out = app.cli("rules", "explain", "--listener", "mta", "--client-ip", "127.0.0.1",
                  "--helo", "client.example", "--from", "a@example.org",
                  "--rcpt", "x@mydomain.example", "private@example.net").stdout
    assert ("rcpt_to: rule 'no-plain-mydomain' matched (decided by: not tls and rcpt_domain"
            ' == "mydomain.example"); ran: reject 530 5.7.0; answer: '
            "reject 530 5.7.0 TLS for x@mydomain.example") in out
    assert "<<< 530 5.7.0 TLS for x@mydomain.example" in out
    assert ("rcpt_to: rule 'no-plain-mydomain' not matched (decided by: not tls)" not in out)
    assert "rcpt_to: rule 'authenticated-only' matched" in out
    assert "rcpt_to: rule 'no-plain-mydomain' not matched (decided by: rcpt_domain == " \
        '"mydomain.example")' in out
    assert "ehlo: rule 'helo-check' not matched (decided by: helo_name like" in out
    tls = app.cli("rules", "explain", "--listener", "mta", "--client-ip", "127.0.0.1",
                  "--helo", "client.example", "--from", "a@example.org", "--tls",
                  "--auth-user", "alice", "--rcpt", "x@mydomain.example",
                  "private@example.net").stdout
    assert "rcpt_to: rule 'no-plain-mydomain' not matched (decided by: not tls)" in tls
    assert tls.count("<<< 250 2.1.5") == 2
    assert "queued as nothing (rules explain)" in tls


def test_add_filter_and_execute_filters_with_real_milters(make_appliance, scripted_milters):
    first, second = scripted_milters
    app = make_appliance(f"""
        [[milter.milters]]
        name = "first"
        socket = "{first.socket}"
        [[milter.milters]]
        name = "second"
        socket = "{second.socket}"
        on_demand = true

        [[rules]]
        name = "ask-for-a-milter"
        event = "ehlo"
        condition = 'helo_name == "wants-nothing.example"'
        actions = [{{ method = "add_filter", name = "no-such-milter" }}]

        [[rules]]
        name = "unknown-milter"
        event = "mail_from"
        condition = 'add_filter_result == "error"'
        actions = [{{ action = "reject", text = "#add_filter_explanation#" }}]

        [[rules]]
        name = "run-second"
        event = "message"
        condition = 'has_header("X-Run-Second")'
        actions = [{{ method = "execute_filters", pattern = "sec*" }}]

        [[rules]]
        name = "after-second"
        event = "message"
        condition = 'filter.second.result == "pass"'
        actions = [{{ method = "add_header", name = "X-Second", value = "#filter.second.result#" }}]
        """)
    s = connect(app)
    talk(s, b"EHLO wants-nothing.example\r\n")
    assert talk(s, b"MAIL FROM:<a@example.org>\r\n") == (
        b"550 5.7.1 no filter named 'no-such-milter' on listener 'mta'\r\n")
    assert _send(app, b"X-Run-Second: yes\r\nSubject: x\r\n\r\nbody\r\n").startswith(b"250")
    _, data = stored(app)
    assert data.count(b"X-Test-Milter: second") == 1  # by the rule; the plugin not again
    assert b"X-Second: pass" in data and b"X-Test-Milter: first" in data
    refused = _send(app, b"X-Run-Second: yes\r\nX-Test-Action: reject\r\n\r\nbody\r\n")
    assert refused.startswith(b"554 5.7.1 Rejected by test milter")
    assert len(app.queued()) == 1
    assert "rules:run-second reject 554 5.7.1" in app.log()


def test_spf_and_sender_mx_methods(make_appliance, dns_server):
    app = make_appliance(dns_server.toml() + """
        [[rules]]
        name = "checks"
        event = "mail_from"
        actions = [{ method = "check_spf" }, { method = "check_sender_mx" }]
        [[rules]]
        name = "spf-fail"
        event = "mail_from"
        condition = 'spf_result == "Fail"'
        [[rules.actions]]
        action = "reject"
        enhanced_code = "5.7.23"
        text = "SPF #spf_result# for #checks.spf.domain#"
        [[rules]]
        name = "no-mx"
        event = "mail_from"
        condition = 'sender_mx_result == "Fail"'
        [[rules.actions]]
        action = "reject"
        enhanced_code = "5.1.8"
        text = "no MX: #checks.sender-mx.explanation#"
        """)
    assert _mail(app, "a@fail.spf.test").startswith(b"550 5.7.23 SPF Fail for fail.spf.test")
    assert _mail(app, "a@pass.spf.test").startswith(b"250")
    assert _mail(app, "a@no-address.mx.test").startswith(b"550 5.1.8 no MX:")


def test_geoip_method_with_a_real_database(make_appliance, tmp_path):
    from tests.mmdb import write_country_db

    db = write_country_db(tmp_path / "country.mmdb")
    app = make_appliance(f"""
        [geoip]
        database = "{db}"
        private_addresses = "lookup"
        [[rules]]
        name = "no-cn-senders"
        event = "mail_from"
        actions = [{{ method = "check_geoip", banned = ["CN"], ban_action = "tmpreject" }}]
        [[rules]]
        name = "tag-country"
        event = "rcpt_to"
        condition = 'not geoip_banned and geoip_country == "DE"'
        actions = [{{ set = "rcpt_folder", value = "From-#geoip_country#" }}]
        """)
    cn = smtplib.SMTP(timeout=10, source_address=("127.0.3.1", 0))
    cn.connect("127.0.0.1", app.port)  # [geoip] bans nobody: the greeting is a 220
    cn.ehlo("x.example")
    assert cn.mail("a@example.org") == (451, b"4.7.1 Connections from CN are not accepted")
    with smtplib.SMTP("127.0.0.1", app.port, source_address=("127.0.1.9", 0)) as de:
        assert de.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    env, _ = stored(app)
    assert env["recipients"][0]["folder"] == "From-DE"
    assert env["checks"]["geoip"]["banned"] is False


def test_listener_rules_apply_to_their_listener_only(make_appliance):
    app = make_appliance("""
        [[rules]]
        name = "everywhere"
        event = "rcpt_to"
        condition = 'rcpt_local_part == "nobody"'
        [[rules.actions]]
        action = "reject"
        code = 550
        enhanced_code = "5.1.1"
        text = "no such user"
        [[listeners.submission.rules]]
        name = "submission-only"
        event = "mail_from"
        condition = 'auth_user == ""'
        [[listeners.submission.rules.actions]]
        action = "reject"
        code = 530
        enhanced_code = "5.7.0"
        text = "log in first"
        """, listeners={"mta": {}, "submission": {}})
    for listener in ("mta", "submission"):
        s = connect(app, app.ports[listener])
        talk(s, b"EHLO client.example\r\n")
        reply = talk(s, b"MAIL FROM:<a@example.org>\r\n")
        if listener == "submission":
            assert reply == b"530 5.7.0 log in first\r\n"
            continue
        assert reply.startswith(b"250")
        assert talk(s, b"RCPT TO:<nobody@example.net>\r\n") == b"550 5.1.1 no such user\r\n"


def test_list_file_is_read_again_on_reload(make_appliance, tmp_path):
    listed = tmp_path / "senders.txt"
    listed.write_text("one@example.org\n")
    app = make_appliance(f"""
        [[rules]]
        name = "listed-senders"
        event = "mail_from"
        condition = 'mail_from in file("{listed}")'
        actions = [{{ action = "reject", text = "listed" }}]
        """)
    assert _mail(app, "one@example.org").startswith(b"550 5.7.1 listed")
    assert _mail(app, "two@example.org").startswith(b"250")
    listed.write_text("two@example.org\n")
    app.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reloaded" not in app.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _mail(app, "two@example.org").startswith(b"550 5.7.1 listed")
    assert _mail(app, "one@example.org").startswith(b"250")


@pytest.mark.skipif(not have("swaks"), reason="swaks not installed")
def test_swaks_through_a_header_rule(make_appliance):
    app = make_appliance("""
        [[rules]]
        name = "swaks-header"
        event = "headers_received"
        condition = 'header("X-Mailer") like "swaks*"'
        actions = [{ method = "read_header", name = "X-Mailer" },
                   { method = "add_header", name = "X-Seen-Mailer", value = "#header_value#" },
                   { method = "modify_header", name = "X-Tool", value = "swaks" }]
        """)
    done = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(app.port),
                           "--from", "a@example.org", "--to", "b@example.net",
                           "--helo", "swaks.example"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "250 2.0.0 Ok: queued as" in done.stdout
    _, data = stored(app)
    assert b"X-Tool: swaks" in data and b"X-Seen-Mailer: swaks v" in data


def test_auth_event_and_discard_action(make_appliance, certs, tmp_path):
    users = tmp_path / "users.toml"
    write_users(users, {u: make_entry(u, "pw", ["PLAIN"], "mx") for u in ("alice", "mallory")})
    app = make_appliance(f"""
        [auth]
        users_file = "{users}"
        [[rules]]
        name = "no-mallory"
        event = "auth"
        condition = 'auth_user == "mallory" and auth_mechanism in ["PLAIN", "LOGIN"]'
        actions = [{{ action = "reject", code = 535, enhanced_code = "5.7.8", text = "not you" }}]
        [[rules]]
        name = "drop-quietly"
        event = "rcpt_to"
        condition = 'rcpt_local_part == "void"'
        actions = [{{ action = "discard" }}]
        """, listeners={"mta": {"tls_mode": "starttls"}})
    with smtplib.SMTP("localhost", app.port, timeout=10) as c:
        c.starttls(context=client_context(certs))
        c.ehlo("tls.example")
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            c.login("mallory", "pw")
        assert (refused.value.smtp_code, refused.value.smtp_error) == (535, b"5.7.8 not you")
        c.login("alice", "pw")
        assert c.sendmail("alice@example.org", ["void@example.net", "b@example.net"],
                          MSG) == {}
    env, _ = stored(app)
    assert [r["address"] for r in env["recipients"]] == ["b@example.net"]


def test_policy_server_on_demand_from_rules(make_appliance):
    from .test_policy import ScriptedPolicyServer

    policy = ScriptedPolicyServer()
    threading.Thread(target=policy.serve_forever, daemon=True).start()
    try:
        app = make_appliance(f"""
            [[policy.servers]]
            name = "script"
            address = "{policy.address}"
            stages = ["rcpt"]
            on_demand = true
            [[rules]]
            name = "add-policy"
            event = "ehlo"
            condition = 'helo_name == "add.example"'
            actions = [{{ method = "add_filter", name = "script" }}]
            [[rules]]
            name = "filtered-domain"
            event = "rcpt_to"
            condition = 'rcpt_domain == "filtered.example"'
            actions = [{{ method = "execute_filters", pattern = "scr*" }}]
            [[rules]]
            name = "after-filter"
            event = "rcpt_to"
            condition = 'filter.script.result == "pass" and rcpt_domain == "filtered.example"'
            actions = [{{ set = "rcpt_folder", value = "Filtered" }}]
            """)
        s = connect(app)
        talk(s, b"EHLO plain.example\r\n")
        talk(s, b"MAIL FROM:<a@example.org>\r\n")
        # on demand: not asked for other domains; asked once (by the rule) for this one
        assert talk(s, b"RCPT TO:<reject@other.example>\r\n").startswith(b"250")
        assert talk(s, b"RCPT TO:<reject@filtered.example>\r\n").startswith(b"5")
        assert [r["recipient"] for r in policy.requests] == ["reject@filtered.example"]
        assert talk(s, b"RCPT TO:<ok@filtered.example>\r\n").startswith(b"250")
        assert len(policy.requests) == 2
        assert "rules:filtered-domain reject" in app.log()
        # added by a rule at EHLO: the plugin asks it for every recipient from then on
        s = connect(app)
        talk(s, b"EHLO add.example\r\n")
        talk(s, b"MAIL FROM:<a@example.org>\r\n")
        assert talk(s, b"RCPT TO:<reject@other.example>\r\n").startswith(b"5")
        assert len(policy.requests) == 3
    finally:
        policy.shutdown()
        policy.server_close()


def test_http_hook_on_demand_from_rules(make_appliance):
    from http.server import ThreadingHTTPServer

    from .test_http_hooks import TOKEN, FilterHandler

    web = ThreadingHTTPServer(("127.0.0.1", 0), FilterHandler)
    web.daemon_threads, web.requests = True, []
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        app = make_appliance(f"""
            [[http_hooks.hooks]]
            name = "web"
            url = "http://127.0.0.1:{web.server_address[1]}/filter"
            auth_header = "{TOKEN}"
            stages = ["data"]
            on_demand = true
            [[rules]]
            name = "scan-some"
            event = "message"
            condition = 'has_header("X-Scan-Me")'
            actions = [{{ method = "execute_filters", pattern = "w*" }}]
            """)
        assert _send(app, b"Subject: plain\r\n\r\nVIAGRA\r\n").startswith(b"250")
        assert web.requests == []  # on demand: not asked unless a rule does
        refused = _send(app, b"X-Scan-Me: 1\r\nSubject: x\r\n\r\nVIAGRA\r\n")
        assert refused.startswith(b"550 5.7.1 Spam keyword found")
        assert _send(app, b"X-Scan-Me: 1\r\nSubject: y\r\n\r\nclean\r\n").startswith(b"250")
        assert len(web.requests) == 2  # once per message: the plugin did not ask again
        _, data = stored(app)
        assert data.count(b"X-Filter: checked") == 1
    finally:
        web.shutdown()
        web.server_close()


def test_explain_on_an_implicit_tls_listener(make_appliance):
    app = make_appliance("""
        [[rules]]
        name = "tls-only"
        event = "mail_from"
        condition = "not tls"
        actions = [{ action = "reject", code = 530, enhanced_code = "5.7.0", text = "TLS first" }]
        """, listeners={"smtps": {"tls_mode": "implicit"}}, start=False)
    out = app.cli("rules", "explain", "--listener", "smtps", "--client-ip", "127.0.0.1",
                  "--helo", "c.example", "--from", "a@example.org", "--rcpt", "b@example.net")
    assert out.returncode == 0, out.stderr
    assert "mail_from: rule 'tls-only' not matched (decided by: not tls)" in out.stdout
    assert "<<< 250 2.1.0 Ok" in out.stdout
