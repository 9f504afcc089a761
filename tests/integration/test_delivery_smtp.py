"""Delivery to a real Postfix as SMTP next hop (tests/postfix_nexthop.py), which
hands the mail on to the private Dovecot LMTP server: STARTTLS verified against a
test CA, a 4xx deferral recorded with reason, attempts and next try and then
expired into a DSN, a 5xx bounced at RCPT."""

from __future__ import annotations

import time

import pytest

from bench.private_postfix import unavailable_reason
from tests.dovecot_fixture import PASSWORD, USER
from tests.lmtp_fixture import DOMAIN
from tests.postfix_nexthop import PostfixNextHop

from .delivery_helpers import commit, fast, message, send, states, wait_until


@pytest.fixture
def postfix(lmtp, certs):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    hop = PostfixNextHop(lmtp.unix_socket, DOMAIN)
    try:
        yield hop.start(certs[0], certs[1])
    finally:
        hop.stop()


def smtp_config(postfix, certs, extra: str = "", starttls: str = "verify") -> str:
    return fast(extra) + f"""
domains = {{"{DOMAIN}" = "postfix"}}
[delivery.next_hops.postfix]
protocol = "smtp"
address = "{postfix.inet}"
starttls = "{starttls}"
ca_file = "{certs[2]}"
tls_name = "localhost"
"""


def test_relayed_over_verified_starttls_to_the_mailbox(make_appliance, postfix, lmtp, certs):
    app = make_appliance(smtp_config(postfix, certs))
    for n in range(3):
        send(app, "a@example.org", [f"alice@{DOMAIN}"], message(n))
    wait_until(lambda: len(lmtp.messages("alice")) == 3 and not app.queued(),
               what="3 messages through Postfix", log=lambda: app.log() + postfix.log())
    assert "TLS connection established from" in postfix.log()
    received = lmtp.messages("alice")[0].get_all("Received")
    assert any("with ESMTPS" in r and "nexthop.test.example" in r for r in received)
    assert "relay=postfix[127.0.0.1]" in app.log()


def test_a_wrong_tls_name_defers_under_verify(make_appliance, postfix, lmtp, certs):
    app = make_appliance(smtp_config(postfix, certs).replace('tls_name = "localhost"',
                                                             'tls_name = "other.example"'))
    send(app, "a@example.org", [f"alice@{DOMAIN}"], message(1))
    wait_until(lambda: "deferred" in app.log(), log=app.log)
    (records,) = states(app.spool).values()
    assert records[0]["state"] == "deferred" and "certificate" in records[0]["reason"].lower()
    assert lmtp.messages("alice") == []


def test_4xx_defers_with_backoff_5xx_bounces_and_expiry_bounces(make_appliance, postfix, lmtp,
                                                                certs):
    app = make_appliance(smtp_config(postfix, certs, 'queue_lifetime = "1h"\n'))
    send(app, f"carol@{DOMAIN}", [f"later@{DOMAIN}", f"refused@{DOMAIN}", f"bob@{DOMAIN}"],
         message(1))
    # received two hours ago: past queue_lifetime at its first failure
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 7200))
    commit(app.spool, f"carol@{DOMAIN}", [f"later@{DOMAIN}"], message(2), received_at=old)
    wait_until(lambda: len(lmtp.messages("carol")) == 2 and len(app.queued()) == 1, timeout=60,
               what="two DSNs to carol (refused, expired)", log=app.log)
    assert len(lmtp.messages("bob")) == 1
    (records,) = states(app.spool).values()
    deferred = [r for r in records if r["rcpt"] == 0][-1]
    assert deferred["state"] == "deferred" and deferred["attempts"] >= 1
    assert deferred["reason"].startswith("450 4.2.0 <later@test.example>")
    assert deferred["reason"].endswith("Mailbox busy, try again later")
    assert deferred["next_try"] > deferred["at"]
    reports = {}
    for m in lmtp.messages("carol"):
        assert m.get_content_type() == "multipart/report"
        per_rcpt = m.get_payload()[1].get_payload()[1]
        reports[per_rcpt["Final-Recipient"], per_rcpt["Action"], per_rcpt["Status"]] = per_rcpt
    assert set(reports) == {(f"rfc822; refused@{DOMAIN}", "failed", "5.1.1"),
                            (f"rfc822; later@{DOMAIN}", "failed", "4.4.7")}
    expired = reports[f"rfc822; later@{DOMAIN}", "failed", "4.4.7"]
    assert "450 4.2.0" in expired["Diagnostic-Code"]
    assert " expired " in app.log()


def test_starttls_none_relays_in_plain_text(make_appliance, postfix, lmtp, certs):
    app = make_appliance(smtp_config(postfix, certs, starttls="none"))
    send(app, "a@example.org", [f"alice@{DOMAIN}"], message(1))
    wait_until(lambda: lmtp.messages("alice") and not app.queued(), log=app.log)
    received = lmtp.messages("alice")[0].get_all("Received")
    assert any("with ESMTP " in r and "nexthop.test.example" in r for r in received)
    assert "TLS connection established from" not in postfix.log()


def test_auth_after_starttls(make_appliance, lmtp, dovecot, certs, tmp_path):
    """AUTH against a Postfix that asks the private Dovecot (tests/dovecot_fixture.py)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    hop = PostfixNextHop(lmtp.unix_socket, DOMAIN)
    try:
        hop.start(certs[0], certs[1], sasl=dovecot.inet)
        secret = tmp_path / "relay.secret"
        secret.write_text(PASSWORD + "\n")
        extra = f'auth_user = "{USER}"\nauth_password_file = "{secret}"\n'
        app = make_appliance(smtp_config(hop, certs) + extra)
        send(app, "a@example.org", [f"alice@{DOMAIN}"], message(1))
        wait_until(lambda: lmtp.messages("alice") and not app.queued(), log=app.log)
        assert f"sasl_username={USER}" in hop.log()
    finally:
        hop.stop()
