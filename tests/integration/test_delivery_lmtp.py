"""Delivery from the spool into a real Dovecot LMTP server: recipients delivered
once, unknown ones bounced with an RFC 3464 DSN (parsed with the email package)
that is itself delivered through the same next hop."""

from __future__ import annotations

import pytest

from tests.lmtp_fixture import DOMAIN

from .delivery_helpers import lmtp_config, message, send, wait_until


@pytest.mark.parametrize("socket_kind", ["unix", "inet"])
def test_delivered_into_dovecot_and_removed_from_the_spool(make_appliance, lmtp, socket_kind):
    app = make_appliance(lmtp_config(lmtp, address=getattr(lmtp, socket_kind)))
    for n in range(5):
        assert send(app, "a@example.org", [f"alice@{DOMAIN}", f"bob@{DOMAIN}"], message(n)) == {}
    wait_until(lambda: len(lmtp.messages("alice")) == 5 and len(lmtp.messages("bob")) == 5
               and not app.queued(), what="5 messages to each mailbox", log=app.log)
    subjects = sorted(m["Subject"] for m in lmtp.messages("alice"))
    assert subjects == [f"test {n}" for n in range(5)]
    got = lmtp.messages("bob")[0]
    assert got["Received"].startswith("from")  # ours, on top
    assert "\n.leading dot" in got.get_content()  # dot-stuffed on the way, not doubled
    log = app.log()
    assert log.count("delivered") >= 10 and "status=2.0.0" in log
    # one connection carried several transactions (connection reuse)
    assert lmtp.log().count("Connect from") < 10


def test_unknown_recipient_bounces_with_a_dsn_to_the_sender(make_appliance, lmtp):
    app = make_appliance(lmtp_config(lmtp))
    sender = f"carol@{DOMAIN}"
    send(app, sender, [f"alice@{DOMAIN}", f"nobody@{DOMAIN}"], message(1),
         mail_options=["RET=HDRS", "ENVID=env+2B7"],
         rcpt_options=["NOTIFY=FAILURE", f"ORCPT=rfc822;nobody+40{DOMAIN}"])
    wait_until(lambda: lmtp.messages("carol") and not app.queued(),
               what="the DSN in carol's mailbox", log=app.log)
    assert len(lmtp.messages("alice")) == 1
    (report,) = lmtp.messages("carol")
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["To"] == sender
    text, status, returned = report.get_payload()
    assert f"nobody@{DOMAIN}" in text.get_content()
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_rcpt = status.get_payload()
    assert per_message["Original-Envelope-Id"] == "env+7"
    assert per_message["Reporting-MTA"].startswith("dns;")
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Final-Recipient"] == f"rfc822; nobody@{DOMAIN}"
    assert per_rcpt["Original-Recipient"] == f"rfc822; nobody@{DOMAIN}"
    assert "550 5.1.1" in per_rcpt["Diagnostic-Code"]
    # RET=HDRS: the headers only
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: test 1" in returned.get_payload() and "body 1" not in returned.get_payload()
    log = app.log()
    assert "bounced" in log and "dsn_sent" in log


def test_no_dsn_for_notify_never_nor_for_the_null_sender(make_appliance, lmtp):
    app = make_appliance(lmtp_config(lmtp))
    send(app, f"carol@{DOMAIN}", [f"nobody@{DOMAIN}"], message(1),
         rcpt_options=["NOTIFY=NEVER"])
    send(app, "", [f"nobody@{DOMAIN}"], message(2))
    wait_until(lambda: not app.queued() and app.log().count("bounced") >= 2,
               what="both bounced", log=app.log)
    assert lmtp.messages("carol") == []
    assert "dsn_sent" not in app.log()


def test_notify_success_gets_a_delivered_dsn(make_appliance, lmtp):
    app = make_appliance(lmtp_config(lmtp))
    send(app, f"carol@{DOMAIN}", [f"alice@{DOMAIN}"], message(1),
         rcpt_options=["NOTIFY=SUCCESS"])
    wait_until(lambda: lmtp.messages("carol") and not app.queued(), log=app.log)
    (report,) = lmtp.messages("carol")
    per_rcpt = report.get_payload()[1].get_payload()[1]
    assert per_rcpt["Action"] == "delivered" and per_rcpt["Status"].startswith("2.")
    assert report.get_payload()[2].get_content_type() == "text/rfc822-headers"



def test_notify_delay_gets_one_delayed_dsn(make_appliance, lmtp):
    lmtp.stop()
    app = make_appliance(lmtp_config(lmtp, 'delay_warning = "1s"\n'))
    send(app, f"carol@{DOMAIN}", [f"alice@{DOMAIN}"], message(1),
         rcpt_options=["NOTIFY=DELAY,FAILURE"])
    wait_until(lambda: "action=delayed" in app.log() and app.log().count(" deferred ") >= 3,
               log=app.log)
    lmtp.start()
    wait_until(lambda: lmtp.messages("alice") and lmtp.messages("carol") and not app.queued(),
               log=app.log)
    (report,) = lmtp.messages("carol")  # one notice, though deferred several times
    per_rcpt = report.get_payload()[1].get_payload()[1]
    assert per_rcpt["Action"] == "delayed" and per_rcpt["Status"] == "4.4.1"
    assert per_rcpt["Will-Retry-Until"]
    assert report.get_payload()[2].get_content_type() == "text/rfc822-headers"
