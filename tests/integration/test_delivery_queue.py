"""The queue command with a running delivery service: quarantine held until
``queue release``, delay_until honoured, deferred recipients listed with reason,
attempts and next try, and tried again at once by ``queue retry`` and ``flush``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from tests.lmtp_fixture import DOMAIN

from .delivery_helpers import commit, lmtp_config, message, wait_until

SLOW_RETRY = 'minimal_backoff = "1h"\nmaximal_backoff = "2h"\n'


def test_quarantine_is_held_until_released(make_appliance, lmtp):
    app = make_appliance(lmtp_config(lmtp))
    held = commit(app.spool, "a@example.org", [f"alice@{DOMAIN}"], message("held"),
                  quarantine="milter: looks like spam")
    commit(app.spool, "a@example.org", [f"bob@{DOMAIN}"], message("free"))
    wait_until(lambda: len(lmtp.messages("bob")) == 1, log=app.log)
    time.sleep(0.5)  # several scans: the held message stays
    assert [p.stem for p in app.queued()] == [held] and lmtp.messages("alice") == []
    listing = app.cli("queue", "list").stdout
    assert "[quarantine: milter: looks like spam]" in listing
    r = app.cli("queue", "release", held)
    assert r.returncode == 0, r.stderr
    assert "released" in r.stderr and held in r.stderr  # the log line, on stderr here
    wait_until(lambda: len(lmtp.messages("alice")) == 1 and not app.queued(), log=app.log)
    assert app.cli("queue", "release", held).returncode == 1  # gone


def test_release_refuses_a_message_not_in_quarantine(make_appliance, lmtp):
    app = make_appliance(lmtp_config(lmtp, 'enabled = false\n'))
    qid = commit(app.spool, "a@example.org", [f"bob@{DOMAIN}"], message(1))
    r = app.cli("queue", "release", qid)
    assert r.returncode == 1 and "not in quarantine" in r.stderr


def test_delay_until_is_honoured(make_appliance, lmtp):
    app = make_appliance(lmtp_config(lmtp))
    until = datetime.fromtimestamp(time.time() + 2, UTC)
    commit(app.spool, "a@example.org", [f"alice@{DOMAIN}"], message(1),
           delay_until=until.isoformat())
    wait_until(lambda: lmtp.messages("alice"), log=app.log)
    (path,) = (lmtp.maildir("alice") / "new").iterdir()
    assert path.stat().st_mtime >= until.timestamp()


def test_deferred_state_listed_then_retry_and_flush(make_appliance, lmtp):
    lmtp.stop()
    app = make_appliance(lmtp_config(lmtp, SLOW_RETRY))
    first = commit(app.spool, "a@example.org", [f"alice@{DOMAIN}"], message(1))
    second = commit(app.spool, "a@example.org", [f"bob@{DOMAIN}"], message(2))
    wait_until(lambda: app.log().count("deferred") >= 2, log=app.log)
    listing = json.loads(app.cli("queue", "list", "--json").stdout)
    states = {m["queue_id"]: m["states"][0] for m in listing}
    assert states[first]["state"] == "deferred" and states[first]["attempts"] == 1
    assert "connect to dovecot" in states[first]["reason"]
    assert states[first]["next_try"] > time.time() + 3000  # minimal_backoff 1h
    shown = app.cli("queue", "show", first).stdout
    assert "state:    deferred via dovecot (attempts 1, next try " in shown
    lmtp.start()
    assert app.cli("queue", "retry", first).returncode == 0
    wait_until(lambda: len(lmtp.messages("alice")) == 1, log=app.log)
    assert [p.stem for p in app.queued()] == [second]  # only the one retried
    assert app.cli("queue", "flush").returncode == 0
    wait_until(lambda: len(lmtp.messages("bob")) == 1 and not app.queued(), log=app.log)
