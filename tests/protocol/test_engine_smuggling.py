"""SMTP smuggling: only <CRLF>.<CRLF> ends DATA (RFC 5321 4.1.1.4; the 2023 advisories,
hannob/smtpsmug, aiosmtpd tests/test_smtpsmuggling.py)."""

from __future__ import annotations

import pytest
from engine_helpers import content, data_ends, in_transaction, without_chunks

from appliance.protocol import Data, DataEnd, Mail, Quit, Rcpt, Reply

BARE = Reply(550, "5.6.0", "Message contains bare CR or LF characters")

#: Fake end-of-data sequences. Each must be message content, never an end.
PAYLOADS = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "LF.CR": b"\n.\r",
    "CR.LF": b"\r.\n",
    "CRLF.CRCRLF": b"\r\n.\r\r\n",
    "CRCRLF.CRLF-ish": b"\r\r\n.\r\r\n",
    "CRLF.LFCRLF": b"\r\n.\n\r\n",
}

SMUGGLED = (b"MAIL FROM:<attacker@evil.test>\r\nRCPT TO:<victim@example.com>\r\n"
            b"DATA\r\nFrom: ceo@example.com\r\n\r\nPay the invoice.\r\n")


def _session(payload: bytes, policy: str, pieces: int = 1):
    d = in_transaction(bare_linefeed=policy)
    assert d.feed(b"DATA\r\n") == [Data()]
    wire = b"From: a@example.com\r\n\r\nHello" + payload + SMUGGLED + b".\r\nQUIT\r\n"
    if pieces == 1:
        return d.feed(wire)
    step = max(1, len(wire) // pieces)
    return d.feed(*[wire[i:i + step] for i in range(0, len(wire), step)])


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_payload_does_not_end_data_reject(payload):
    events = _session(payload, "reject")
    assert without_chunks(events) == [DataEnd(error=BARE), Quit()]
    assert not any(isinstance(e, Mail | Rcpt | Data) for e in events)


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_payload_does_not_end_data_normalize(payload):
    events = _session(payload, "normalize")
    assert without_chunks(events) == [DataEnd(), Quit()]
    text = content(events)
    assert b"MAIL FROM:<attacker@evil.test>\r\n" in text  # content, not a command
    assert text.endswith(b"Pay the invoice.\r\n")
    assert b"\n" not in text.replace(b"\r\n", b"")  # every line end is CRLF now
    assert b"\r" not in text.replace(b"\r\n", b"")


@pytest.mark.parametrize("policy", ["reject", "normalize"])
@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_payload_split_across_reads(payload, policy):
    whole = _session(payload, policy)
    for pieces in (2, 3, 7, 50):
        events = _session(payload, policy, pieces)
        assert data_ends(events) == data_ends(whole)
        assert events[-1] == Quit()
        if policy == "normalize":
            assert content(events) == content(whole)


@pytest.mark.parametrize("payload", [b"\r\n\x00.\r\n", b"\r\n.\x00\r\n", b"\r\n .\r\n"])
def test_near_terminators_without_bare_line_ends_are_content(payload):
    events = _session(payload, "reject")
    assert without_chunks(events) == [DataEnd(), Quit()]
    assert SMUGGLED in content(events)


def test_the_real_terminator_still_works_right_after_a_payload():
    d = in_transaction()
    d.feed(b"DATA\r\n")
    events = d.feed(b"x\n.\n", b"\r\n.\r\nQUIT\r\n")
    assert without_chunks(events) == [DataEnd(error=BARE), Quit()]
