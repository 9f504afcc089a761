"""smtp-appliance: an SMTP receiving appliance.

The public API for plugins is what this module exports, plus the public modules
listed in docs/plugins.md ("The public API"): ``appliance.dns``,
``appliance.netlist``, ``appliance.checks``, ``appliance.clients``,
``appliance.sasl`` and ``appliance.spool``. Everything else is internal, and a
test keeps the built-in plugins to this API. Names are resolved lazily so that
``smtp-appliance`` can apply gevent's monkey-patching before anything else is
imported.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # hooks, verdicts and the helpers a hook uses
    "hookimpl": "appliance.hooks.plugin",
    "run_blocking": "appliance.hooks.plugin",
    "per_listener": "appliance.hooks.plugin",
    "PerListener": "appliance.hooks.plugin",
    "GroupCall": "appliance.hooks.plugin",
    "Verdict": "appliance.hooks.verdict",
    "Action": "appliance.hooks.verdict",
    # configuration: a plugin's settings and the value types of config files
    "PluginConfig": "appliance.config",
    "Check": "appliance.config",
    "Size": "appliance.config",
    "Duration": "appliance.config",
    "FilePath": "appliance.config",
    "format_duration": "appliance.config.units",
    # what a session builds: contexts, the message, Authentication-Results
    "SessionContext": "appliance.mail.context",
    "Transaction": "appliance.mail.context",
    "Recipient": "appliance.mail.context",
    "RecipientInfo": "appliance.mail.context",
    "TLSInfo": "appliance.mail.context",
    "Headers": "appliance.mail.headers",
    "Message": "appliance.mail.message",
    "AuthResult": "appliance.mail.authresults",
    # services handed over by on_configure
    "Counters": "appliance.state.counters",
    "StoreUnavailable": "appliance.state.counters",
    "Resolver": "appliance.dns",
    "DnsTempError": "appliance.dns",
    "UsersFile": "appliance.users",
}

__all__ = sorted(_EXPORTS)


def lazy_exports(package: str, exports: dict[str, str]):
    """A module ``__getattr__`` that imports ``exports[name]`` on first use."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__


__getattr__ = lazy_exports("appliance", _EXPORTS)
