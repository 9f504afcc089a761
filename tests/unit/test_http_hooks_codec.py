"""The HTTP hooks' JSON: requests built from real contexts, responses checked
completely before anything is applied (plugins/http_hooks/codec.py)."""

from __future__ import annotations

import json

import pytest
from appliance_plugins.http_hooks import _refusal
from appliance_plugins.http_hooks.codec import (
    BadResponse,
    Modification,
    Reply,
    build_request,
    encode_request,
    parse_response,
)

from appliance import Action, Verdict
from appliance.mail.context import Recipient, SessionContext, TLSInfo, Transaction
from appliance.mail.headers import Headers
from appliance.mail.message import Body, Message


def session(**kw) -> SessionContext:
    return SessionContext(session_id="S1", listener="mta", local_ip="192.0.2.1", local_port=25,
                          remote_ip="198.51.100.7", remote_port=40000,
                          hostname="mx.example.org", **kw)


def test_connect_request_has_only_the_context():
    req = build_request("connect", session())
    assert req == {"context": {
        "stage": "connect",
        "client": {"ip": "198.51.100.7", "port": 40000, "ptr": "", "helo": ""},
        "sasl": None, "tls": None,
        "server": {"name": "mx.example.org", "port": 25, "ip": "192.0.2.1"},
        "queue": None, "protocol": {"version": 1}}}


def test_rcpt_request_lists_the_recipients_with_the_current_one_last():
    s = session(tls=TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256), auth_user="alice",
                auth_mechanism="PLAIN")
    tx = Transaction(queue_id="Q1", mail_from="a@example.org", mail_params={"SIZE": 10})
    tx.recipients.append(Recipient("b@example.net", {"NOTIFY": ("SUCCESS", "FAILURE")}))
    req = build_request("rcpt", s, tx, recipient=Recipient("c@example.net"))
    assert req["context"]["sasl"] == {"login": "alice", "method": "PLAIN"}
    assert req["context"]["tls"]["version"] == "TLSv1.3"
    assert req["context"]["queue"] == {"id": "Q1"}
    assert req["envelope"] == {
        "from": {"address": "a@example.org", "parameters": {"SIZE": 10}},
        "to": [{"address": "b@example.net", "parameters": {"NOTIFY": ["SUCCESS", "FAILURE"]}},
               {"address": "c@example.net", "parameters": {}}]}
    assert "message" not in req
    json.loads(encode_request(req))


def test_data_request_carries_headers_and_body(tmp_path):
    headers, _ = Headers.parse(b"Subject: caf\xc3\xa9\r\nX-A:  two spaces\r\nX-L: \xe9t\xe9\r\n")
    body = Body(str(tmp_path))
    body.write(b"line\r\n\xff\r\n")
    req = build_request("data", session(), Transaction(queue_id="Q", mail_from=""),
                        message=Message(headers, body))
    assert req["message"]["headers"] == [["Subject", "café"], ["X-A", " two spaces"],
                                         ["X-L", "\ufffdt\ufffd"]]  # Latin-1: replaced
    json.loads(encode_request(req))
    assert req["message"]["contents"] == "line\r\n\ufffd\r\n"  # not UTF-8: replaced
    assert req["message"]["size"] == len(headers.to_bytes()) + 2 + 9


def test_full_response():
    resp = parse_response(json.dumps({
        "action": "reject",
        "response": {"status": 550, "enhancedStatus": "5.7.1", "message": "No",
                     "disconnect": True},
        "modifications": [
            {"type": "addRcpt", "value": "x@example.org", "parameters": {"NOTIFY": "NEVER"}},
            {"type": "deleteRecipient", "value": "y@example.org"},
            {"type": "changeHeader", "index": 2, "name": "Subject", "value": "a\n b"},
        ]}).encode())
    assert resp.action == "reject"
    assert resp.reply == Reply(550, "5.7.1", "No", True)
    assert resp.modifications == (
        Modification("addRecipient", "x@example.org", parameters={"NOTIFY": "NEVER"}),
        Modification("deleteRecipient", "y@example.org"),
        Modification("changeHeader", "a\r\n b", "Subject", 2),
    )


def test_minimal_response():
    resp = parse_response(b'{"action": "accept"}')
    assert (resp.action, resp.reply, resp.modifications) == ("accept", Reply(), ())


@pytest.mark.parametrize("doc, error", [
    (b"<html>", "not JSON"),
    (b"[]", "not a JSON object"),
    (b'{"action": "allow"}', "action must be one of"),
    (b'{}', "action must be one of"),
    (b'{"action": "reject", "response": {"status": "550"}}', "status"),
    (b'{"action": "reject", "response": {"status": 600}}', "status"),
    (b'{"action": "reject", "response": {"status": 199}}', "status"),
    (b'{"action": "reject", "response": {"enhancedStatus": "5.7"}}', "enhancedStatus"),
    (b'{"action": "reject", "response": {"message": "a\\r\\n250 ok"}}', "one line"),
    (b'{"action": "reject", "response": {"disconnect": "yes"}}', "disconnect"),
    (b'{"action": "accept", "modifications": {}}', "must be a list"),
    (b'{"action": "accept", "modifications": [{"type": "addBcc"}]}', "unknown modification"),
    (b'{"action": "accept", "modifications": [{"type": "addHeader", "name": "X"}]}',
     "needs 'value'"),
    (b'{"action": "accept", "modifications": [{"type": "addHeader", "name": "X:Y",'
     b' "value": "v"}]}', "not a header field name"),
    (b'{"action": "accept", "modifications": [{"type": "addHeader", "name": "X",'
     b' "value": "v\\nBcc: evil@example.org"}]}', "not folding"),
    (b'{"action": "accept", "modifications": [{"type": "deleteHeader", "name": "X",'
     b' "index": 0}]}', "at least 1"),
    (b'{"action": "accept", "modifications": [{"type": "insertHeader", "name": "X",'
     b' "index": -1, "value": "v"}]}', "at least 0"),
    (b'{"action": "accept", "modifications": [{"type": "changeFrom", "value": 7}]}',
     "strings"),
])
def test_bad_responses(doc, error):
    with pytest.raises(BadResponse, match=error):
        parse_response(doc)


@pytest.mark.parametrize("reply, verdict", [
    (Reply(), Verdict.reject("Rejected by content filter", 550, "5.7.1")),
    (Reply(554, "5.7.9", "Spam"), Verdict.reject("Spam", 554, "5.7.9")),
    (Reply(451, None, "Later"), Verdict.tmpreject("Later", 451, "4.7.1")),
    (Reply(451, "5.7.1", "Later"), Verdict.tmpreject("Later", 451, "4.7.1")),
    (Reply(250, None, "Fine?"), Verdict.reject("Fine?", 550, "5.7.1")),
    (Reply(550, None, "Bye", True), Verdict(Action.ABORT, 550, "5.7.1", "Bye")),
    (Reply(421, "4.7.0", "Bye"), Verdict(Action.ABORT, 421, "4.7.0", "Bye")),
])
def test_reject_replies(reply, verdict):
    assert _refusal(reply) == verdict
