"""Local delivery into Maildirs, and the per-mailbox quota at RCPT: a mailbox
one octet under its quota takes mail, one at its quota gets 552 5.2.2 and the
session goes on for other recipients."""

from __future__ import annotations

import email
import email.policy
import smtplib

from .delivery_helpers import fast, message, send, wait_until

QUOTA = 4096


def maildir_config(root) -> str:
    return fast() + f"""
default = "local"
[delivery.next_hops.local]
protocol = "maildir"
directory = "{root}"
quota = {QUOTA}
"""


def inbox(root, user: str, domain: str = "test.example"):
    return root / domain / user / "Maildir"


def test_delivered_into_new_atomically_and_removed_from_the_spool(make_appliance, tmp_path):
    root = tmp_path / "mail"
    app = make_appliance(maildir_config(root))
    send(app, "a@example.org", ["Alice@test.example", "bob@test.example"], message(1))
    wait_until(lambda: not app.queued(), log=app.log)
    for user in ("alice", "bob"):
        (path,) = (inbox(root, user) / "new").iterdir()
        assert path.name.endswith(f",S={path.stat().st_size}")
        assert list((inbox(root, user) / "tmp").iterdir()) == []
        data = path.read_bytes()
        assert b"\r\n" not in data  # Maildir files end lines with LF
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        assert parsed["Subject"] == "test 1"
    assert "relay=local[maildir]" in app.log()


def test_quota_boundary_at_rcpt(make_appliance, tmp_path):
    root = tmp_path / "mail"
    app = make_appliance(maildir_config(root))
    for user, size in (("under", QUOTA - 1), ("full", QUOTA)):
        cur = inbox(root, user) / "cur"
        cur.mkdir(parents=True)
        (cur / "old:2,S").write_bytes(b"x" * size)
    with smtplib.SMTP("127.0.0.1", app.port, timeout=30) as c:
        c.ehlo("client.example")
        c.mail("a@example.org")
        assert c.rcpt("under@test.example")[0] == 250
        code, text = c.rcpt("full@test.example")
        assert (code, text[:5]) == (552, b"5.2.2")
        assert c.rcpt("other@test.example")[0] == 250  # the session goes on
        assert c.data(message(1))[0] == 250
    wait_until(lambda: not app.queued(), log=app.log)
    assert len(list((inbox(root, "under") / "new").iterdir())) == 1
    assert not (inbox(root, "full") / "new").exists()
    assert "5.2.2" in app.log()
