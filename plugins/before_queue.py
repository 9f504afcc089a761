"""Before-queue delivery for the listeners named in ``[delivery] before_queue``:
each accepted message goes to the listener's next hop while the client waits, and
the client gets the next hop's answer (docs/delivery.md, "Before queue").

Priority 500: asked before the spool (1000), which keeps the messages of every
other listener, and of recipients the next hop did not take when
``before_queue_partial = "spool"``.
"""

from __future__ import annotations

import logging
from typing import Any

from attrs import frozen

from appliance import PluginConfig, hookimpl, run_blocking
from appliance.delivery import hand_on
from appliance.spool import Spool, envelope

log = logging.getLogger("smtp_appliance.before_queue")


class BeforeQueue:
    @frozen(kw_only=True)
    class Config(PluginConfig):
        priority: int = 500

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.delivery: Any = None
        self.spool: Spool | None = None

    @hookimpl
    def on_configure(self, config: Any, spool: Spool) -> None:
        self.delivery, self.spool = config.delivery, spool

    @hookimpl
    def queue_message(self, session, transaction, message) -> str | None:
        hop = self.delivery.before_queue.get(session.listener) if self.delivery else None
        if hop is None:
            return None
        env = envelope(session, transaction)

        def spool_rest(indexes: list[int]) -> str:
            rest = {**env, "recipients": [env["recipients"][i] for i in indexes]}
            run_blocking(self.spool.commit, transaction.queue_id, message, rest)
            return transaction.queue_id

        queue_id, said = hand_on(self.delivery, hop, env, message, spool_rest)
        log.info("before_queue", extra={"fields": {"queue_id": queue_id, "relay": hop,
                                                   "reply": said}})
        return queue_id
