"""The Maildir quota at RCPT time: ``recipient.overquota`` (the seeds'
isOverquota) and ``recipient.overquota_action`` (overquotaAction).

Two plugins, so rules run between them: ``maildir-quota`` (priority 20, before
the rules) sets ``overquota`` for a recipient whose next hop is a Maildir with a
``quota`` its mailbox has reached; ``maildir-quota-action`` (priority 900, after
the rules, which may set ``overquota_action = "accept"``) refuses such a recipient
with ``552 5.2.2`` when the action is ``reject`` (the default). An accepted
message is delivered even if it takes the mailbox past its quota.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from appliance import PluginConfig, Verdict, hookimpl
from appliance.delivery import is_overquota

OVER_QUOTA = "Mailbox full: the recipient's mailbox is over its quota"


class MaildirQuota:
    """Sets ``recipient.overquota``."""

    @frozen(kw_only=True)
    class Config(PluginConfig):
        priority: int = 20

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.delivery: Any = None

    @hookimpl
    def on_configure(self, config: Any) -> None:
        self.delivery = config.delivery

    @hookimpl
    def on_rcpt_to(self, recipient: Any) -> None:
        if self.delivery is not None and self.delivery.next_hops:
            recipient.overquota = is_overquota(self.delivery, recipient.address,
                                               recipient.relay_host)


class MaildirQuotaAction:
    """Refuses a recipient over quota unless its action is ``accept``."""

    @frozen(kw_only=True)
    class Config(PluginConfig):
        priority: int = 900

    def __init__(self, config: PluginConfig) -> None:
        self.config = config

    @hookimpl
    def on_rcpt_to(self, recipient: Any) -> Verdict | None:
        if recipient.overquota and recipient.overquota_action != "accept":
            return Verdict.reject(OVER_QUOTA, code=552, enhanced="5.2.2")
        return None
