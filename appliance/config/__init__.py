"""The appliance's configuration: ``conf.d/*.toml`` validated into frozen attrs classes.

Public API for the server and for plugins::

    config = load_config("conf.d", plugin_schemas={"spool": SpoolConfig})
    config.listeners["mta"].limits.max_recipients

Plugins subclass :class:`PluginConfig` and may use :class:`Size`, :class:`Duration`,
:class:`FilePath` and ``Annotated[..., Check(...)]`` in their own fields. A plugin may
also own an area (``[access]``): ``load_config(..., plugin_areas={"access": Area})``
gives ``config.areas["access"]`` and, per listener, ``listeners[name].areas["access"]``.
"""

from appliance.config.loader import ConfigError, load_config
from appliance.config.report import check_config, describe_listener
from appliance.config.schema import (
    AppConfig,
    Auth,
    Check,
    Dns,
    Limits,
    Listener,
    Logging,
    PluginConfig,
    Queue,
    Server,
    Smtp,
    State,
    Tls,
)
from appliance.config.units import Duration, FilePath, Size

__all__ = [
    "AppConfig",
    "Auth",
    "Check",
    "ConfigError",
    "Dns",
    "Duration",
    "FilePath",
    "Limits",
    "Listener",
    "Logging",
    "PluginConfig",
    "Queue",
    "Server",
    "Size",
    "Smtp",
    "State",
    "Tls",
    "check_config",
    "describe_listener",
    "load_config",
]
