"""The recipients and local domains file formats of the relay plugin, with bytes
in memory: every accepted form and every error naming the line."""

from __future__ import annotations

import pytest
from appliance_plugins.relay.recipients import (
    RecipientsFileError,
    is_address,
    parse_recipients,
    read_domains,
)

from appliance.mail.context import RecipientInfo


def test_entries_aliases_and_catch_all():
    table = parse_recipients([
        "  # comment", "", "Alice@Example.org", "bob@example.org folder=Work/Inbox # c",
        "list@example.org: alice@example.org,bob@example.org  sub@example.org",
        "sub@example.org: bob@example.org", "@example.net: alice@example.org",
    ], "r")
    assert table.lookup("alice@EXAMPLE.org") == RecipientInfo("Alice@Example.org")
    assert table.lookup("bob@example.org") == RecipientInfo("bob@example.org", "Work/Inbox")
    assert table.lookup("list@example.org").members == (
        "alice@example.org", "bob@example.org", "sub@example.org")
    assert table.catch_all == {"example.net": "alice@example.org"}
    assert table.lookup("nobody@example.org") is None


@pytest.mark.parametrize(("lines", "message"), [
    (["a@example.org", "A@example.org"], 'r:2: expected each address once (already on line 1)'),
    (["@example.net: a@example.org", "a@example.org", "@EXAMPLE.net: a@example.org"],
     "r:3: expected each address once"),
    (["a@example.org extra"], 'r:1: expected folder=NAME after the address (got "extra")'),
    (["a@example.org folder="], "r:1: expected folder=NAME"),
    (["@example.net: a@example.org, b@example.org"], "r:1: expected a catch-all"),
    (["@bad domain: a@example.org"], "r:1: expected a catch-all"),
    (["a@example.org", "l@example.org: a@example.org, b@"], 'r:2: expected an address'),
    (["<a@example.org>"], 'r:1: expected an address local@domain (got "<a@example.org>")'),
    (["a@example.org", "x@example.org: y@example.org", "y@example.org: x@example.org"],
     'r:2: expected aliases without a loop'),
    (["x@example.org: x@example.org"], "r:1: expected aliases without a loop"),
    (["@example.net: nobody@example.org"], "r:1: expected members that are mailboxes"),
])
def test_errors_name_the_line(lines, message):
    with pytest.raises(RecipientsFileError) as info:
        parse_recipients(lines, "r")
    assert message in str(info.value)


def test_domains_file(tmp_path):
    path = tmp_path / "d"
    path.write_text("Example.ORG # ours\n\nexample.net\n")
    assert read_domains(str(path)) == ["example.org", "example.net"]
    path.write_text("example.org\nexa mple.net\n")
    with pytest.raises(RecipientsFileError, match=r"d:2: expected a domain name"):
        read_domains(str(path))
    with pytest.raises(RecipientsFileError, match="cannot be read"):
        read_domains(str(tmp_path / "missing"))


@pytest.mark.parametrize(("text", "ok"), [
    ("a@example.org", True), ("a.b+c@sub.example.org", True), ("jörg@exämple.org", True),
    ("a@", False), ("@example.org", False), ("a b@example.org", False),
    ("a@example..org", False), ("a@.example.org", False),
])
def test_address_syntax(text, ok):
    assert is_address(text) is ok
