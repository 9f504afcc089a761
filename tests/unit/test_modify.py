"""The message-modification operations that content filters (milters, policy
servers, HTTP hooks) apply: envelope sender, recipients, positional header edits,
body replacement, quarantine; and that the spool stores their result."""

from __future__ import annotations

import io
import json

import pytest
from attrs.exceptions import FrozenAttributeError

from appliance import cli
from appliance.mail.context import Recipient, SessionContext, Transaction, core_set
from appliance.mail.headers import Headers
from appliance.mail.message import SPILL_THRESHOLD, Body, Message
from appliance.spool import Spool, envelope


def tx() -> Transaction:
    t = Transaction(queue_id="Q1", mail_from="a@example.org",
                    mail_params={"SIZE": 10, "BODY": "8BITMIME"})
    t.recipients.append(Recipient("b@example.net", {"NOTIFY": ("SUCCESS",)}))
    return t


def session() -> SessionContext:
    return SessionContext(session_id="S1", listener="mta", local_ip="127.0.0.1",
                          local_port=25, remote_ip="192.0.2.1", remote_port=4000)


def message(tmp_path, body: bytes = b"hello\r\n") -> Message:
    b = Body(str(tmp_path))
    b.write(body)
    h, _ = Headers.parse(b"From: a@example.org\r\nSubject: hi\r\n")
    return Message(h, b)


# --- envelope ----------------------------------------------------------------------

def test_change_sender_keeps_or_replaces_params():
    t = tx()
    t.change_sender("new@example.com")
    assert t.mail_from == "new@example.com"
    assert t.mail_params == {"SIZE": 10, "BODY": "8BITMIME"}
    t.change_sender("other@example.com", "body=7bit XVERP")
    assert (t.mail_from, t.mail_params) == ("other@example.com", {"BODY": "7bit", "XVERP": True})
    t.change_sender("", {"RET": "HDRS"})  # the null sender
    assert (t.mail_from, t.mail_params) == ("", {"RET": "HDRS"})
    with pytest.raises(FrozenAttributeError):  # still read-only as a field
        t.mail_from = "x@y"


def test_add_recipient_during_rcpt_waits_for_the_current_one():
    t = tx()
    core_set(t, "current_rcpt", Recipient("c@example.net"))
    r = t.add_recipient("extra@example.net")
    assert t._extra_rcpts == [r] and len(t.recipients) == 1


def test_add_recipient_at_end_of_data_joins_at_once_with_params():
    t = tx()
    plain = t.add_recipient("x@example.net")
    with_args = t.add_recipient("y@example.net", params="NOTIFY=NEVER ORCPT=rfc822;y@example.net")
    assert t.recipients[-2:] == [plain, with_args]
    assert plain.params == {}
    assert with_args.params == {"NOTIFY": "NEVER", "ORCPT": "rfc822;y@example.net"}
    assert t.rcpt_count == 3 and not t._extra_rcpts


def test_remove_recipient_exact_then_any_case():
    t = tx()
    t.add_recipient("Y@Example.NET")
    assert t.remove_recipient("y@example.net")
    assert [r.address for r in t.recipients] == ["b@example.net"]
    assert not t.remove_recipient("nobody@example.net")


def test_quarantine_is_read_only_field_set_by_method():
    t = tx()
    assert t.quarantine_reason is None
    t.quarantine("virus found")
    assert t.quarantine_reason == "virus found"
    with pytest.raises(FrozenAttributeError):
        t.quarantine_reason = None


# --- headers -------------------------------------------------------------------------

def headers() -> Headers:
    h, _ = Headers.parse(b"Received: one\r\nX-A: 1\r\nSubject: s\r\nX-A: 2\r\nX-A: 3\r\n")
    return h


def test_insert_at_index():
    h = headers()
    h.insert(0, "X-Top", "t")
    h.insert(2, "X-Mid", "m")
    h.insert(99, "X-End", "e")
    assert [n for n, _ in h] == ["X-Top", "Received", "X-Mid", "X-A", "Subject", "X-A",
                                 "X-A", "X-End"]
    with pytest.raises(ValueError):
        h.insert(0, "X-Bad", "a\r\nInjected: yes")


def test_modify_and_remove_the_nth_occurrence():
    h = headers()
    assert h.modify_nth("x-a", 2, "two")
    assert h.get_all("X-A") == ["1", "two", "3"]
    assert not h.modify_nth("X-A", 4, "four") and not h.modify_nth("X-A", 0, "zero")
    assert h.remove_nth("X-A", 1)
    assert h.get_all("X-A") == ["two", "3"]
    assert not h.remove_nth("X-A", 3)
    assert h.to_bytes() == b"Received: one\r\nSubject: s\r\nX-A: two\r\nX-A: 3\r\n"


# --- body ------------------------------------------------------------------------------

def test_replace_body_from_bytes_file_and_path(tmp_path):
    m = message(tmp_path)
    m.replace_body(b"new body\r\n")
    assert m.open_body().read() == b"new body\r\n"
    assert m.size == len(m.headers.to_bytes()) + 2 + 10
    m.replace_body(io.BytesIO(b"from a file\r\n"))
    assert m.as_bytes().endswith(b"\r\n\r\nfrom a file\r\n")
    p = tmp_path / "body.txt"
    p.write_bytes(b"from a path\r\n")
    m.replace_body(p)
    assert m.open_body().read() == b"from a path\r\n"


def test_replace_body_large_spills_and_the_reader_still_owns_it(tmp_path):
    m = message(tmp_path)
    original = m.body
    big = b"x" * (SPILL_THRESHOLD + 100) + b"\r\n"
    m.replace_body(big)
    assert m.body is original  # the reader closes the same object at the end
    assert m.body._file is not None and m.body.size == len(big)
    assert m.open_body().read() == big
    m.body.close()


def test_spool_stores_modified_message_and_quarantine(tmp_path, capsys):
    spool = Spool(tmp_path / "spool", fsync=False)
    spool.prepare()
    m = message(spool.tmp, b"old body\r\n")
    t = tx()
    m.headers.insert(0, "X-Milter", "yes")
    m.replace_body(b"replaced\r\n")
    t.change_sender("bounce@example.com")
    t.add_recipient("added@example.net", params="NOTIFY=NEVER")
    t.quarantine("suspicious attachment")
    spool.commit(t.queue_id, m, envelope(session(), t))
    stored = spool.get("Q1")
    assert stored.message_path.read_bytes() == (
        b"X-Milter: yes\r\nFrom: a@example.org\r\nSubject: hi\r\n\r\nreplaced\r\n")
    env = stored.envelope
    assert env["mail_from"]["address"] == "bounce@example.com"
    assert env["recipients"][-1] == {"address": "added@example.net",
                                     "params": {"NOTIFY": "NEVER"},
                                     "folder": "INBOX", "relay_host": ""}
    assert env["quarantine"] == "suspicious attachment"

    assert cli.main(["queue", "--spool", str(spool.directory), "list"]) == 0
    assert "[quarantine: suspicious attachment]" in capsys.readouterr().out
    assert cli.main(["queue", "--spool", str(spool.directory), "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["quarantine"] == "suspicious attachment"
    assert cli.main(["queue", "--spool", str(spool.directory), "show", "Q1"]) == 0
    assert "quarantine:  suspicious attachment" in capsys.readouterr().out


def test_message_not_quarantined_has_null():
    assert envelope(session(), tx())["quarantine"] is None


def test_milter_changes_the_core_refuses_are_skipped(tmp_path, caplog):
    """A milter's bad change is logged and skipped; the good ones still apply."""
    from appliance.clients.milter.apply import apply_modifications
    from appliance.clients.milter.codec import Modification

    m, t = message(tmp_path), tx()
    done = apply_modifications([
        Modification("add_header", name="Bad Name", value="x"),
        Modification("add_header", name="X-Ok", value="folded\n\tvalue"),
        Modification("add_header", name="X-Smuggle", value="a\r\nBcc: x@y"),
        Modification("add_recipient", value=""),
        Modification("add_recipient", value="a b@example.net"),
        Modification("change_sender", value=""),  # the null sender is fine
        Modification("change_header", name="Subject", value="", index=5),  # no 5th
    ], t, m, str(tmp_path))
    assert done == ["add_header X-Ok", "change_sender"]
    assert m.headers.get_all("X-Ok") == ["folded\tvalue"]
    assert m.headers.to_bytes().endswith(b"X-Ok: folded\r\n\tvalue\r\n")
    assert [r.address for r in t.recipients] == ["b@example.net"]
    assert t.mail_from == ""
    assert caplog.text.count("refused") == 4
