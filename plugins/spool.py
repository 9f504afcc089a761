"""The default queue: store accepted messages in the on-disk spool."""

from __future__ import annotations

from attrs import frozen

from appliance import GroupCall, PluginConfig, hookimpl
from appliance.spool import Spool, envelope


class SpoolPlugin:
    """Durable hand-off to ``[queue] directory`` (docs/spool.md).

    Priority 1000 by default, so a next-hop plugin with a lower priority number
    is asked first and the spool is the fallback.
    """

    @frozen(kw_only=True)
    class Config(PluginConfig):
        priority: int = 1000

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.spool: Spool | None = None
        self.commit: GroupCall | None = None

    @hookimpl
    def on_configure(self, spool: Spool) -> None:
        self.spool = spool
        self.commit = GroupCall(spool.commit_many)

    @hookimpl
    def queue_message(self, session, transaction, message) -> str:
        env = envelope(session, transaction)
        # fsync blocks: commits run in a thread, grouped, so other sessions go on.
        self.commit((transaction.queue_id, message, env))
        return transaction.queue_id
