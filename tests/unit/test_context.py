"""Contexts: read/write rules, recipient operations, delayed delivery."""

import datetime as dt

import pytest
from attrs.exceptions import FrozenAttributeError

from appliance.hooks.verdict import Action, Verdict
from appliance.mail.context import Recipient, SessionContext, Transaction, core_set, parse_delay


def session():
    return SessionContext(session_id="s", listener="mta", local_ip="127.0.0.1",
                          local_port=25, remote_ip="192.0.2.1", remote_port=4000)


@pytest.mark.parametrize("name", ["remote_ip", "helo_name", "auth_user", "message_count",
                                  "tls", "bad_commands"])
def test_core_fields_are_read_only_for_plugins(name):
    s = session()
    with pytest.raises(FrozenAttributeError):
        setattr(s, name, "x")
    core_set(s, name, "y")
    assert getattr(s, name) == "y"


def test_writable_fields():
    s = session()
    s.max_recipients = 5
    s.spf_result = "Pass"
    assert (s.max_recipients, s.spf_result) == (5, "Pass")


def test_transaction_views_and_recipient_ops():
    t = Transaction(queue_id="q", mail_from="Joe@Example.org", mail_params={"SIZE": 10})
    assert (t.mail_from_local_part, t.mail_from_domain, t.mail_from_size) == (
        "Joe", "Example.org", 10)
    with pytest.raises(FrozenAttributeError):
        t.mail_from = "x@y"
    core_set(t, "current_rcpt", Recipient("c@d"))  # during on_rcpt_to
    t.add_recipient("a@b", folder="F")
    assert t._extra_rcpts[0].folder == "F"
    t.discard_recipient()
    assert t._discard_current


def test_recipients_added_for_a_refused_rcpt_are_dropped_with_it():
    t = Transaction(queue_id="q", mail_from="a@b")
    t.begin_recipient(Recipient("refused@b"))
    t.add_recipient("added-for-refused@b")
    t.end_recipient()  # refused: never accepted
    t.begin_recipient(Recipient("ok@b"))
    t.add_recipient("added-for-ok@b")
    t.accept_recipient()
    t.end_recipient()
    assert [r.address for r in t.recipients] == ["ok@b", "added-for-ok@b"]
    assert t.current_rcpt is None


def test_delay_delivery_formats():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert parse_delay("+1h30m", now) == now + dt.timedelta(hours=1, minutes=30)
    assert parse_delay("+45s", now) == now + dt.timedelta(seconds=45)
    assert parse_delay("+90", now) == now + dt.timedelta(seconds=90)
    when = parse_delay("Tue, 03 Feb 2026 10:00:00 +0100")
    assert when == dt.datetime(2026, 2, 3, 9, 0, tzinfo=dt.UTC)
    for bad in ("+", "tomorrow", "+1x"):
        with pytest.raises(ValueError):
            parse_delay(bad, now)


def test_verdict_defaults_and_overrides():
    assert Verdict.reject().reply_parts() == (550, "5.7.1", "Rejected by policy")
    assert Verdict(Action.TMPREJECT).reply_parts()[:2] == (451, "4.7.1")
    assert Verdict.abort("bye").reply_parts() == (421, "4.7.0", "bye")
    assert Verdict.reject("no", 554, "5.7.9").reply_parts() == (554, "5.7.9", "no")
    assert not Verdict(Action.CONTINUE).stops and Verdict.accept().stops
