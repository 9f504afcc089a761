"""The delivery service's pure parts: state folding, backoff, routing, DSN
composition (parsed back with the email package), the [delivery] config checks."""

import email
import email.policy

import pytest

from appliance.config import ConfigError, load_config
from appliance.config.delivery import Delivery, NextHop
from appliance.delivery import dsn
from appliance.delivery.routing import route
from appliance.delivery.state import backoff, fold
from appliance.delivery.transport import Reply, _dot_stuffed

ENVELOPE = {"queue_id": "Q1", "received_at": "2026-12-06T05:00:00Z",
            "mail_from": {"address": "s@example.org", "params": {}},
            "dsn": {"ret": None, "envid": "e1"},
            "recipients": [{"address": "a@x.example", "params": {}},
                           {"address": "b@x.example",
                            "params": {"NOTIFY": ["SUCCESS"], "ORCPT": "rfc822;B@x.example"}}]}


def test_fold_last_record_wins_and_a_torn_line_is_ignored(tmp_path):
    from appliance.spool import Spool

    spool = Spool(tmp_path)
    spool.prepare()
    (spool.queue / "Q1.json").write_text("{}")
    spool.append_state("Q1", [{"rcpt": 0, "state": "deferred", "attempts": 1, "next_try": 50},
                              {"rcpt": 1, "state": "done", "attempts": 1}])
    spool.append_state("Q1", [{"rcpt": 0, "state": "deferred", "attempts": 2, "next_try": 90}])
    with open(spool.state_path("Q1"), "ab") as f:
        f.write(b'{"rcpt":0,"state":"do')  # a crash in the middle of a line
    state = fold(ENVELOPE, spool.read_state("Q1"))
    a, b = state.recipients
    assert (a.state, a.attempts, a.next_try) == ("deferred", 2, 90)
    assert b.final and state.pending == [0]
    assert state.due(89) == [] and state.due(90) == [0]
    spool.append_state("Q1", [{"event": "retry", "at": 60}, {"event": "released"}])
    state = fold(ENVELOPE, spool.read_state("Q1"))
    assert state.due(60) == [0] and state.released


def test_backoff_doubles_from_minimal_up_to_maximal():
    assert [backoff(n, 300, 4000) for n in range(1, 7)] == [300, 600, 1200, 2400, 4000, 4000]


def test_routing_order():
    hops = {"lmtp": NextHop(protocol="lmtp", address="unix:/run/lmtp"),
            "relay": NextHop(address="inet:192.0.2.1:25"),
            "vip": NextHop(address="inet:192.0.2.2:25")}
    config = Delivery(default="lmtp", domains={"partner.example": "relay"},
                      recipients={"boss@partner.example": "vip"}, next_hops=hops)
    assert route(config, "a@x.example")[0] == "lmtp"
    assert route(config, "a@Partner.Example")[0] == "relay"
    assert route(config, "boss@partner.example")[0] == "vip"
    assert route(config, "boss@partner.example", "relay")[0] == "relay"
    name, hop = route(config, "a@x.example", "[192.0.2.9]:2525")
    assert hop.address == "inet:[192.0.2.9]:2525" and hop.protocol == "smtp"
    assert route(config, "a@x.example", "mx.example")[1].address == "inet:mx.example:25"
    assert route(Delivery(next_hops=hops), "a@x.example") is None


def test_reply_parsing_and_outcomes():
    r = Reply.parse(550, b"5.1.1 <a@x> User\n unknown")
    assert (r.enhanced, r.text, r.outcome) == ("5.1.1", "<a@x> User unknown", "bounced")
    assert Reply.parse(421, b"bye").enhanced == "4.0.0"
    assert Reply.parse(250, "ok").outcome == "done"
    assert Reply.parse(451, "x").outcome == "deferred"


def test_dot_stuffing_and_line_ends():
    lines = [b"a\r\n", b".b\n", b"..c\r\n", b"last"]
    assert b"".join(_dot_stuffed(lines)) == b"a\r\n..b\r\n...c\r\nlast\r\n.\r\n"


@pytest.mark.parametrize("notify, action, wanted", [
    (None, "failed", True), (None, "delayed", True), (None, "delivered", False),
    (["NEVER"], "failed", False), (["SUCCESS"], "delivered", True),
    (["SUCCESS"], "failed", False), ("DELAY,FAILURE", "delayed", True),
])
def test_notify(notify, action, wanted):
    rcpt = {"address": "a@x", "params": {"NOTIFY": notify} if notify else {}}
    assert dsn.wanted(rcpt, action) is wanted


def test_dsn_is_a_multipart_report_the_email_package_reads(tmp_path):
    original = tmp_path / "m.msg"
    original.write_bytes(b"Subject: hi\r\nMessage-ID: <m@x>\r\n\r\nthe body\r\n")
    entry = dsn.Entry(ENVELOPE["recipients"][1], "failed", "5.1.1",
                      "550 5.1.1 no such user", "relay[192.0.2.1]:25")
    data = dsn.compose(ENVELOPE, original, [entry], "mx.test.example")
    report = email.message_from_bytes(data, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report["To"] == "s@example.org" and report["Auto-Submitted"] == "auto-replied"
    text, status, returned = report.get_payload()
    per_message, per_rcpt = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mx.test.example"
    assert per_message["Original-Envelope-Id"] == "e1"
    assert per_message["Arrival-Date"]
    assert per_rcpt["Original-Recipient"] == "rfc822; B@x.example"
    assert per_rcpt["Final-Recipient"] == "rfc822; b@x.example"
    assert per_rcpt["Remote-MTA"] == "dns; relay[192.0.2.1]:25"
    assert returned.get_content_type() == "message/rfc822"  # no RET: the whole message
    assert returned.get_payload()[0]["Subject"] == "hi"
    env = dsn.envelope_for(ENVELOPE, "Q2")
    assert env["mail_from"]["address"] == "" and env["dsn_of"] == "Q1"
    assert [r["address"] for r in env["recipients"]] == ["s@example.org"]


def test_config_errors_name_the_key(tmp_path):
    (tmp_path / "10.toml").write_text(
        '[delivery]\ndefault = "nope"\ndomains = {"x.example" = "lmtp"}\n'
        '[delivery.next_hops.lmtp]\nprotocol = "lmtp"\n'
        '[delivery.next_hops.local]\nprotocol = "maildir"\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    f = tmp_path / "10.toml"
    assert info.value.errors == [
        f"{f}: delivery.default: expected the name of a [delivery.next_hops] table "
        "(lmtp, local) (got 'nope')",
        f"{f}: delivery.next_hops.lmtp.address: expected inet:host:port or unix:/path "
        "for protocol lmtp",
        f"{f}: delivery.next_hops.local.directory: expected a directory for protocol maildir",
    ]


def test_before_queue_names_an_lmtp_or_smtp_next_hop(tmp_path):
    (tmp_path / "10.toml").write_text(
        '[delivery]\nbefore_queue = {"mta" = "local", "sub" = "gone"}\n'
        '[delivery.next_hops.local]\nprotocol = "maildir"\ndirectory = "/var/mail"\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    f = tmp_path / "10.toml"
    expected = "expected the name of an lmtp or smtp next hop (none configured)"
    assert info.value.errors == [f"{f}: delivery.before_queue.mta: {expected} (got 'local')",
                                 f"{f}: delivery.before_queue.sub: {expected} (got 'gone')"]
