"""A plugin config class as a third-party plugin would write one (module level, so its
string annotations resolve)."""

from __future__ import annotations

from typing import Annotated, Literal

import attrs
from attrs import field, frozen

from appliance.config import Check, Duration, FilePath, PluginConfig, Size


@frozen(kw_only=True)
class Route:
    domain: str
    host: str


@frozen(kw_only=True)
class GreylistConfig(PluginConfig):
    max_size: Size = Size("1 MiB")
    delay: Duration = Duration("5m")
    action: Literal["reject", "tmpreject"] = "tmpreject"
    retries: Annotated[int, Check(lambda v: 1 <= v <= 9, "an integer from 1 to 9")] = 3
    networks: list[str] = field(factory=list)
    routes: list[Route] = field(factory=list)
    database: FilePath = FilePath("")


@frozen(kw_only=True)
class NeedsKeyConfig(PluginConfig):
    server: str


PLUGINS = {"greylist": GreylistConfig, "spool": PluginConfig}


@frozen(kw_only=True)
class ValidatorConfig(PluginConfig):
    """A plugin using a plain attrs validator instead of Check."""

    level: int = field(default=1, validator=attrs.validators.le(10))
