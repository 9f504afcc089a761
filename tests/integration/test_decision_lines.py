"""One log line per decision, through the real server, as an administrator greps
Postfix's mail.log: every accepted message (``queued``) and every refusal
(``reply``) names the session, the queue id, the client, its HELO, the sender,
the recipients, the size and TLS, in the text and the JSON format alike."""

from __future__ import annotations

import json
import re
import smtplib

import pytest

from tests.peers import wait_for

from .test_flow import BAD_RCPT
from .test_receive import MSG, connect, talk
from .test_tls import client_context

FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def text_lines(app, event: str) -> list[dict]:
    """The ``event`` lines of the text log, as dicts of their fields."""
    found = []
    for line in app.log().splitlines():
        m = re.match(r"\S+ \S+ (\w+) (\w+) (.*)", line)
        if m and m.group(2) == event:
            fields = {k: json.loads(v) if v.startswith('"') else v
                      for k, v in FIELD.findall(m.group(3))}
            found.append({"level": m.group(1), **fields})
    return found


def json_lines(app, event: str) -> list[dict]:
    records = [json.loads(line) for line in app.log().splitlines() if line.startswith("{")]
    return [r for r in records if r["event"] == event]


def a_refusal_and_a_message(app) -> None:
    s = connect(app)
    talk(s, b"EHLO client.example\r\n")
    assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<bad@example.net>\r\n").startswith(b"550 5.1.1")
    for rcpt in (b"b@example.net", b"c@example.net"):
        assert talk(s, b"RCPT TO:<%s>\r\n" % rcpt).startswith(b"250")
    assert talk(s, b"DATA\r\n").startswith(b"354")
    assert talk(s, MSG + b".\r\n").startswith(b"250 2.0.0 Ok: queued as")
    assert talk(s, b"QUIT\r\n").startswith(b"221")


ENVELOPE = {"client": "unknown[127.0.0.1]", "helo": "client.example",
            "mail_from": "<a@example.org>", "tls": "none"}


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_refused_recipient_and_queued_message_one_line_each(make_appliance, fmt):
    app = make_appliance(f'[logging]\nformat = "{fmt}"\n' + BAD_RCPT)
    a_refusal_and_a_message(app)
    lines = text_lines if fmt == "text" else json_lines
    wait_for(lambda: lines(app, "disconnect")[1:], "the session's end")
    [refused] = [r for r in lines(app, "reply") if str(r["code"]) == "550"]
    [queued] = lines(app, "queued")
    assert refused["session"] == queued["session"]
    assert refused["queue_id"] == queued["queue_id"]  # the same transaction
    assert {k: refused[k] for k in ENVELOPE} == ENVELOPE
    assert {k: queued[k] for k in ENVELOPE} == ENVELOPE
    assert refused["command"] == "RCPT" and refused["rcpt_to"] == "<bad@example.net>"
    assert refused["enhanced"] == "5.1.1" and refused["text"] == "No such user"
    assert queued["rcpt_to"] == "<b@example.net>,<c@example.net>"
    assert int(queued["rcpts"]) == 2 and int(queued["size"]) > len(MSG)


def test_a_message_refused_at_the_end_of_data_names_its_recipients_and_size(make_appliance):
    app = make_appliance("[limits]\nmax_received_headers = 1\n")
    s = connect(app)
    talk(s, b"EHLO looping.example\r\nMAIL FROM:<a@example.org>\r\n")
    assert talk(s, b"RCPT TO:<b@example.net>\r\n").startswith(b"250")
    talk(s, b"DATA\r\n")
    looped = b"Received: from a\r\nReceived: from b\r\n" + MSG + b".\r\n"
    assert talk(s, looped).startswith(b"554 5.4.6")
    [refused] = wait_for(lambda: text_lines(app, "reply"), "the refusal")
    assert refused["command"] == "DATA" and refused["code"] == "554"
    assert refused["rcpt_to"] == "<b@example.net>" and refused["helo"] == "looping.example"
    assert int(refused["size"]) > len(MSG)  # the data read, Received fields included
    assert app.queued() == []


def test_queued_line_names_the_tls_version(make_appliance, certs):
    app = make_appliance(listeners={"mta": {"tls_mode": "starttls"}})
    with smtplib.SMTP("localhost", app.port, timeout=10) as c:
        c.starttls(context=client_context(certs))
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    [queued] = wait_for(lambda: text_lines(app, "queued"), "the queued line")
    assert queued["tls"].startswith("TLSv1."), queued
