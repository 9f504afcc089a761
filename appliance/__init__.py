"""smtp-appliance: an SMTP receiving appliance.

The public API for plugins is what this module exports; everything else is
internal. Names are resolved lazily so that ``smtp-appliance`` can apply
gevent's monkey-patching before anything else is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "hookimpl": "appliance.hooks.plugin",
    "Verdict": "appliance.hooks.verdict",
    "Action": "appliance.hooks.verdict",
    "PluginConfig": "appliance.config",
    "Size": "appliance.config",
    "Duration": "appliance.config",
    "SessionContext": "appliance.mail.context",
    "Transaction": "appliance.mail.context",
    "Recipient": "appliance.mail.context",
    "RecipientInfo": "appliance.mail.context",
    "TLSInfo": "appliance.mail.context",
    "Headers": "appliance.mail.headers",
    "Message": "appliance.mail.message",
    "run_blocking": "appliance.hooks.plugin",
    "per_listener": "appliance.hooks.plugin",
    "PerListener": "appliance.hooks.plugin",
    "Counters": "appliance.state.counters",
    "StoreUnavailable": "appliance.state.counters",
    "AuthResult": "appliance.mail.authresults",
    "Resolver": "appliance.dns",
    "DnsTempError": "appliance.dns",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'appliance' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
