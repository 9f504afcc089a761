"""Receiving mail end to end: real server process, real clients, real spool."""

from __future__ import annotations

import json
import re
import smtplib
import socket
import subprocess

import pytest

from .conftest import have, read_reply

MSG = (b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hello\r\n"
       b"Message-ID: <1@example.org>\r\n\r\nbody line 1\r\n.leading dot\r\nend\r\n")


def stored(app, index=-1):
    env_path = app.queued()[index]
    env = json.loads(env_path.read_text())
    return env, env_path.with_suffix(".msg").read_bytes()


def talk(sock, line: bytes) -> bytes:
    sock.sendall(line)
    return read_reply(sock)


def connect(app, port=None):
    s = socket.create_connection(("127.0.0.1", port or app.port), timeout=10)
    assert read_reply(s).startswith(b"220 ")
    return s


def test_smtplib_message_is_spooled_with_envelope_and_received(appliance):
    with smtplib.SMTP("127.0.0.1", appliance.port) as c:
        code, ehlo = c.ehlo("client.example.org")
        assert code == 250
        resp = c.sendmail("a@example.org", ["b@example.net", "c@example.net"], MSG,
                          mail_options=["RET=HDRS", "ENVID=env+2B1"],
                          rcpt_options=["NOTIFY=SUCCESS,FAILURE",
                                        "ORCPT=rfc822;b+40example.net"])
        assert resp == {}
    env, data = stored(appliance)
    assert env["mail_from"]["address"] == "a@example.org"
    assert env["mail_from"]["params"]["SIZE"] == len(MSG)
    assert env["dsn"] == {"ret": "HDRS", "envid": "env+1"}
    assert [r["address"] for r in env["recipients"]] == ["b@example.net", "c@example.net"]
    assert env["recipients"][0]["params"]["NOTIFY"] == ["SUCCESS", "FAILURE"]
    assert env["recipients"][0]["params"]["ORCPT"] == "rfc822;b@example.net"
    assert env["client"]["helo"] == "client.example.org"
    assert env["client"]["ip"] == "127.0.0.1"
    assert env["size"] == len(data)
    first, rest = data.split(b"\r\n", 1)
    assert first.startswith(b"Received: from client.example.org (unknown [127.0.0.1])")
    assert b"by mx.test.example (smtp-appliance) with ESMTP id " + env["queue_id"].encode() in rest
    # dot-unstuffing: the client stuffed ".leading", we store it as sent
    assert data.endswith(MSG[MSG.index(b"Subject"):].split(b"\r\n\r\n", 1)[1])
    assert b"\r\n.leading dot\r\n" in data


def test_ehlo_advertises_extensions_and_size(appliance):
    with smtplib.SMTP("127.0.0.1", appliance.port) as c:
        c.ehlo("x.example")
        for ext in ("pipelining", "8bitmime", "smtputf8", "enhancedstatuscodes",
                    "chunking", "dsn"):
            assert c.has_extn(ext), ext
        assert c.esmtp_features["size"] == str(10 * 1024 * 1024)
        assert not c.has_extn("starttls")  # plain listener
        assert not c.has_extn("auth")


def test_pipelined_commands_in_one_write(appliance):
    s = connect(appliance)
    s.sendall(b"EHLO p.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
              b"RCPT TO:<bad address>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n")
    data = b""
    while data.count(b"\r\n354 ") == 0 and not data.startswith(b"354 "):
        data += s.recv(65536)
    lines = [ln for ln in data.split(b"\r\n") if ln and ln[3:4] == b" "]
    codes = [ln[:3] for ln in lines]
    assert codes == [b"250", b"250", b"250", b"501", b"250", b"354"]
    assert talk(s, b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n").startswith(b"250 2.0.0 Ok: queued")
    env, _ = stored(appliance)
    assert [r["address"] for r in env["recipients"]] == ["b@example.net", "c@example.net"]


def test_bdat_chunks_binary_exact(appliance):
    s = connect(appliance)
    assert talk(s, b"EHLO b.example\r\n").startswith(b"250")
    assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<b@example.net>\r\n").startswith(b"250")
    part1 = b"Subject: bin\r\n\r\n\x00\x01\r\n.\r\n"
    part2 = bytes(range(256)) + b"\n\r.\r\n"
    r1 = talk(s, b"BDAT %d\r\n" % len(part1) + part1)
    assert r1.startswith(b"250 2.0.0"), r1
    r2 = talk(s, b"BDAT %d LAST\r\n" % len(part2) + part2)
    assert r2.startswith(b"250 2.0.0 Ok: queued as"), r2
    _, data = stored(appliance)
    assert data.endswith(b"\r\n\r\n\x00\x01\r\n.\r\n" + part2)


def test_smtputf8_address(appliance):
    with smtplib.SMTP("127.0.0.1", appliance.port) as c:
        c.ehlo("u.example")
        c.sendmail("jörg@exämple.org", ["ünïcode@例え.jp"], MSG,
                   mail_options=["SMTPUTF8"])
    env, data = stored(appliance)
    assert env["mail_from"]["address"] == "jörg@exämple.org"
    assert env["recipients"][0]["address"] == "ünïcode@例え.jp"
    assert b" with UTF8SMTP id " in data


def test_size_limit_at_mail_and_in_data_then_session_continues(make_appliance):
    app = make_appliance('[limits]\nmax_message_size = "2 KiB"\n')
    s = connect(app)
    talk(s, b"EHLO s.example\r\n")
    assert talk(s, b"MAIL FROM:<a@example.org> SIZE=2049\r\n").startswith(b"552 5.3.4")
    assert talk(s, b"MAIL FROM:<a@example.org> SIZE=2048\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<b@example.net>\r\n").startswith(b"250")
    assert talk(s, b"DATA\r\n").startswith(b"354")
    big = b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n"
    big = big * 40
    assert talk(s, big + b".\r\n").startswith(b"552 5.3.4")
    assert app.queued() == []
    # exactly at the limit is fine: the session goes on
    talk(s, b"MAIL FROM:<a@example.org>\r\n")
    talk(s, b"RCPT TO:<b@example.net>\r\n")
    talk(s, b"DATA\r\n")
    exact = b"S: x\r\n\r\n" + (b"y" * 98 + b"\r\n") * 20 + b"y" * 38 + b"\r\n"
    assert len(exact) == 2048
    assert talk(s, exact + b".\r\n").startswith(b"250 2.0.0")
    assert len(app.queued()) == 1


def test_max_recipients_boundary(make_appliance):
    app = make_appliance("[limits]\nmax_recipients = 3\n")
    s = connect(app)
    talk(s, b"EHLO r.example\r\n")
    talk(s, b"MAIL FROM:<a@example.org>\r\n")
    for i in range(3):
        assert talk(s, b"RCPT TO:<r%d@example.net>\r\n" % i).startswith(b"250 2.1.5")
    assert talk(s, b"RCPT TO:<r4@example.net>\r\n").startswith(b"452 4.5.3")
    talk(s, b"DATA\r\n")
    assert talk(s, b"Subject: r\r\n\r\nx\r\n.\r\n").startswith(b"250")
    env, _ = stored(app)
    assert len(env["recipients"]) == 3


def test_loop_protection_by_received_count(make_appliance):
    app = make_appliance("[limits]\nmax_received_headers = 5\n")
    with smtplib.SMTP("127.0.0.1", app.port) as c:
        ok = b"Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n" * 5 + MSG
        assert c.sendmail("a@example.org", ["b@example.net"], ok) == {}
        with pytest.raises(smtplib.SMTPDataError) as e:
            c.sendmail("a@example.org", ["b@example.net"],
                       b"Received: from z by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n" + ok)
        assert e.value.smtp_code == 554 and e.value.smtp_error.startswith(b"5.4.6")
    assert len(app.queued()) == 1


def test_bad_command_limit_closes_and_others_still_served(appliance):
    s = connect(appliance)
    for i in range(7):
        assert talk(s, b"BOGUS %d\r\n" % i).startswith(b"500 5.5.2"), i
    # the eighth error (max_bad_commands) is answered, then 421 and the close at once
    s.sendall(b"RCPT TO:<x@y.z>\r\n")
    last = b""
    while chunk := s.recv(1000):
        last += chunk
    assert last.startswith(b"503 5.5.1") and b"\r\n421 4.7.0 " in last, last
    with smtplib.SMTP("127.0.0.1", appliance.port) as c:
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}


def test_max_messages_per_session(make_appliance):
    app = make_appliance("[limits]\nmax_messages_per_session = 2\n")
    c = smtplib.SMTP("127.0.0.1", app.port)
    c.sendmail("a@example.org", ["b@example.net"], MSG)
    c.sendmail("a@example.org", ["b@example.net"], MSG)
    with pytest.raises(smtplib.SMTPSenderRefused) as e:
        c.sendmail("a@example.org", ["b@example.net"], MSG)
    assert e.value.smtp_code == 421 and e.value.smtp_error.startswith(b"4.7.0")
    assert len(app.queued()) == 2


def test_banner_variables(make_appliance):
    app = make_appliance('[server]\nbanner = "#HostName# at #ConnectedIP# t=#UnixTime# ESMTP"\n')
    s = socket.create_connection(("127.0.0.1", app.port))
    banner = read_reply(s).decode()
    assert banner.startswith("220 mx.test.example at 127.0.0.1 t=")
    assert banner.split("t=")[1].split()[0].isdigit()


def test_max_sessions_gives_421_and_frees_up(make_appliance):
    app = make_appliance("[server]\nmax_sessions = 2\n")
    a, b = connect(app), connect(app)
    c = socket.create_connection(("127.0.0.1", app.port), timeout=10)
    assert read_reply(c).startswith(b"421 4.3.2")
    talk(a, b"QUIT\r\n")
    a.close()
    for _ in range(50):  # the server notices the closed session
        d = socket.create_connection(("127.0.0.1", app.port), timeout=10)
        reply = read_reply(d)
        if reply.startswith(b"220"):
            break
    assert reply.startswith(b"220")
    b.close()


def test_command_timeout(make_appliance):
    app = make_appliance('[limits]\ncommand_timeout = "1s"\n')
    s = connect(app)
    s.settimeout(30)
    assert s.recv(1000).startswith(b"421 4.4.2")


def test_disconnect_mid_data_stores_nothing(appliance):
    s = connect(appliance)
    talk(s, b"EHLO d.example\r\nMAIL FROM:<a@example.org>\r\n")
    talk(s, b"RCPT TO:<b@example.net>\r\n")
    assert talk(s, b"DATA\r\n").startswith(b"354")
    s.sendall(b"Subject: cut\r\n\r\n" + b"z" * 500000)
    s.close()
    with smtplib.SMTP("127.0.0.1", appliance.port) as c:  # still serving
        c.noop()
    assert appliance.queued() == []
    assert list((appliance.spool / "tmp").iterdir()) == []
    assert "lost_in_data" in appliance.log()


def test_smuggling_payload_is_one_message(appliance):
    s = connect(appliance)
    talk(s, b"EHLO smug.example\r\nMAIL FROM:<a@example.org>\r\n")
    talk(s, b"RCPT TO:<b@example.net>\r\n")
    talk(s, b"DATA\r\n")
    payload = (b"Subject: one\r\n\r\nx\r\n\n.\n"
               b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\n"
               b"DATA\r\nSubject: smuggled\r\n\r\n.\r\n")
    reply = talk(s, payload)
    # bare LF is refused by default: nothing stored, nothing smuggled
    assert reply.startswith(b"550 5.6.0"), reply
    assert appliance.queued() == []


def test_bare_lf_normalised_when_allowed(make_appliance):
    app = make_appliance('[smtp]\nbare_linefeed = "normalize"\n')
    s = connect(app)
    talk(s, b"EHLO n.example\r\nMAIL FROM:<a@example.org>\r\n")
    talk(s, b"RCPT TO:<b@example.net>\r\n")
    talk(s, b"DATA\r\n")
    reply = talk(s, b"Subject: lf\r\n\r\nline1\nline2\n.\nstill body\r\n.\r\n")
    assert reply.startswith(b"250 2.0.0")
    env, data = stored(app)
    assert data.endswith(b"\r\n\r\nline1\r\nline2\r\n.\r\nstill body\r\n")
    assert len(app.queued()) == 1


def test_vrfy_and_expn_off_by_default(appliance):
    s = connect(appliance)
    talk(s, b"EHLO v.example\r\n")
    assert talk(s, b"VRFY postmaster\r\n").startswith(b"252 2.5.2")
    assert talk(s, b"EXPN staff\r\n").startswith(b"502 5.5.1")


def test_ipv6_listener(make_appliance):
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    app = make_appliance(listeners={"v6": {"address": "::1"}})
    with smtplib.SMTP("::1", app.port) as c:
        c.ehlo("six.example")
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    env, data = stored(app)
    assert env["client"]["ip"] == "::1"
    assert b"[IPv6:::1]" in data


@pytest.mark.skipif(not have("swaks"), reason="swaks (Debian) is installed by make test")
def test_swaks_delivers(appliance):
    out = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(appliance.port),
         "--from", "swaks@example.org", "--to", "rcpt@example.net",
         "--helo", "swaks.example", "--header", "Subject: via swaks"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "250 2.0.0 Ok: queued as" in out.stdout
    env, data = stored(appliance)
    assert env["client"]["helo"] == "swaks.example"
    assert b"Subject: via swaks" in data


@pytest.mark.skipif(not have("swaks"), reason="swaks (Debian) is installed by make test")
def test_swaks_pipelining(appliance):
    out = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(appliance.port), "--pipeline",
         "--from", "p@example.org", "--to", "a@example.net,b@example.net"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    # swaks shows what it sent (" -> ") and received ("<-  "): the envelope went
    # in one write, before the first reply, and every command was answered in order
    lines = out.stdout.splitlines()
    start = lines.index(" -> MAIL FROM:<p@example.org>")
    assert lines[start:start + 8] == [
        " -> MAIL FROM:<p@example.org>", " -> RCPT TO:<a@example.net>",
        " -> RCPT TO:<b@example.net>", " -> DATA", "<-  250 2.1.0 Ok", "<-  250 2.1.5 Ok",
        "<-  250 2.1.5 Ok", "<-  354 End data with <CR><LF>.<CR><LF>"]
    env, _ = stored(appliance)
    assert [r["address"] for r in env["recipients"]] == ["a@example.net", "b@example.net"]


# swaks has no CHUNKING; Perl's Net::SMTP (libnet, which swaks depends on) frames BDAT
# chunks. It turns them on only for BODY=BINARYMIME, which we do not announce: the
# script sets its switch itself.
NET_SMTP_BDAT = r"""
use Net::SMTP;
my ($port, @chunks) = @ARGV;
my $c = Net::SMTP->new("127.0.0.1", Port => $port, Hello => "perl.example", Debug => 1)
    or die "connect: $@";
defined $c->supports("CHUNKING") or die "no CHUNKING";
$c->mail("bdat\@example.org") and $c->to("b\@example.net") or die "envelope";
${*$c}{net_smtp_chunking} = 1;
my $last = pop @chunks;
for (@chunks) { $c->bdat(pack("H*", $_)) or die "BDAT: " . $c->message }
$c->bdatlast(pack("H*", $last)) or die "BDAT LAST: " . $c->message;
$c->quit;
"""


def _net_smtp_bdat() -> bool:
    return have("perl") and subprocess.run(
        ["perl", "-MNet::SMTP", "-e", "exit !Net::SMTP->can('bdatlast')"]).returncode == 0


@pytest.mark.skipif(not _net_smtp_bdat(), reason="Perl's Net::SMTP with BDAT (libnet >= 3.09)")
def test_net_smtp_sends_the_message_in_bdat_chunks(appliance):
    # chunk boundaries inside a line and between CR and LF; a line starting with "."
    # is not dot-stuffed in BDAT and must arrive as sent
    chunks = [MSG[:30], MSG[30:MSG.index(b"\r\n\r\n") + 1], MSG[MSG.index(b"\r\n\r\n") + 1:-5],
              MSG[-5:]]
    assert b"".join(chunks) == MSG and b"\r\n.leading dot" in MSG
    out = subprocess.run(["perl", "-e", NET_SMTP_BDAT, str(appliance.port),
                          *(c.hex() for c in chunks)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    sent = re.findall(r">>> (BDAT \d+(?: LAST)?)$", out.stderr, re.M)
    assert sent == [f"BDAT {len(c)}" for c in chunks[:-1]] + [f"BDAT {len(chunks[-1])} LAST"]
    octets = re.findall(r"<<< 250 2\.0\.0 (\d+) octets received$", out.stderr, re.M)
    assert octets == [str(len(b"".join(chunks[:i + 1]))) for i in range(len(chunks) - 1)]
    assert re.search(r"<<< 250 2\.0\.0 Ok: queued as \w+$", out.stderr, re.M)
    env, data = stored(appliance)
    assert env["mail_from"]["address"] == "bdat@example.org"
    assert env["client"]["helo"] == "perl.example"
    received, rest = data.split(b"\r\n", 1)[0], data[data.index(b"\r\nFrom: ") + 2:]
    assert received.startswith(b"Received: from perl.example ")
    assert rest == MSG  # whole and unchanged


@pytest.mark.parametrize("policy,has_received,added", [
    ("all", True, True), ("none", True, False), ("none", False, True),
    ("non-authenticated", True, True),  # this client is not authenticated
])
def test_received_header_policy(make_appliance, policy, has_received, added):
    app = make_appliance(f'[smtp]\nreceived_header = "{policy}"\n')
    prior = b"Received: from earlier by relay; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    msg = (prior if has_received else b"") + MSG
    with smtplib.SMTP("127.0.0.1", app.port) as c:
        c.sendmail("a@example.org", ["b@example.net"], msg)
    _, data = stored(app)
    assert (b"by mx.test.example (smtp-appliance)" in data) == added, data[:200]
    assert data.startswith(b"Received: ") == (has_received or added)
    assert data.count(b"Received: ") == int(has_received) + int(added)


def test_bdat_over_size_fails_at_that_chunk(make_appliance):
    app = make_appliance('[limits]\nmax_message_size = "1 KiB"\n')
    s = connect(app)
    talk(s, b"EHLO b.example\r\nMAIL FROM:<a@example.org>\r\n")
    talk(s, b"RCPT TO:<b@example.net>\r\n")
    chunk = b"Subject: x\r\n\r\n" + b"a" * 1100
    assert talk(s, b"BDAT %d\r\n" % len(chunk) + chunk).startswith(b"552 5.3.4")
    assert talk(s, b"BDAT 3 LAST\r\nabc").startswith(b"503")  # transaction is over
    assert talk(s, b"RSET\r\n").startswith(b"250") and app.queued() == []
