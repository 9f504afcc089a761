"""SPF, DNSBL/DNSWL, sender MX and reverse DNS through the real server, against the
real test DNS server (unbound, tests/dns_fixture.py). Clients connect from the
127.0.0.x addresses the test zones know (see the fixture's docstring)."""

from __future__ import annotations

import email
import json
import smtplib
import socket
import threading
import time
import uuid

import authres
import pytest

from tests.integration.conftest import Appliance, read_reply

CHECKS = """
[plugins.spf]
enabled = true
[plugins.sender-mx]
enabled = true
[plugins.reverse-dns]
enabled = true
[plugins.dnsbl]
enabled = true

[spf]
timeout = "3s"
[spf.on_softfail]
text = "SPF SoftFail for #Domain#"      # the action stays "continue"

# the listener "strict" refuses SoftFail; every other [spf] key as above
[listeners.strict.spf.on_softfail]
action = "reject"
enhanced_code = "5.7.23"

[reverse_dns]
stage = "mail_from"
[reverse_dns.on_none]
action = "reject"
[reverse_dns.on_not_confirmed]
action = "tmpreject"
code = 450
enhanced_code = "4.7.25"

[dnsbl]
threshold = 2
[[dnsbl.zones]]
zone = "dnswl.test"
kind = "allow"
[[dnsbl.zones]]
zone = "dnsbl.test"
listed = ["127.0.0.2"]
weight = 2
[[dnsbl.zones]]
zone = "dnsbl2.test"
weight = 1

# the listener "records" refuses neither a listed client nor one without a PTR name:
# what the checks found only goes into the envelope
[listeners.records.dnsbl.on_listed]
action = "continue"
[listeners.records.reverse_dns.on_none]
action = "continue"
"""


@pytest.fixture(scope="module")
def app(dns_server, tmp_path_factory):
    server = Appliance(tmp_path_factory.mktemp("checks"), dns_server.toml() + CHECKS,
                       {"mta": {}, "v6": {"address": "::1"}, "strict": {}, "records": {}},
                       None).start()
    yield server
    server.stop()


def connect(app: Appliance, source: str = "127.0.0.1", listener: str = "mta",
            timeout: float = 10) -> tuple[socket.socket, bytes]:
    host = "::1" if listener == "v6" else "127.0.0.1"
    s = socket.create_connection((host, app.ports[listener]), timeout=timeout,
                                 source_address=(source, 0))
    return s, read_reply(s)


def talk(s: socket.socket, line: str) -> bytes:
    s.sendall(line.encode() + b"\r\n")
    return read_reply(s)


def mail_from(app: Appliance, sender: str, source: str = "127.0.0.1",
              helo: str = "client.test", listener: str = "mta") -> bytes:
    s, banner = connect(app, source, listener)
    with s:
        assert banner.startswith(b"220"), banner
        assert talk(s, f"EHLO {helo}").startswith(b"250")
        address, _, params = sender.partition(" ")
        reply = talk(s, f"MAIL FROM:<{address}>" + (f" {params}" if params else ""))
        talk(s, "QUIT")
    return reply


# --- SPF ------------------------------------------------------------------------------

@pytest.mark.parametrize(("sender", "expected"), [
    ("alice@pass.spf.test", b"250 2.1.0"),
    ("alice@include.spf.test", b"250 2.1.0"),
    ("alice@redirect-pass.spf.test", b"250 2.1.0"),
    ("alice@macro.spf.test", b"250 2.1.0"),
    ("alice@softfail.spf.test", b"250 2.1.0"),
    ("alice@neutral.spf.test", b"250 2.1.0"),
    ("alice@toomany.spf.test", b"250 2.1.0"),          # PermError: accepted by default
    ("alice@fail.spf.test", b"550 5.7.23 fail.spf.test does not authorize 127.0.0.1 to send"
                            b" mail for it"),
    ("alice@redirect.spf.test", b"550 5.7.23 "),
    ("bob@macro.spf.test", b"550 5.7.23 "),
])
def test_spf_results_map_to_replies(app, sender, expected):
    assert mail_from(app, sender).startswith(expected)


def test_null_sender_is_checked_with_the_helo_name(app):
    assert mail_from(app, "", helo="helo.spf.test").startswith(b"250 2.1.0")
    assert mail_from(app, "", helo="fail.spf.test").startswith(b"550 5.7.23")
    assert mail_from(app, "", helo="[127.0.0.1]").startswith(b"250 2.1.0")   # SPF None


def test_odd_senders_get_clear_replies(app):
    assert mail_from(app, "a@[127.0.0.1]").startswith(b"250 2.1.0")   # no policy to ask
    long_label = "x" * 63 + ".test"                                    # the longest label
    assert mail_from(app, f"a@{long_label}").startswith(b"550 5.1.8")
    assert mail_from(app, "a@exämple.test SMTPUTF8").startswith(b"550 5.1.8")  # IDNA


def test_spf_temperror_within_the_timeout_while_another_session_flows(app):
    """[dns] timeout is 1s: the stalled domain's lookup fails after ~1s with 451 4.7.24;
    meanwhile a second session goes through a whole transaction, each reply at once."""
    stalled: dict[str, object] = {}

    def stall() -> None:
        started = time.monotonic()
        # a fresh local part: %{l}.stall.example, a name unbound has not given up on
        stalled["reply"] = mail_from(app, f"{uuid.uuid4().hex[:12]}@tempfail.spf.test")
        stalled["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=stall)
    thread.start()
    time.sleep(0.2)                                   # the stalled lookup is under way
    s, banner = connect(app)
    with s:
        for line, code in [("EHLO other.test", b"250"), ("MAIL FROM:<a@pass.spf.test>", b"250"),
                           ("RCPT TO:<rcpt@example.org>", b"250"), ("RSET", b"250")]:
            started = time.monotonic()
            assert talk(s, line).startswith(code)
            assert time.monotonic() - started < 0.5, line
        assert "reply" not in stalled                 # all of it while the other waited
    thread.join(10)
    assert stalled["reply"].startswith(b"451 4.7.24")
    assert stalled["seconds"] < 2.5


def test_listener_override_changes_the_action_for_that_listener_only(app):
    """[listeners.strict.spf.on_softfail] sets action and enhanced_code; the text comes
    from [spf.on_softfail], the code is reject's default. Other listeners accept."""
    assert mail_from(app, "alice@softfail.spf.test", listener="strict") == (
        b"550 5.7.23 SPF SoftFail for softfail.spf.test\r\n")
    assert mail_from(app, "alice@softfail.spf.test").startswith(b"250 2.1.0")
    # the rest of [spf] still applies on "strict": Pass accepted, Fail refused
    assert mail_from(app, "alice@pass.spf.test", listener="strict").startswith(b"250 2.1.0")
    assert mail_from(app, "alice@fail.spf.test", listener="strict").startswith(b"550 5.7.23 ")
    # and the other checks too ([sender_mx], [reverse_dns] are global)
    assert mail_from(app, "a@null-mx.mx.test", listener="strict").startswith(b"550 5.1.8")
    assert mail_from(app, "a@has-mx.mx.test", source="127.0.0.4",
                     listener="strict").startswith(b"550 5.7.25")


# --- sender MX --------------------------------------------------------------------------

@pytest.mark.parametrize(("sender", "expected"), [
    ("a@has-mx.mx.test", b"250 2.1.0"),
    ("a@a-only.mx.test", b"250 2.1.0"),
    ("a@no-address.mx.test", b"550 5.1.8 Sender address rejected: no-address.mx.test"),
    ("a@null-mx.mx.test", b"550 5.1.8 Sender address rejected: null-mx.mx.test accepts no "
                          b"mail (null MX)"),
    ("a@does-not-exist.mx.test", b"550 5.1.8"),
])
def test_sender_mx_results_map_to_replies(app, sender, expected):
    assert mail_from(app, sender).startswith(expected)


# --- reverse DNS ------------------------------------------------------------------------

def test_reverse_dns_none_and_not_confirmed(app):
    assert mail_from(app, "a@has-mx.mx.test", source="127.0.0.4").startswith(
        b"550 5.7.25 Client host [127.0.0.4] has no reverse DNS name")
    assert mail_from(app, "a@has-mx.mx.test", source="127.0.0.3").startswith(
        b"450 4.7.25 Reverse DNS name mismatch.rdns.test of [127.0.0.3] does not resolve")


# --- DNSBL / DNSWL ----------------------------------------------------------------------

def test_listed_client_gets_554_with_the_zones_txt_and_others_keep_going(app):
    s, banner = connect(app, "127.0.0.2")
    with s:
        assert banner.startswith(b"554 5.7.1 mx.test.example 127.0.0.2 is listed, see "
                                 b"https://dnsbl.test/q?127.0.0.2")
    s, banner = connect(app, "127.0.0.1")
    with s:
        assert banner.startswith(b"220")


def test_weights_threshold_and_return_codes(app):
    # 127.0.0.7: only in dnsbl2.test (weight 1 < threshold 2)
    # 127.0.0.6: in dnsbl.test with 127.0.0.10, not one of its listed codes
    for source in ("127.0.0.7", "127.0.0.6"):
        s, banner = connect(app, source)
        with s:
            assert banner.startswith(b"220"), (source, banner)


def test_allow_list_hit_skips_the_block_lists_and_later_checks(app):
    # 127.0.0.5 is in dnsbl.test too, and has no PTR: allow-listed, neither counts
    assert mail_from(app, "a@has-mx.mx.test", source="127.0.0.5").startswith(b"250")
    # ...and the message says so in Authentication-Results (RFC 8904's dnswl method)
    with smtplib.SMTP("127.0.0.1", app.ports["mta"], timeout=10,
                      source_address=("127.0.0.5", 0)) as client:
        client.sendmail("a@has-mx.mx.test", ["bob@example.org"], b"Subject: wl\r\n\r\nx\r\n")
    env = sorted(app.queued(), key=lambda p: p.stat().st_mtime)[-1]
    field = email.message_from_bytes(env.with_suffix(".msg").read_bytes())[
        "Authentication-Results"].replace("\r\n", "")
    parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + field)
    assert [(r.method, r.result) for r in parsed.results if r.method == "dnswl"] == [
        ("dnswl", "pass")]
    assert "dnswl=pass dns.zone=dnswl.test policy.ip=127.0.10.0" in field


def test_ipv6_client_is_looked_up_by_nibbles(app):
    s, banner = connect(app, "::1", listener="v6")
    with s:
        assert banner.startswith(b"554 5.7.1 mx.test.example ::1 is listed")


# --- the header fields --------------------------------------------------------------------

def test_authentication_results_and_received_spf(app):
    with smtplib.SMTP("127.0.0.1", app.ports["mta"], timeout=10) as client:
        client.ehlo("client.test")
        client.sendmail("alice@pass.spf.test", ["bob@example.org"],
                        b"Authentication-Results: mx.test.example; spf=pass\r\n"
                        b"Authentication-Results: elsewhere.example; dkim=fail\r\n"
                        b"Subject: hi\r\n\r\nbody\r\n")
    env = sorted(app.queued(), key=lambda p: p.stat().st_mtime)[-1]
    msg = email.message_from_bytes(env.with_suffix(".msg").read_bytes())
    ours = msg.get_all("Authentication-Results")
    assert len(ours) == 2                               # the forged one of our id is gone
    parsed = authres.AuthenticationResultsHeader.parse(
        "Authentication-Results: " + ours[0].replace("\r\n", ""))
    assert parsed.authserv_id == "mx.test.example"
    results = {r.method: r for r in parsed.results}
    assert results["spf"].result == "pass"
    assert results["spf"].smtp_mailfrom == "alice@pass.spf.test"
    assert results["iprev"].result == "pass"
    assert results["iprev"].policy_iprev == "127.0.0.1"
    assert "elsewhere.example" in ours[1]
    spf = msg["Received-SPF"]
    assert spf.startswith("Pass") and "client-ip=127.0.0.1;" in spf
    assert "envelope-from=alice@pass.spf.test;" in spf and "identity=mailfrom" in spf
    assert "(localhost.rdns.test [127.0.0.1])" in msg["Received"]   # reverse_name


# --- the results in the envelope -----------------------------------------------------------

def test_envelope_carries_each_checks_result_by_name(app):
    """127.0.0.2 is listed by dnsbl.test (weight 2) and dnsbl2.test (1) and has no PTR
    name; on "records" it may send all the same, and the envelope says what each check
    found: the client's checks and the message's, whole."""
    with smtplib.SMTP("127.0.0.1", app.ports["records"], timeout=10,
                      source_address=("127.0.0.2", 0)) as client:
        client.ehlo("client.test")
        assert client.sendmail("alice@pass.spf.test", ["bob@example.org"],
                               b"Subject: checks\r\n\r\nx\r\n") == {}
    envelopes = [json.loads(p.read_text()) for p in app.queued()]
    env, = [e for e in envelopes if e["client"]["ip"] == "127.0.0.2"]
    checks = env["checks"]
    assert env["version"] == 2
    assert checks["dnsbl"] == {
        "result": "127.0.0.2", "allow_listed": False, "zone": "dnsbl.test", "score": 3,
        "explanation": "127.0.0.2 is listed, see https://dnsbl.test/q?127.0.0.2", "error": ""}
    assert (checks["spf"]["result"], checks["spf"]["domain"]) == ("Pass", "pass.spf.test")
    assert (checks["sender-mx"]["result"], checks["sender-mx"]["domain"]) == (
        "Pass", "pass.spf.test")
    assert (checks["reverse-dns"]["result"], checks["reverse-dns"]["name"]) == ("none", None)
    assert checks["results"] == [   # as in the Authentication-Results field
        "iprev=fail (no PTR) policy.iprev=127.0.0.2",
        "spf=pass (mx.test.example: sender SPF authorized) smtp.mailfrom=alice@pass.spf.test"]
    msg = email.message_from_bytes(app.spool.joinpath(
        "queue", env["queue_id"] + ".msg").read_bytes())
    assert "(unknown [127.0.0.2])" in msg["Received"]   # no name from reverse-dns


# --- monitor mode -----------------------------------------------------------------------

def test_monitor_mode_accepts_and_still_reports(dns_server, tmp_path_factory):
    server = Appliance(tmp_path_factory.mktemp("monitor"), dns_server.toml() + """
[plugins.spf]
enabled = true
mode = "monitor"
""", {"mta": {}}, None).start()
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.ehlo("client.test")
            client.sendmail("alice@fail.spf.test", ["bob@example.org"], b"Subject: x\r\n\r\nx\r\n")
        msg = email.message_from_bytes(server.queued()[0].with_suffix(".msg").read_bytes())
        assert "spf=fail" in msg["Authentication-Results"]
        assert "mail_from spf reject 550 5.7.23" in server.log()
        assert "(monitor)" in server.log()
    finally:
        server.stop()
