"""The built-in credentials backend: the users file of ``[auth] users_file``."""

from __future__ import annotations

from attrs import frozen

from appliance import PluginConfig, UsersFile, hookimpl


class UsersPlugin:
    """Answers the ``auth_backend`` hook with the users file (hashed secrets only,
    managed with ``smtp-appliance users``; docs/auth.md). Re-read when the file
    changes. Priority 1000: a plugin with a lower number (LDAP, SQL) is asked first."""

    @frozen(kw_only=True)
    class Config(PluginConfig):
        priority: int = 1000

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.files: dict[str, UsersFile] = {}
        self.by_listener: dict[str, UsersFile | None] = {}

    @hookimpl
    def on_configure(self, config) -> None:
        paths = {str(lc.auth.users_file) for lc in config.listeners.values()}
        self.files = {p: self.files.get(p) or UsersFile(p) for p in paths if p}
        self.by_listener = {name: self.files.get(str(lc.auth.users_file))
                            for name, lc in config.listeners.items()}

    @hookimpl
    def auth_backend(self, session) -> UsersFile | None:
        return self.by_listener.get(session.listener)
