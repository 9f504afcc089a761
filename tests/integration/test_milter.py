"""Milters end to end: the real server (``python -m appliance serve``) talking to
real milters: Debian's opendkim (signing) and clamav-milter (with clamd), the
scripted purepythonmilter milter for the replies and modifications no Debian
milter makes, and broken ones (down, silent, closing mid-message)."""

from __future__ import annotations

import json
import re
import smtplib
import socket
import threading
import time

import dkim
import pytest

from tests.integration.conftest import Appliance, read_reply
from tests.milter_fixture import DKIM_DOMAIN, DKIM_SELECTOR, VIRUS_MARKER

MSG = (f"From: a@{DKIM_DOMAIN}\r\nTo: b@example.net\r\nSubject: milter test\r\n"
       f"Date: Fri, 27 Nov 2026 07:00:00 +0000\r\nMessage-ID: <m1@{DKIM_DOMAIN}>\r\n"
       "\r\nHello through the milters.\r\n")


def milter_table(name: str, sock: str, listener: str = "", **keys) -> str:
    """One ``[[milter.milters]]`` entry, or ``[[listeners.NAME.milter.milters]]``."""
    table = f"listeners.{listener}.milter.milters" if listener else "milter.milters"
    lines = [f"[[{table}]]", f'name = "{name}"', f'socket = "{sock}"']
    for key, value in keys.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def start(tmp_path_factory, name: str, extra: str) -> Appliance:
    return Appliance(tmp_path_factory.mktemp(name), extra, {"mta": {}}, None).start()


def stored(app: Appliance) -> list[tuple[dict, bytes]]:
    return [(json.loads(p.read_bytes()), p.with_suffix(".msg").read_bytes())
            for p in app.queued()]


def send(app: Appliance, msg: str | bytes = MSG, sender: str = f"a@{DKIM_DOMAIN}",
         rcpts: tuple[str, ...] = ("b@example.net",), helo: str = "client.test",
         listener: str = "") -> dict:
    port = app.ports[listener] if listener else app.port
    with smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=20) as c:
        return c.sendmail(sender, list(rcpts), msg)


# --- opendkim and clamav-milter ------------------------------------------------------

@pytest.fixture(scope="module")
def real(tmp_path_factory, opendkim, clamav_milter):
    extra = (milter_table("clamav", clamav_milter.socket)
             + milter_table("opendkim", opendkim.socket))
    app = start(tmp_path_factory, "milter-real", extra)
    yield app
    app.stop()


def test_opendkim_signs_and_clamav_marks_clean_mail(real, opendkim):
    before = len(real.queued())
    assert send(real) == {}
    env, data = stored(real)[before]
    assert b"X-Virus-Status: Clean" in data  # clamav-milter's added header
    assert data.startswith(b"DKIM-Signature:")  # opendkim inserted it on top
    # dkim.verify with a dnsfunc returning the generated key: this checks the
    # signature itself, not a DNS path (the key name is checked all the same).
    asked = []

    def dnsfunc(name, timeout=5):
        asked.append(name)
        return opendkim.txt_record
    assert dkim.verify(data, dnsfunc=dnsfunc)
    assert asked == [f"{DKIM_SELECTOR}._domainkey.{DKIM_DOMAIN}.".encode()]
    assert env["recipients"][0]["address"] == "b@example.net"


def test_a_large_message_spilled_to_disk_is_signed_whole(real, opendkim):
    before = len(real.queued())
    big = MSG.replace("Hello through the milters.\r\n", ("y" * 998 + "\r\n") * 400)
    assert send(real, big) == {}  # 400 KB: the body went to a staging file
    _, data = stored(real)[before]
    assert len(data) > 400_000
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: opendkim.txt_record)


def test_clamav_rejects_infected_mail_and_stores_nothing(real):
    before = len(real.queued())
    infected = MSG.replace("Hello through", f"Hello {VIRUS_MARKER.decode()} through")
    with smtplib.SMTP("127.0.0.1", real.port, timeout=20) as c:
        with pytest.raises(smtplib.SMTPDataError) as err:
            c.sendmail(f"a@{DKIM_DOMAIN}", ["b@example.net"], infected)
        assert err.value.smtp_code == 550
        assert err.value.smtp_error.startswith(b"5.7.1")
        assert len(real.queued()) == before
        # the same session goes on: the next, clean, message is signed and stored
        assert c.sendmail(f"a@{DKIM_DOMAIN}", ["b@example.net"], MSG) == {}
    assert len(real.queued()) == before + 1


# --- the scripted milters: replies, modifications, order ----------------------------

@pytest.fixture(scope="module")
def scripted(tmp_path_factory, scripted_milters, silent_milter):
    first, second = scripted_milters
    extra = ("[plugins.test-milter-rules]\nenabled = true\n"
             + milter_table("first", first.socket, command_timeout="2s",
                            end_of_message_timeout="2s")
             + milter_table("second", second.socket, command_timeout="2s",
                            end_of_message_timeout="2s", default_action="accept")
             + milter_table("silent", silent_milter.socket, on_demand=True,
                            connect_timeout="1s", command_timeout="1s")
             + milter_table("down", "inet:127.0.0.1:1", on_demand=True,
                            default_action="reject"))
    app = start(tmp_path_factory, "milter-scripted", extra)
    yield app
    app.stop()


def test_each_milter_sees_the_previous_ones_changes(scripted):
    before = len(scripted.queued())
    assert send(scripted) == {}
    _, data = stored(scripted)[before]
    head = data.split(b"\r\n\r\n")[0].decode()
    assert "X-First: first" in head
    first = re.search(r"X-Test-Milter: first headers=(\d+) chunks=1 first=-", head)
    second = re.search(r"X-Test-Milter: second headers=(\d+) chunks=1 first=first", head)
    # "second" saw the two fields "first" added, and X-First's value
    assert first and second and int(second[1]) == int(first[1]) + 2


def test_every_modification_is_applied_and_stored(scripted):
    before = len(scripted.queued())
    msg = ("From: a@test.example\r\nX-Dup: one\r\nX-Dup: two\r\nX-Remove-Me: bye\r\n"
           "X-Test-Action: mods\r\nSubject: mods\r\n\r\nOriginal body.\r\n")
    assert send(scripted, msg, rcpts=("keep@test.example", "removed@test.example")) == {}
    env, data = stored(scripted)[before]
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "X-Inserted: on top"  # insert header at index 0
    assert "X-Dup: one" in lines and "X-Dup: second changed" in lines  # change 2nd
    assert not any(n.startswith("X-Remove-Me") for n in lines)  # delete
    assert "X-Added: appended" in lines  # add header
    assert body == b"Replaced body, part one.\r\nPart two.\r\n"  # replace body
    assert env["mail_from"] == {"address": "bounces@test.example",
                                "params": {"BODY": "8BITMIME"}}  # change sender + args
    rcpts = {r["address"]: r["params"] for r in env["recipients"]}
    assert rcpts == {"keep@test.example": {}, "added@test.example": {},
                     "added-args@test.example": {"NOTIFY": "NEVER"}}  # add/delete rcpt
    assert env["quarantine"] == "held by the test milter"
    listing = scripted.cli("queue", "list")
    assert "[quarantine: held by the test milter]" in listing.stdout
    show = scripted.cli("queue", "show", env["queue_id"])
    assert "quarantine:  held by the test milter" in show.stdout


def test_replies_at_each_stage(scripted):
    before = len(scripted.queued())
    with socket.create_connection(("127.0.0.1", scripted.port), timeout=10) as s:
        read_reply(s)

        def say(line: str) -> bytes:
            s.sendall(line.encode() + b"\r\n")
            return read_reply(s)
        assert say("EHLO reject-helo.test").startswith(b"550 5.7.1 Command rejected")
        assert say("EHLO client.test").startswith(b"250")
        assert say("MAIL FROM:<reject-mail@test.example>").startswith(b"550 5.7.1")
        assert say("MAIL FROM:<a@test.example>").startswith(b"250")
        assert say("RCPT TO:<tempfail@test.example>") == (
            b"451 4.7.1 try later, says the milter\r\n")
        assert say("RCPT TO:<custom@test.example>") == b"553 5.7.2 custom refusal\r\n"
        assert say("RCPT TO:<b@test.example>").startswith(b"250")
        assert say("DATA").startswith(b"354")
        reply = say("X-Test-Action: reject\r\n\r\nbody\r\n.")
        assert reply == b"554 5.7.1 Rejected by test milter\r\n"
        assert say("MAIL FROM:<a@test.example>").startswith(b"250")
        assert say("RCPT TO:<b@test.example>").startswith(b"250")
        assert say("DATA").startswith(b"354")
        assert say("X-Test-Action: tempfail\r\n\r\nbody\r\n.") == (
            b"451 4.7.1 test milter says later\r\n")
        assert say("QUIT").startswith(b"221")
    assert len(scripted.queued()) == before


def test_a_421_from_the_milter_closes_the_connection(scripted):
    with socket.create_connection(("127.0.0.1", scripted.port), timeout=10) as s:
        read_reply(s)
        for line in ("EHLO client.test", "MAIL FROM:<a@test.example>"):
            s.sendall(line.encode() + b"\r\n")
            assert read_reply(s).startswith(b"250")
        s.sendall(b"RCPT TO:<shutdown@test.example>\r\n")
        assert read_reply(s) == b"421 4.3.2 milter shutting down\r\n"
        assert s.recv(100) == b""  # closed, as Postfix closes after a milter's 421
    with socket.create_connection(("127.0.0.1", scripted.port), timeout=10) as s:
        assert read_reply(s).startswith(b"220")  # the next client is served


def test_discard_accept_and_skip(scripted):
    before = len(scripted.queued())
    # discard at RCPT: the client gets 250, nothing is stored
    assert send(scripted, rcpts=("discard@test.example", "b@test.example")) == {}
    msg = "X-Test-Action: discard\r\nSubject: x\r\n\r\nbody\r\n"
    assert send(scripted, msg) == {}  # discard at end of message
    assert len(scripted.queued()) == before
    # accept at MAIL: that milter is not asked again for the message (no header)
    assert send(scripted, sender="accept-first@test.example") == {}
    _, data = stored(scripted)[before]
    assert b"X-Test-Milter: first" not in data and b"X-Test-Milter: second" in data
    # SKIP after the first body chunk: no more chunks are sent to that milter
    body = "SKIP-first\r\n" + ("x" * 998 + "\r\n") * 200
    assert send(scripted, f"Subject: skip\r\n\r\n{body}") == {}
    _, data = stored(scripted)[before + 1]
    assert re.search(rb"X-Test-Milter: first headers=\d+ chunks=1 ", data)
    assert re.search(rb"X-Test-Milter: second headers=\d+ chunks=4 ", data)  # 200 KB


def test_rules_api_execute_runs_matching_milters(scripted):
    before = len(scripted.queued())
    msg = "X-Execute-Milters: sec*\r\nX-Test-Action: reject\r\nSubject: x\r\n\r\nbody\r\n"
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(scripted, msg)
    assert (err.value.smtp_code, err.value.smtp_error) == (
        554, b"5.7.1 Rejected by test milter")
    msg = "X-Execute-Milters: sec*\r\nSubject: x\r\n\r\nbody\r\n"
    assert send(scripted, msg) == {}
    _, data = stored(scripted)[before]
    assert b"X-Filter-Result: - continue" in data
    assert data.count(b"X-Test-Milter: second") == 1  # run by the rule, not again


# --- a listener's own milters --------------------------------------------------------

@pytest.fixture(scope="module")
def per_listener(tmp_path_factory, opendkim, scripted_milters):
    first, second = scripted_milters
    extra = ("[plugins.test-milter-rules]\nenabled = true\n"
             + milter_table("first", first.socket)
             # submission: opendkim signs, "first" is not asked; "second" only by rule
             + milter_table("opendkim", opendkim.socket, listener="submission")
             + milter_table("second", second.socket, listener="submission",
                            on_demand=True))
    app = Appliance(tmp_path_factory.mktemp("milter-listeners"), extra,
                    {"mta": {}, "submission": {}}, None).start()
    yield app
    app.stop()


def test_a_listeners_own_milters_apply_to_that_listener_only(per_listener, opendkim):
    before = len(per_listener.queued())
    assert send(per_listener, listener="mta") == {}
    assert send(per_listener, listener="submission") == {}
    (_, via_mta), (_, via_submission) = stored(per_listener)[before:]
    # port 25 keeps [milter]'s list: "first" ran, nothing signed
    assert b"X-Test-Milter: first" in via_mta and b"DKIM-Signature:" not in via_mta
    # submission has its own list instead: signed by opendkim, "first" never asked
    assert via_submission.startswith(b"DKIM-Signature:")
    assert dkim.verify(via_submission, dnsfunc=lambda name, timeout=5: opendkim.txt_record)
    assert b"X-Test-Milter" not in via_submission and b"X-First" not in via_submission


def test_rules_find_milters_among_the_listeners_own(per_listener):
    before = len(per_listener.queued())
    msg = "X-Execute-Milters: second\r\nSubject: rule\r\n\r\nbody\r\n"
    assert send(per_listener, msg, listener="mta") == {}
    assert send(per_listener, msg, listener="submission") == {}
    (_, via_mta), (_, via_submission) = stored(per_listener)[before:]
    # "second" is submission's: on port 25 the rule runs nothing
    assert b"X-Filter-Result: - continue" in via_mta
    assert b"X-Test-Milter: second" not in via_mta
    assert via_submission.count(b"X-Test-Milter: second") == 1


# --- faults: each gives the milter's default action in time, others go on ------------

def _timed_ehlo(app: Appliance, helo: str) -> tuple[bytes, float, bytes]:
    """The EHLO reply, how long it took, and the reply to the MAIL FROM after it."""
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
        read_reply(s)
        started = time.monotonic()
        s.sendall(f"EHLO {helo}\r\n".encode())
        ehlo, took = read_reply(s), time.monotonic() - started
        s.sendall(b"MAIL FROM:<a@example.org>\r\n")
        return ehlo, took, read_reply(s)


def test_milter_down_gives_its_default_action(scripted):
    # a failure at HELO answers at MAIL FROM, as one at connect does
    ehlo, took, mail = _timed_ehlo(scripted, "add-down.test")
    assert ehlo.startswith(b"250-") and took < 2
    assert mail.startswith(b"550 5.7.1 Command rejected")  # default_action = "reject"


@pytest.fixture(scope="module")
def dead(tmp_path_factory):
    """One listener per default action, each with the same unreachable milter."""
    actions = ("tempfail", "reject", "accept")
    extra = "".join(milter_table("dead", "inet:127.0.0.1:1", listener=a, default_action=a)
                    for a in actions)
    app = Appliance(tmp_path_factory.mktemp("milter-dead"), extra,
                    {a: {} for a in actions}, None).start()
    yield app
    app.stop()


def _session_with_dead_milter(app: Appliance, listener: str) -> list[bytes]:
    """Greeting, EHLO, MAIL FROM and RCPT TO replies (first lines) on ``listener``."""
    replies = [b""] * 5
    with socket.create_connection(("127.0.0.1", app.ports[listener]), timeout=10) as s:
        replies[0] = read_reply(s).split(b"\r\n")[0]
        for i, command in enumerate((b"EHLO client.test", b"MAIL FROM:<a@example.org>",
                                     b"RCPT TO:<b@example.net>", b"QUIT"), 1):
            if replies[i - 1].startswith(b"421"):
                break  # closed by the server
            s.sendall(command + b"\r\n")
            replies[i] = read_reply(s).split(b"\r\n")[0]
    return replies


def test_milter_unreachable_at_connect_answers_at_mail_as_postfix_does(dead):
    # Postfix with milter_default_action = tempfail and the milter down: 220, EHLO
    # accepted, 451 4.7.1 at MAIL FROM (the client sees why; later checks still run)
    greeting, ehlo, mail, _, _ = _session_with_dead_milter(dead, "tempfail")
    assert greeting.startswith(b"220 ")
    assert ehlo.startswith(b"250")
    assert mail == b"451 4.7.1 Service unavailable - try again later"
    assert "milter dead failed at connect" in dead.log()


def test_milter_unreachable_reject_and_accept_default_actions(dead):
    greeting, ehlo, mail, _, _ = _session_with_dead_milter(dead, "reject")
    assert (greeting[:4], ehlo[:3]) == (b"220 ", b"250")
    assert mail == b"550 5.7.1 Command rejected"
    greeting, ehlo, mail, rcpt, _ = _session_with_dead_milter(dead, "accept")
    assert (greeting[:4], ehlo[:3], mail[:3], rcpt[:3]) == (b"220 ", b"250", b"250", b"250")


def test_silent_milter_times_out_while_others_are_served(scripted):
    result = {}

    def hung():
        result["ehlo"], result["took"], result["reply"] = _timed_ehlo(scripted,
                                                                      "add-silent.test")
    t = threading.Thread(target=hung)
    t.start()
    time.sleep(0.2)
    served = time.monotonic()
    assert send(scripted) == {}  # another session, served meanwhile
    served = time.monotonic() - served
    t.join(10)
    assert result["ehlo"].startswith(b"250-")
    assert result["reply"] == b"451 4.7.1 Service unavailable - try again later\r\n"
    assert 0.9 < result["took"] < 3  # connect succeeded; negotiation timed out at 1s
    assert served < result["took"]


def test_milter_closing_mid_message_gives_its_default_action(scripted):
    before = len(scripted.queued())
    # "first" (default action tempfail) closes the connection in the body: 451
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(scripted, "Subject: x\r\n\r\nCLOSE-first\r\n")
    assert (err.value.smtp_code, err.value.smtp_error) == (
        451, b"4.7.1 Service unavailable - try again later")
    assert len(scripted.queued()) == before
    # "second" (default action accept) does the same: the message goes on without it
    started = time.monotonic()
    assert send(scripted, "Subject: x\r\n\r\nCLOSE-second\r\n") == {}
    assert time.monotonic() - started < 2
    _, data = stored(scripted)[before]
    assert b"X-Test-Milter: first" in data and b"X-Test-Milter: second" not in data
