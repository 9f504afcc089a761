"""A runtime: one configuration generation with its plugins, spool and TLS.

SIGHUP builds a new runtime; sessions keep the runtime they started with.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from attrs import define, field

from appliance.config import AppConfig, Listener, load_config
from appliance.dns import ResolverKeeper
from appliance.hooks.host import Discovered, PluginHost, loader_inputs
from appliance.hooks.others import OtherPlugins
from appliance.mail.context import SessionContext, Transaction
from appliance.mail.message import Message
from appliance.netlist import NetList
from appliance.server.tls import make_ssl_context
from appliance.spool import Spool
from appliance.state import StateKeeper


@define
class ListenerRuntime:
    name: str
    config: Listener
    ssl_context: ssl.SSLContext | None
    #: proxy_trusted_networks, smtp.xclient_hosts and smtp.xforward_hosts, compiled.
    proxy_trusted: NetList = field(factory=NetList)
    xclient_hosts: NetList = field(factory=NetList)
    xforward_hosts: NetList = field(factory=NetList)


@define
class Runtime:
    config: AppConfig
    plugins: PluginHost
    spool: Spool
    hostname: str
    listeners: dict[str, ListenerRuntime]
    #: The shared counters ([server.state]) of this generation.
    counters: Any = None

    def queue(self, ctx: SessionContext, tx: Transaction, message: Message) -> tuple[Any, str]:
        return self.plugins.first("queue_message", session=ctx, transaction=tx,
                                  message=message)


def build_runtime(config_dir: str | Path, found: dict[str, Discovered],
                  state: StateKeeper | None = None,
                  dns: ResolverKeeper | None = None) -> Runtime:
    """Load and validate the config, build TLS contexts, the counters store (from
    ``state``, the server's keeper, so an unchanged store is reused), the resolver
    (from ``dns``, likewise, keeping its cache) and the plugin host. Raises
    ConfigError (config) or OSError/ssl.SSLError (certificates)."""
    config = load_config(config_dir, **loader_inputs(found))
    hostname = config.server.hostname or socket.getfqdn()
    listeners = {}
    for name, lc in config.listeners.items():
        if not lc.enabled:
            continue
        ctx = make_ssl_context(lc.tls, name) if lc.tls_mode != "none" else None
        where = f"listeners.{name}"
        listeners[name] = ListenerRuntime(
            name, lc, ctx,
            NetList.from_texts(lc.proxy_trusted_networks, f"{where}.proxy_trusted_networks"),
            NetList.from_texts(lc.smtp.xclient_hosts, f"{where}.smtp.xclient_hosts"),
            NetList.from_texts(lc.smtp.xforward_hosts, f"{where}.smtp.xforward_hosts"))
    spool = Spool(config.queue.directory, fsync=config.queue.fsync)
    host = PluginHost.build(found, config.plugins, float(config.server.plugin_timeout),
                            float(config.queue.timeout))
    counters = (state or StateKeeper()).counters_for(config.server.state)
    resolver = (dns or ResolverKeeper()).resolver_for(config.dns)
    host.notify("on_configure", config=config, spool=spool, counters=counters,
                hooks=OtherPlugins(host), dns=resolver)
    return Runtime(config, host, spool, hostname, listeners, counters)
