"""Plays the future rules engine against the milter API (Axigen's addFilter and
executeFilters): HELO ``add-NAME.…`` adds the on-demand milter NAME; a header
``X-Execute-Milters: PATTERN`` runs the milters matching PATTERN at end of data
and records the filter result in ``X-Filter-Result``."""

from __future__ import annotations

from attrs import frozen

from appliance import PluginConfig, hookimpl
from appliance.clients import chain_of


class MilterRules:
    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False
        priority: int = 200  # before the milter plugin (300), as a rule would be

    def __init__(self, config):
        self.config = config

    @hookimpl
    def on_ehlo(self, session, hostname):
        chain = chain_of(session)
        if chain is not None and hostname.startswith("add-"):
            chain.add(hostname[4:].split(".")[0])

    @hookimpl
    def on_message(self, session, transaction, message):
        chain = chain_of(session)
        pattern = message.headers.read("X-Execute-Milters")
        if chain is None or not pattern:
            return None
        result = chain.execute(pattern, "message", session, transaction, message=message)
        message.headers.add("X-Filter-Result", f"{result.milter or '-'} {result.action}")
        return result.verdict
