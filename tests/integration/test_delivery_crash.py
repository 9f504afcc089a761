"""kill -9 of the delivery service while it delivers: nothing is lost, and a
recipient is delivered again at most once (docs/delivery.md, "Crash safety"):
only the transactions under way at the kill, at most ``parallelism`` of them, may
give a second copy."""

from __future__ import annotations

import collections
import os
import re
import signal

from tests.lmtp_fixture import DOMAIN

from .delivery_helpers import lmtp_config, message, send, wait_until

COUNT = 150
PARALLELISM = 4


def delivery_pids(app) -> list[int]:
    return [int(p) for p in re.findall(r"delivery_process pid=(\d+)", app.log())]


def test_kill_9_during_delivery_loses_nothing_and_duplicates_within_the_bound(
        make_appliance, lmtp):
    lmtp.stop()  # messages pile up, deferred, until the next hop comes back
    app = make_appliance(lmtp_config(lmtp, hop=f"parallelism = {PARALLELISM}"))
    for n in range(COUNT):
        assert send(app, "a@example.org", [f"alice@{DOMAIN}"], message(n)) == {}
    lmtp.start()
    wait_until(lambda: len(lmtp.messages("alice")) >= 20, what="deliveries started",
               log=app.log)
    first = delivery_pids(app)[-1]
    os.kill(first, signal.SIGKILL)
    assert len(lmtp.messages("alice")) < COUNT  # killed while delivering
    wait_until(lambda: delivery_pids(app)[-1] != first, what="a new delivery process",
               log=app.log)
    wait_until(lambda: not app.queued(), timeout=60, what="the spool empty", log=app.log)
    ids = collections.Counter(m["Message-ID"] for m in lmtp.messages("alice"))
    assert set(ids) == {f"<{n}.msg@example.org>" for n in range(COUNT)}  # nothing lost
    duplicates = sum(c - 1 for c in ids.values())
    assert max(ids.values()) <= 2 and duplicates <= PARALLELISM, ids.most_common(5)
