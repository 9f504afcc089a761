"""Before-queue hand-off (docs/delivery.md, "Before queue"): a listener's message
goes to its next hop while the client waits, and the client gets the next hop's
answer, as with Postfix's smtpd_proxy_filter. Nothing is kept locally when the
next hop takes every recipient.

The message is sent after its end of data, once every plugin has seen it (so
header edits, milters and Authentication-Results reach the next hop), not while it
arrives. LMTP's per-recipient replies become one reply: every recipient taken, 250;
every one refused alike, the (first) refusal; a mix, by ``before_queue_partial``:
``spool`` commits the message for the recipients not taken (the delivery service
retries them, or bounces them with a DSN) and answers 250, ``tmpfail`` answers 451
for all (the client sends again, and the recipients already taken get a second
copy).
"""

from __future__ import annotations

import io
import itertools
from typing import Any

from appliance.config.delivery import Delivery
from appliance.delivery.transport import Connection, NextHopError, Reply


class QueueRefused(Exception):
    """The next hop's refusal, for the client: raised by ``queue_message``."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def hand_on(config: Delivery, hop_name: str, envelope: dict[str, Any], message: Any,
            spool_rest: Any) -> tuple[str, str]:
    """Send the message to ``hop_name``; returns (queue id, what the next hop said)
    when the client may get 250, else raises QueueRefused. ``spool_rest(indexes)``
    commits the message for the recipients not taken and returns its queue id."""
    rcpts = list(enumerate(envelope["recipients"]))
    head = message.headers.to_bytes() + b"\r\n"
    conn = None
    try:
        conn = Connection(hop_name, config.next_hops[hop_name], config)
        with message.open_body() as body:
            replies = conn.send(envelope, rcpts, itertools.chain(io.BytesIO(head), body),
                                message.size)
    except NextHopError as exc:
        replies = {**exc.reply_all([i for i, _ in rcpts]), **getattr(exc, "partial", {})}
    finally:
        if conn is not None:
            conn.close()
    taken = [i for i, r in replies.items() if r.outcome == "done"]
    rest = [i for i in replies if i not in taken]
    if not rest:
        return envelope["queue_id"], str(replies[taken[0]])
    if not taken:
        if all(r.code >= 500 for r in replies.values()):
            raise QueueRefused(replies[rest[0]])
        raise QueueRefused(_tempfail(next(r for r in replies.values() if r.code < 500)))
    if config.before_queue_partial == "tmpfail":
        raise QueueRefused(_tempfail(replies[rest[0]]))
    return spool_rest(rest), f"{len(taken)} recipient(s) taken by {hop_name}, " \
                             f"{len(rest)} queued"


def _tempfail(reply: Reply) -> Reply:
    if reply.code // 100 == 4:
        return reply
    return Reply(451, "4.3.0", f"next hop: {reply}")
