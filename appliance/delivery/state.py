"""Per-recipient delivery state, folded from a message's state file.

The state file (``queue/ID.state``, docs/spool.md) is append-only: each line is one
JSON record, written and fsynced before the delivery service does anything that
depends on it. Recipient records carry ``rcpt`` (the index in the envelope's
recipients) and ``state``; the ``queue`` command appends message records
(``event``: ``released``, ``retry``). Reading folds them in order: the last record
for a recipient wins.
"""

from __future__ import annotations

from typing import Any

from attrs import define

#: A recipient is finished in these states: nothing more will be tried for it.
FINAL = ("done", "bounced")


@define
class RecipientState:
    address: str
    state: str = "queued"  # queued, deferred, done, bounced
    attempts: int = 0
    next_try: float = 0.0
    reason: str = ""
    status: str = ""  # the enhanced status code of the last reply
    relay: str = ""
    #: a delay DSN has been sent for it
    delay_notified: bool = False

    @property
    def final(self) -> bool:
        return self.state in FINAL


@define
class MessageState:
    recipients: list[RecipientState]
    #: released from quarantine by ``queue release``
    released: bool = False

    @property
    def pending(self) -> list[int]:
        return [i for i, r in enumerate(self.recipients) if not r.final]

    def due(self, at: float) -> list[int]:
        """The pending recipients whose next attempt is at or before ``at``."""
        return [i for i in self.pending if self.recipients[i].next_try <= at]


def fold(envelope: dict[str, Any], records: list[dict[str, Any]]) -> MessageState:
    """The message's state from its envelope and its state records."""
    result = MessageState([RecipientState(r["address"]) for r in envelope["recipients"]])
    for rec in records:
        event = rec.get("event")
        if event == "released":
            result.released = True
        elif event == "retry":
            for r in result.recipients:
                if not r.final:
                    r.next_try = min(r.next_try, rec.get("at", 0.0))
        index = rec.get("rcpt")
        if not isinstance(index, int) or not 0 <= index < len(result.recipients):
            continue
        r = result.recipients[index]
        r.delay_notified = r.delay_notified or bool(rec.get("delay_notified"))
        r.state = rec.get("state", r.state)
        r.attempts = rec.get("attempts", r.attempts)
        r.next_try = rec.get("next_try", r.next_try)
        r.reason = rec.get("reason", r.reason)
        r.status = rec.get("status", r.status)
        r.relay = rec.get("relay", r.relay)
    return result


def backoff(attempts: int, minimal: float, maximal: float) -> float:
    """Seconds until the next attempt after ``attempts`` failed ones: the minimal
    backoff, doubled after each failure, at most the maximal (as Postfix's queue
    manager, minimal_backoff_time and maximal_backoff_time)."""
    return min(maximal, minimal * 2 ** max(0, attempts - 1))
