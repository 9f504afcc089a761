"""DKIM verification at the end of data: every DKIM-Signature of the message is
verified (dkimpy, keys looked up through the appliance's resolver) and reported in
Authentication-Results (``dkim=pass header.d=example.org ...``) and in
``transaction.checks["dkim"]``.

The plugin owns the ``[dkim]`` area (per listener in ``[listeners.NAME.dkim]``).
It refuses nothing by itself: DMARC (``plugins/dmarc/``) decides what a failed
signature means, from the results kept here for the message. The verification
itself is :mod:`appliance.dkim`, which dmarc uses too when this plugin is off.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from appliance import PerListener, PluginConfig, hookimpl, per_listener
from appliance.dkim import DkimArea, verify_message

__all__ = ["DkimArea", "DkimPlugin"]


class DkimPlugin:
    """Built-in plugin ``dkim``: owns ``[dkim]``; verifies at ``on_message``."""

    area = "dkim"
    Area = DkimArea

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False  # DNS lookups for every message: an admin's choice
        priority: int = 60  # before dmarc (70), which uses the results

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.areas: PerListener[DkimArea] = PerListener(DkimArea())
        self.dns: Any = None

    @hookimpl
    def on_configure(self, config: Any, dns: Any) -> None:
        self.dns = dns
        self.areas = per_listener(config, self.area, DkimArea, lambda area: area)

    @hookimpl
    def on_message(self, session: Any, transaction: Any, message: Any) -> None:
        verify_message(session, transaction, message, self.areas.of(session), self.dns)
