"""The header section and Axigen's header methods, on plain bytes."""

import pytest

from appliance.mail.headers import Headers

RAW = (b"Received: from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
       b"Subject: caf\xc3\xa9\r\nX-Two: one\r\nx-two: two\r\n")


def test_parse_roundtrip_exact_bytes_and_body_rest():
    h, rest = Headers.parse(RAW + b"not a header line\r\nbody\r\n")
    assert h.to_bytes() == RAW
    assert rest == b"not a header line\r\nbody\r\n"
    assert h.read("received") == "from a\tby b; Mon, 1 Jan 2024 00:00:00 +0000"
    assert h.read("X-TWO") == "one\r\ntwo"
    assert h.count("x-two") == 2 and h.exists("subject") and not h.exists("From")


def test_8bit_header_survives():
    h, _ = Headers.parse(b"Subject: \xff\xfe raw\r\n")
    assert h.to_bytes() == b"Subject: \xff\xfe raw\r\n"


def test_edit_methods():
    h, _ = Headers.parse(RAW)
    h.add("X-New", "v")
    h.add("Received", "from top", prepend=True)
    assert list(h)[0] == ("Received", " from top") and list(h)[-1] == ("X-New", " v")
    assert h.add_if_absent("X-New", "w") is False and h.add_if_absent("X-Else", "w")
    assert h.remove_value("x-two", "two") and h.get_all("X-Two") == ["one"]
    assert h.remove_first("Received") and h.count("Received") == 1
    assert h.remove("received") == 1 and not h.exists("Received")
    h.modify("Subject", "new")
    h.modify("X-Missing", "added")
    assert h.read("Subject") == "new" and h.read("X-Missing") == "added"
    assert h.modify_if_exists("Nope", "x") is False and not h.exists("Nope")


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\r\n"])
def test_values_cannot_smuggle_fields(value):
    h = Headers()
    with pytest.raises(ValueError):
        h.add("X-Test", value)
    with pytest.raises(ValueError):
        h.add("Bad Name", "v")
    h.add("X-Folded", "a\r\n b")  # real folding is fine
    assert h.read("X-Folded") == "a b"
