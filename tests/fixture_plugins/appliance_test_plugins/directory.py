"""A recipient directory for the relay tests: answers ``lookup_recipient`` from its
own config table, as an LDAP or SQL plugin would from its store (no LDAP server
runs in the tests; the hook contract is what is under test)."""

from __future__ import annotations

from attrs import field, frozen

from appliance import PluginConfig, RecipientInfo, hookimpl


class Directory:
    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False
        mailboxes: dict[str, str] = field(factory=dict)  # address -> folder
        down: bool = False  # the directory is unreachable: every lookup raises

    def __init__(self, config: Config) -> None:
        self.config = config
        self.mailboxes = {a.lower(): (a, f) for a, f in config.mailboxes.items()}

    @hookimpl
    def lookup_recipient(self, address):
        if self.config.down:
            raise ConnectionError("directory unreachable")
        found = self.mailboxes.get(address.lower())
        return RecipientInfo(found[0], found[1]) if found else None
