"""smtp-appliance: an SMTP receiving appliance.

The public API for plugins is what this module exports; everything else is
internal. Names are resolved lazily so that ``smtp-appliance`` can apply
gevent's monkey-patching before anything else is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "hookimpl": "appliance.plugin",
    "Verdict": "appliance.verdict",
    "Action": "appliance.verdict",
    "PluginConfig": "appliance.config",
    "Size": "appliance.config",
    "Duration": "appliance.config",
    "SessionContext": "appliance.context",
    "Transaction": "appliance.context",
    "Recipient": "appliance.context",
    "RecipientInfo": "appliance.context",
    "TLSInfo": "appliance.context",
    "Headers": "appliance.headers",
    "Message": "appliance.message",
    "run_blocking": "appliance.plugin",
    "per_listener": "appliance.plugin",
    "PerListener": "appliance.plugin",
    "Counters": "appliance.counters",
    "StoreUnavailable": "appliance.counters",
    "AuthResult": "appliance.authresults",
    "Resolver": "appliance.dns",
    "DnsTempError": "appliance.dns",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'appliance' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
