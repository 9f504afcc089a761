"""A runtime: one configuration generation with its plugins, spool and TLS.

SIGHUP builds a new runtime; sessions keep the runtime they started with.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from attrs import define

from appliance.config import AppConfig, Listener, load_config
from appliance.dns import ResolverKeeper
from appliance.hooks.host import Discovered, PluginHost, loader_inputs
from appliance.hooks.others import OtherPlugins
from appliance.mail.context import SessionContext, Transaction
from appliance.mail.message import Message
from appliance.spool import Spool
from appliance.state import StateKeeper

_TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def make_ssl_context(tls: Any) -> ssl.SSLContext:
    """Server context for one listener's effective [tls] table: the default
    certificate, and one context per [[tls.sni]] certificate, picked by the name
    the client asks for (the name is kept on the socket as ``sni_name``)."""
    default = _context(tls, tls.certificate, tls.key)
    by_name = {}
    for entry in tls.sni:
        ctx = _context(tls, entry.certificate, entry.key)
        for name in entry.names:
            by_name.setdefault(name.lower(), ctx)

    def pick(sock: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if not server_name:
            return
        name = server_name.lower()
        sock.sni_name = name
        chosen = by_name.get(name) or by_name.get("*." + name.partition(".")[2])
        if chosen is not None:
            sock.context = chosen

    default.sni_callback = pick
    return default


def _context(tls: Any, certificate: Any, key: Any) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _TLS_VERSIONS[tls.min_version]
    ctx.load_cert_chain(str(certificate), str(key))
    if tls.ciphers:
        ctx.set_ciphers(tls.ciphers)
    if tls.dh_params:
        ctx.load_dh_params(str(tls.dh_params))
    if tls.client_ca:
        # Ask for a client certificate; one that is offered must verify.
        ctx.load_verify_locations(cafile=str(tls.client_ca))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


@define
class ListenerRuntime:
    name: str
    config: Listener
    ssl_context: ssl.SSLContext | None


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
        ctx = make_ssl_context(lc.tls) if lc.tls_mode != "none" else None
        listeners[name] = ListenerRuntime(name, lc, ctx)
    spool = Spool(config.queue.directory, fsync=config.queue.fsync)
    host = PluginHost.build(found, config.plugins, float(config.server.plugin_timeout))
    counters = (state or StateKeeper()).counters_for(config.server.state)
    resolver = (dns or ResolverKeeper()).resolver_for(config.dns)
    host.notify("on_configure", config=config, spool=spool, counters=counters,
                hooks=OtherPlugins(host), dns=resolver)
    return Runtime(config, host, spool, hostname, listeners, counters)
