"""Before-queue delivery into a real Dovecot LMTP server: the client gets the
next hop's answer, nothing is kept on success; LMTP's per-recipient replies mapped
to one reply, a partial failure spooled or tempfailed by config."""

from __future__ import annotations

import smtplib

import pytest

from tests.lmtp_fixture import DOMAIN


def before_queue_config(lmtp, partial: str = "spool", address: str | None = None) -> str:
    return f"""
[delivery]
enabled = false
before_queue = {{"mta" = "dovecot"}}
before_queue_partial = "{partial}"
[delivery.next_hops.dovecot]
protocol = "lmtp"
address = "{address or lmtp.unix}"
"""


def transaction(app, rcpts: list[str]) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", app.port, timeout=30) as c:
        c.ehlo("client.example")
        c.mail("a@example.org")
        for r in rcpts:
            assert c.rcpt(r)[0] == 250
        return c.data(b"Subject: bq\r\nMessage-ID: <bq@example.org>\r\n\r\nbody\r\n")


def test_taken_by_the_next_hop_and_nothing_kept(make_appliance, lmtp):
    app = make_appliance(before_queue_config(lmtp))
    code, _ = transaction(app, [f"alice@{DOMAIN}", f"bob@{DOMAIN}"])
    assert code == 250
    assert len(lmtp.messages("alice")) == 1 and len(lmtp.messages("bob")) == 1
    assert app.queued() == []
    assert "before_queue" in app.log() and "Saved" in app.log()


def test_every_recipient_refused_gives_the_refusal(make_appliance, lmtp):
    app = make_appliance(before_queue_config(lmtp))
    code, text = transaction(app, [f"nobody@{DOMAIN}"])
    assert (code, text[:5]) == (550, b"5.1.1")
    assert app.queued() == []


def test_next_hop_down_gives_451_and_keeps_nothing(make_appliance, lmtp):
    lmtp.stop()
    app = make_appliance(before_queue_config(lmtp))
    code, text = transaction(app, [f"alice@{DOMAIN}"])
    assert (code, text[:5]) == (451, b"4.4.1")
    assert app.queued() == []
    # the server keeps serving
    lmtp.start()
    assert transaction(app, [f"alice@{DOMAIN}"])[0] == 250


@pytest.mark.parametrize("partial", ["spool", "tmpfail"])
def test_partial_failure(make_appliance, lmtp, partial):
    app = make_appliance(before_queue_config(lmtp, partial))
    code, text = transaction(app, [f"alice@{DOMAIN}", f"nobody@{DOMAIN}"])
    assert len(lmtp.messages("alice")) == 1
    if partial == "spool":
        assert code == 250
        (queued,) = app.queued()
        assert f"nobody@{DOMAIN}" in queued.read_text()
        assert f"alice@{DOMAIN}" not in queued.read_text()
    else:
        assert (code, text[:5]) == (451, b"4.3.0") and app.queued() == []
