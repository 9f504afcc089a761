"""A token checker and a broken credentials store, for the AUTH tests."""

from __future__ import annotations

from attrs import frozen

from appliance import PluginConfig, hookimpl
from appliance.sasl import CredentialsBackend


class _Broken(CredentialsBackend):
    def verify_password(self, user: str, password: str) -> bool | None:
        raise RuntimeError("the directory server's library crashed")


class AuthProbe:
    """``[plugins.test-authprobe]``: accepts the bearer token ``token`` (any other
    raises, as a buggy checker would), and with ``broken = true`` answers
    ``auth_backend`` with a store whose every call raises."""

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False
        priority: int = 10
        token: str = "letmein"
        broken: bool = False

    def __init__(self, config: Config) -> None:
        self.config = config

    @hookimpl
    def auth_backend(self, session) -> CredentialsBackend | None:
        return _Broken() if self.config.broken else None

    @hookimpl
    def verify_oauth_token(self, session, user: str | None, token: str) -> str | None:
        if token == self.config.token:
            return user or "token-user"
        raise RuntimeError("token service unreachable")
