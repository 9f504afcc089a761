"""The Postfix policy delegation codec with plain bytes, and the access(5) action
grammar mapped to verdicts (appliance/clients/policy/codec.py, plugins/policy.py)."""

from __future__ import annotations

import socket

import pytest
from appliance_plugins.policy import to_verdict

from appliance import Action, Verdict
from appliance.clients.endpoints import parse_socket
from appliance.clients.policy.codec import (
    MAX_REPLY,
    PolicyAction,
    PolicyProtocolError,
    ReplyReader,
    encode_request,
    parse_action,
)

# --- requests ---------------------------------------------------------------------


def test_request_is_name_value_lines_and_an_empty_line():
    data = encode_request({"request": "smtpd_access_policy", "protocol_state": "RCPT",
                           "sender": "", "recipient_count": 0})
    assert data == (b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=\n"
                    b"recipient_count=0\n\n")


def test_a_newline_in_a_value_cannot_start_another_attribute():
    data = encode_request({"helo_name": "evil\nrecipient=x@y\r\n"})
    assert data == b"helo_name=evil recipient=x@y  \n\n"
    assert data.count(b"\n") == 2


# --- replies ----------------------------------------------------------------------


def test_reply_in_pieces():
    reader = ReplyReader()
    assert reader.feed(b"action=DEFER_IF_PERMIT Greylisted, see http") is None
    assert reader.feed(b"://postgrey.schweikert.ch/help/d.example.html\n") is None
    assert reader.feed(b"\n") == {
        "action": "DEFER_IF_PERMIT Greylisted, see http://postgrey.schweikert.ch/help/"
                  "d.example.html"}


def test_reply_with_crlf_and_extra_attributes():
    assert ReplyReader().feed(b"action=OK\r\nlog=x=y\r\n\r\n") == {"action": "OK",
                                                                   "log": "x=y"}


@pytest.mark.parametrize("data, error", [
    (b"\n", "empty reply"),
    (b"DUNNO\n\n", "not a name=value line"),
    (b"result=DUNNO\n\n", "without an action"),
    (b"action=OK\n\naction=OK\n\n", "after the end"),
])
def test_bad_replies(data, error):
    with pytest.raises(PolicyProtocolError, match=error):
        ReplyReader().feed(data)


def test_endless_reply_is_refused_at_the_limit():
    reader = ReplyReader()
    assert reader.feed(b"action=" + b"x" * (MAX_REPLY - 7)) is None  # exactly the limit
    with pytest.raises(PolicyProtocolError, match="longer than"):
        reader.feed(b"x")


# --- addresses --------------------------------------------------------------------


@pytest.mark.parametrize("spec, expected", [
    ("inet:127.0.0.1:10023", (socket.AF_INET, ("127.0.0.1", 10023))),
    ("inet:localhost:10023", (socket.AF_INET, ("localhost", 10023))),
    ("inet:[::1]:10023", (socket.AF_INET6, ("::1", 10023))),
    ("inet6:[::1]:10023", (socket.AF_INET6, ("::1", 10023))),
    ("unix:/run/postgrey.sock", (socket.AF_UNIX, "/run/postgrey.sock")),
])
def test_addresses(spec, expected):
    assert parse_socket(spec) == expected


@pytest.mark.parametrize("spec", ["127.0.0.1:10023", "inet:127.0.0.1", "inet:host:0",
                                  "inet:host:65536", "unix:relative", "tcp:h:1"])
def test_bad_addresses(spec):
    with pytest.raises(ValueError):
        parse_socket(spec)


# --- the action grammar -----------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("OK", PolicyAction("OK")),
    ("ok", PolicyAction("OK")),
    ("DUNNO", PolicyAction("DUNNO")),
    ("REJECT", PolicyAction("REJECT")),
    ("REJECT  Not wanted here ", PolicyAction("REJECT", "Not wanted here")),
    ("defer_if_permit Greylisted", PolicyAction("DEFER_IF_PERMIT", "Greylisted")),
    ("PREPEND X-Greylist: delayed 1 seconds",
     PolicyAction("PREPEND", "X-Greylist: delayed 1 seconds")),
    ("450 4.7.1 Slow down", PolicyAction("CODE", "Slow down", 450, "4.7.1")),
    ("554 No thanks", PolicyAction("CODE", "No thanks", 554, None)),
    ("550", PolicyAction("CODE", "", 550, None)),
    ("550 4.7.1 Wrong class", PolicyAction("CODE", "Wrong class", 550, None)),
    ("250 Ok", PolicyAction("UNKNOWN", "250 Ok")),
    ("4500 x", PolicyAction("UNKNOWN", "4500 x")),
    ("FROBNICATE now", PolicyAction("UNKNOWN", "FROBNICATE now")),
    ("PREPEND", PolicyAction("UNKNOWN", "PREPEND")),
    ("", PolicyAction("UNKNOWN", "")),
])
def test_parse_action(value, expected):
    assert parse_action(value) == expected


@pytest.mark.parametrize("value, stage, verdict, effect", [
    ("OK", "rcpt", Verdict.accept(), ""),
    ("DUNNO", "rcpt", None, ""),
    ("REJECT", "rcpt", Verdict.reject("Access denied", 554, "5.7.1"), ""),
    ("REJECT 5.7.9 Policy says no", "mail", Verdict.reject("Policy says no", 554, "5.7.9"), ""),
    ("REJECT 4.7.9 wrong class", "mail", Verdict.reject("wrong class", 554, "5.7.1"), ""),
    ("DEFER", "rcpt", Verdict.tmpreject("Try again later", 450, "4.7.1"), ""),
    ("DEFER_IF_PERMIT Greylisted", "rcpt", Verdict.tmpreject("Greylisted", 450, "4.7.1"), ""),
    ("DEFER_IF_REJECT maybe", "rcpt", None, "warn"),
    ("450 4.2.0 Greylisted", "rcpt", Verdict.tmpreject("Greylisted", 450, "4.2.0"), ""),
    ("452 Slow down", "rcpt", Verdict.tmpreject("Slow down", 452, "4.7.1"), ""),
    ("550 5.1.1 No such user", "rcpt", Verdict.reject("No such user", 550, "5.1.1"), ""),
    ("554", "connect", Verdict.reject("Access denied", 554, "5.7.1"), ""),
    ("421 4.7.0 Go away", "ehlo", Verdict(Action.ABORT, 421, "4.7.0", "Go away"), ""),
    ("521 Go away", "connect", Verdict(Action.ABORT, 521, "5.7.1", "Go away"), ""),
    ("PREPEND X-Policy: checked", "rcpt", None, "prepend"),
    ("PREPEND not a header", "rcpt", None, "unknown"),
    ("HOLD suspicious", "rcpt", None, "hold"),
    ("DISCARD", "rcpt", None, "discard"),
    ("DISCARD spam", "end_of_data", Verdict.discard("spam"), ""),
    ("REDIRECT abuse@example.org", "rcpt", None, "redirect"),
    ("BCC archive@example.org", "mail", None, "bcc"),
    ("WARN look at this", "rcpt", None, "warn"),
    ("INFO fyi", "rcpt", None, "warn"),
    ("FILTER smtp:[127.0.0.1]:10025", "rcpt", None, "ignored"),
    ("FROBNICATE", "rcpt", None, "unknown"),
])
def test_actions_to_verdicts(value, stage, verdict, effect):
    assert to_verdict(parse_action(value), stage) == (verdict, effect)
