"""Clients of the external services the appliance talks to: milters (``milter/``),
Postfix policy servers (``policy/``), Dovecot's auth service (``dovecot``), web
services answering JSON (``http``), Redis (``redis``, the shared counters'
backend); every peer address in one syntax (``endpoints``).

What plugins may use is exported here (a public module: docs/plugins.md); the
submodules are internal. Names are resolved lazily, like :mod:`appliance`.
"""

from __future__ import annotations

from appliance import lazy_exports

_EXPORTS = {
    "is_socket": "appliance.clients.endpoints",
    "parse_socket": "appliance.clients.endpoints",
    "MilterChain": "appliance.clients.milter",
    "MilterSpec": "appliance.clients.milter",
    "STASH_KEY": "appliance.clients.milter",
    "chain_of": "appliance.clients.milter",
    "FilterResult": "appliance.clients.milter",
    "DEFAULT_MACROS": "appliance.clients.milter.macros",
    "DovecotAuth": "appliance.clients.dovecot",
    "DovecotMechanism": "appliance.clients.dovecot",
    "request_params": "appliance.clients.dovecot",
    "HttpClient": "appliance.clients.http",
    "HttpFailed": "appliance.clients.http",
    "PolicyClient": "appliance.clients.policy.client",
    "PolicyUnavailable": "appliance.clients.policy.client",
    "PolicyAction": "appliance.clients.policy.codec",
    "parse_action": "appliance.clients.policy.codec",
    "parse_header": "appliance.clients.policy.codec",
    "split_enhanced": "appliance.clients.policy.codec",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports("appliance.clients", _EXPORTS)
