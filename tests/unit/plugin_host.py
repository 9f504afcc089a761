"""A plugin asked through a real plugin host, as the server asks it: the host
applies monitor mode (the plugin's own and ``[plugins.NAME] mode``) and writes
the decision trace, which a plugin never does itself."""

from __future__ import annotations

from typing import Any

from attrs import evolve

from appliance.hooks.host import Discovered, PluginHost


def ask(plugin: Any, name: str, event: str, session: Any, transaction: Any = None,
        **kwargs: Any) -> Any:
    """The verdict the host applies for ``on_<event>`` (None: carry on); the plugin
    counts as enabled, whatever its ``Config`` defaults to."""
    found = {name: Discovered(name, plugin, type(plugin.config))}
    host = PluginHost.build(found, {name: evolve(plugin.config, enabled=True)}, 0)
    return host.decide(event, session, transaction, **kwargs)[0]
