"""What a plugin author imports: the hook marker and a helper for blocking calls.

A plugin is a class (or module) with methods marked ``@hookimpl`` and named
after hooks in :mod:`appliance.hookspecs`; it is announced to the appliance by
an entry point in the ``smtp_appliance`` group of its distribution::

    [project.entry-points.smtp_appliance]
    my-check = "my_package.plugin:MyCheck"

See docs/plugins.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pluggy

from .hookspecs import NAME

hookimpl = pluggy.HookimplMarker(NAME)

T = TypeVar("T")


def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call (fsync, a C library without gevent support) in the
    server's thread pool so that other sessions keep going."""
    from gevent import get_hub

    return get_hub().threadpool.apply(fn, args)
