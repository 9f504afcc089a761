"""Maildir delivery and the quota plugins' decisions, on a real filesystem."""

from pathlib import Path

from appliance_plugins.maildir_quota import MaildirQuotaAction

from appliance.config.delivery import Delivery, NextHop
from appliance.delivery.maildir import deliver, is_overquota, maildir_of
from appliance.mail.context import Recipient


def hop(tmp_path: Path, quota: int = 0) -> NextHop:
    return NextHop(protocol="maildir", directory=str(tmp_path / "mail"), quota=quota)


def test_folder_is_a_maildir_plus_plus_folder(tmp_path):
    source = tmp_path / "m.msg"
    source.write_bytes(b"Subject: s\r\n\r\nbody\r\n")
    h = hop(tmp_path)
    assert deliver(h, "a@x.example", "Lists/pg", source).code == 250
    folder = tmp_path / "mail" / "x.example" / "a" / "Maildir" / ".Lists.pg"
    (path,) = (folder / "new").iterdir()
    assert path.read_bytes() == b"Subject: s\n\nbody\n"
    assert maildir_of(h, "a@x.example", "INBOX") == folder.parent


def test_names_cannot_leave_the_directory(tmp_path):
    h = hop(tmp_path)
    path = maildir_of(h, "../../etc@..", "../x")
    assert (tmp_path / "mail") in path.parents and ".." not in path.parts


def test_overquota_only_for_a_maildir_next_hop_with_a_quota(tmp_path):
    config = Delivery(default="local", next_hops={"local": hop(tmp_path, quota=10)})
    assert not is_overquota(config, "a@x.example")
    cur = tmp_path / "mail" / "x.example" / "a" / "Maildir" / "cur"
    cur.mkdir(parents=True)
    (cur / "m").write_bytes(b"x" * 9)
    assert not is_overquota(config, "a@x.example")
    (cur / "m").write_bytes(b"x" * 10)
    assert is_overquota(config, "a@x.example")
    no_quota = Delivery(default="local", next_hops={"local": hop(tmp_path)})
    assert not is_overquota(no_quota, "a@x.example")


def test_the_action_plugin_rejects_unless_accept():
    plugin = MaildirQuotaAction(MaildirQuotaAction.Config())
    assert plugin.on_rcpt_to(Recipient("a@x.example")) is None
    full = Recipient("a@x.example", overquota=True)
    verdict = plugin.on_rcpt_to(full)
    assert (verdict.code, verdict.enhanced) == (552, "5.2.2")
    full.overquota_action = "accept"
    assert plugin.on_rcpt_to(full) is None
