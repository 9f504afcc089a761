"""The service manager's readiness protocol (systemd's sd_notify(3)): one datagram
of ``KEY=VALUE`` lines to the socket named in ``$NOTIFY_SOCKET``. Without that
variable (not started by systemd with ``Type=notify``) every call does nothing.

Only the process systemd started speaks: a pre-forked worker calls :func:`forget`,
as ``sd_notify``'s ``unset_environment`` does, so its own stop and reload stay
silent (systemd ignores them anyway under the default ``NotifyAccess=main``)."""

from __future__ import annotations

import os
import socket
import time

ENV = "NOTIFY_SOCKET"


def send(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``...) as one message; False if nobody listens."""
    address = os.environ.get(ENV, "")
    if not address:
        return False
    if address.startswith("@"):  # Linux abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError:
        return False  # the manager went away: nothing to tell
    return True


def ready() -> bool:
    """Every listener is bound: systemd may start the units ordered after us."""
    return send("READY=1", f"MAINPID={os.getpid()}")


def reloading() -> bool:
    """A reload starts (``MONOTONIC_USEC`` as ``Type=notify-reload`` asks for it);
    :func:`ready` says it is over."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return send("RELOADING=1", f"MONOTONIC_USEC={usec}")


def stopping() -> bool:
    return send("STOPPING=1")


def forget() -> None:
    """This process is not the one systemd started (a worker): never speak."""
    os.environ.pop(ENV, None)
