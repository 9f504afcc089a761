"""The appliance's configuration: ``conf.d/*.toml`` validated into frozen attrs classes.

Public API for the server and for plugins::

    config = load_config("conf.d", plugin_schemas={"spool": SpoolConfig})
    config.listeners["mta"].limits.max_recipients

Plugins subclass :class:`PluginConfig` and may use :class:`Size`, :class:`Duration`,
:class:`FilePath` and ``Annotated[..., Check(...)]`` in their own fields.
"""

from .loader import ConfigError, load_config
from .report import check_config, describe_listener
from .schema import (
    AppConfig,
    Check,
    Limits,
    Listener,
    Logging,
    PluginConfig,
    Queue,
    Server,
    Smtp,
    Tls,
)
from .units import Duration, FilePath, Size

__all__ = [
    "AppConfig",
    "Check",
    "ConfigError",
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
    "Tls",
    "check_config",
    "describe_listener",
    "load_config",
]
