"""DKIM verification and DMARC against the real server and the real DNS server
(tests/dns_fixture.py): keys made in the set-up, messages signed by dkimpy's real
signer, public keys and DMARC records published in the test zones, SPF checked by
the spf plugin. Each result's reply code and enhanced code; Authentication-Results
parsed with the authres package as a receiving MUA would; the quarantine flag and
header; monitor mode; a policy lookup that times out."""

from __future__ import annotations

import json
import smtplib

import authres
import pytest

from tests.dkim_keys import Key

from .conftest import Appliance
from .test_access import wait_for_log

BODY = b"\r\nHello.\r\n"


def message(sender: str, subject: str = "hi") -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: b@example.net\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@x.test>\r\n").encode() + BODY


@pytest.fixture(scope="module")
def key(dns_server):
    k = Key(1024)
    dns_server.add_records([
        k.record("sel", "reject.dmarc"),
        k.record("sel", "quarantine.dmarc"),
        k.record("sel", "other.dkim"),
        '_dmarc.reject.dmarc TXT "v=DMARC1; p=reject"',
        '_dmarc.quarantine.dmarc TXT "v=DMARC1; p=quarantine"',
        'spfok.dmarc TXT "v=spf1 ip4:127.0.0.1 -all"',
        'bounce.spfok.dmarc TXT "v=spf1 ip4:127.0.0.1 -all"',
        '_dmarc.spfok.dmarc TXT "v=DMARC1; p=reject"',
    ])
    return k


@pytest.fixture(scope="module")
def app(tmp_path_factory, certs, dns_server, key):
    """One server for the module (the tests only send messages)."""
    server = Appliance(tmp_path_factory.mktemp("dkim-dmarc"), dns_server.toml(timeout="500ms") + """
        [plugins.dkim]
        enabled = true
        [plugins.dmarc]
        enabled = true
        [plugins.spf]
        enabled = true
        [spf.on_fail]
        action = "continue"          # DMARC decides
        [spf.on_temperror]
        action = "continue"
        [dmarc]
        timeout = "2s"
        [listeners.header.dmarc]
        on_quarantine = "header"
        [listeners.watch.dmarc]
        mode = "monitor"
    """, {"mta": {}, "header": {}, "watch": {}}, certs[:2])
    yield server.start()
    server.stop()


def send(app, data: bytes, mail_from: str, listener: str = "mta",
         source: str = "127.0.0.1") -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", app.ports[listener], source_address=(source, 0)) as c:
        c.ehlo("client.x.test")
        assert c.mail(mail_from)[0] == 250
        assert c.rcpt("b@example.net")[0] == 250
        return c.data(data)


def stored_by_reply(app, reply: bytes) -> tuple[dict, bytes]:
    queue_id = reply.decode().rsplit(" ", 1)[1]
    env = app.spool / "queue" / f"{queue_id}.json"
    return json.loads(env.read_text()), env.with_suffix(".msg").read_bytes()


def auth_results(data: bytes) -> dict[str, list]:
    """The appliance's Authentication-Results field, parsed by authres: method ->
    results."""
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    fields = [f for f in head.replace("\r\n\t", " ").replace("\r\n ", " ").split("\r\n")
              if f.lower().startswith("authentication-results:")]
    assert len(fields) == 1, head
    parsed = authres.AuthenticationResultsHeader.parse(fields[0])
    assert parsed.authserv_id == "mx.test.example"
    found: dict[str, list] = {}
    for r in parsed.results:
        found.setdefault(r.method, []).append(r)
    return found


def prop(result, name: str) -> str:
    """A property of a parsed result: ``prop(r, "header.d")``."""
    ptype, _, pname = name.partition(".")
    return next(p.value for p in result.properties if (p.type, p.name) == (ptype, pname))


def test_signed_message_passes_dkim_and_dmarc(app, key):
    code, reply = send(app, key.sign(message("alice@reject.dmarc.test"), "reject.dmarc.test"),
                       "alice@reject.dmarc.test")
    assert code == 250
    env, data = stored_by_reply(app, reply)
    ar = auth_results(data)
    assert [(r.result, prop(r, "header.d")) for r in ar["dkim"]] == [("pass", "reject.dmarc.test")]
    assert [(r.result, prop(r, "header.from")) for r in ar["dmarc"]] == [
        ("pass", "reject.dmarc.test")]
    assert env["quarantine"] is None
    # the envelope keeps the same results for whatever reads the spool next
    assert [r.split(" ", 1)[0] for r in env["checks"]["results"]] == [
        "spf=none", "dkim=pass", "dmarc=pass"]
    # ...and each check's own result, by its name
    dkim, dmarc = env["checks"]["dkim"], env["checks"]["dmarc"]
    assert (dkim["result"], [(s["result"], s["domain"]) for s in dkim["signatures"]]) == (
        "pass", [("pass", "reject.dmarc.test")])
    assert (dmarc["result"], dmarc["domain"], dmarc["policy"]) == (
        "pass", "reject.dmarc.test", "reject")
    assert env["checks"]["spf"]["result"] == "None"


def test_body_changed_after_signing_fails_and_p_reject_refuses(app, key):
    signed = key.sign(message("alice@reject.dmarc.test"), "reject.dmarc.test")
    with smtplib.SMTP("127.0.0.1", app.ports["mta"]) as c:
        c.ehlo("client.x.test")
        c.mail("alice@reject.dmarc.test")
        c.rcpt("b@example.net")
        code, text = c.data(signed.replace(b"Hello.", b"Hellp."))
        assert (code, text) == (550, b"5.7.1 Rejected by the DMARC policy of reject.dmarc.test")
        # the session goes on: the unchanged message is accepted
        c.mail("alice@reject.dmarc.test")
        c.rcpt("b@example.net")
        assert c.data(signed)[0] == 250
    log = app.log()
    assert "dmarc_fail" in log and "domain=reject.dmarc.test" in log
    assert "trace message dmarc reject 550 5.7.1" in log


def test_signature_of_another_domain_does_not_align(app, key):
    signed = key.sign(message("alice@reject.dmarc.test"), "other.dkim.test")
    code, text = send(app, signed, "alice@reject.dmarc.test")
    assert (code, text) == (550, b"5.7.1 Rejected by the DMARC policy of reject.dmarc.test")


def test_unsigned_without_policy_is_none(app):
    code, reply = send(app, message("alice@nodmarc.dmarc.test"), "alice@nodmarc.dmarc.test")
    assert code == 250
    ar = auth_results(stored_by_reply(app, reply)[1])
    assert [r.result for r in ar["dkim"]] == ["none"]
    assert [(r.result, prop(r, "header.from")) for r in ar["dmarc"]] == [
        ("none", "nodmarc.dmarc.test")]


def test_spf_alignment_passes_and_spf_fail_is_refused_by_dmarc(app):
    code, reply = send(app, message("x@spfok.dmarc.test"), "a@bounce.spfok.dmarc.test")
    assert code == 250
    ar = auth_results(stored_by_reply(app, reply)[1])
    assert [r.result for r in ar["spf"]] == ["pass"]
    assert [r.result for r in ar["dmarc"]] == ["pass"]
    # from an address SPF does not allow: spf=fail, unsigned: DMARC fails, p=reject
    code, text = send(app, message("x@spfok.dmarc.test"), "a@bounce.spfok.dmarc.test",
                      source="127.0.0.9")
    assert (code, text) == (550, b"5.7.1 Rejected by the DMARC policy of spfok.dmarc.test")


def test_quarantine_flag_header_and_monitor(app, key):
    unsigned = message("bob@quarantine.dmarc.test")
    code, reply = send(app, unsigned, "bob@quarantine.dmarc.test")
    assert code == 250
    env, data = stored_by_reply(app, reply)
    assert env["quarantine"] == "DMARC policy quarantine of quarantine.dmarc.test"
    assert b"X-Spam-Flag" not in data
    assert [r.result for r in auth_results(data)["dmarc"]] == ["fail"]

    code, reply = send(app, unsigned, "bob@quarantine.dmarc.test", listener="header")
    env, data = stored_by_reply(app, reply)
    assert code == 250 and env["quarantine"] is None
    assert b"\r\nX-Spam-Flag: YES\r\n" in data

    # monitor: p=reject fails, the message is accepted, logged and traced
    code, reply = send(app, message("alice@reject.dmarc.test"), "alice@reject.dmarc.test",
                       listener="watch")
    env, _ = stored_by_reply(app, reply)
    assert code == 250 and env["quarantine"] is None
    assert [(t["plugin"], t["action"], t["code"], t["enhanced"]) for t in env["trace"]
            if t["mode"] == "monitor"] == [("dmarc", "reject", 550, "5.7.1")]
    wait_for_log(app, "dmarc_would_act")


def test_policy_lookup_timeout_is_temperror_and_accepted(app):
    code, reply = send(app, message("a@x.stall.example"), "a@x.stall.example")
    assert code == 250
    ar = auth_results(stored_by_reply(app, reply)[1])
    assert [r.result for r in ar["dmarc"]] == ["temperror"]
