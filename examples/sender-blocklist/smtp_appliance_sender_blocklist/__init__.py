"""Refuse mail from listed sender domains (an example smtp-appliance plugin)."""

from __future__ import annotations

from attrs import field, frozen

from appliance import PluginConfig, Verdict, hookimpl


class SenderBlocklist:
    """``[plugins.sender-blocklist]``: ``domains`` (list of domains; subdomains
    match too) and ``text`` (the reject explanation)."""

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False  # installing must not change behaviour by itself
        domains: list[str] = field(factory=list)
        text: str = "Sender domain refused by local policy"

    def __init__(self, config: Config) -> None:
        self.domains = {d.lower().rstrip(".") for d in config.domains}
        self.text = config.text

    def _listed(self, domain: str) -> bool:
        labels = domain.lower().rstrip(".").split(".")
        return any(".".join(labels[i:]) in self.domains for i in range(len(labels)))

    @hookimpl
    def on_mail_from(self, transaction):
        if transaction.mail_from and self._listed(transaction.mail_from_domain):
            return Verdict.reject(self.text, 550, "5.7.1")
        return None

    @hookimpl
    def on_headers_received(self, headers):
        headers.add("X-Sender-Blocklist", "checked")
