"""Pre-fork (as gunicorn does): the parent binds the listening sockets and forks
workers that share them; it then only supervises them, respawning a worker that
dies and forwarding signals.

A worker is a fork of the supervisor, so the supervisor reloads its own runtime
on SIGHUP too: a worker respawned after a reload starts with the current
configuration, not the one the server started with."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Protocol

import gevent
from gevent.event import Event

from appliance import logs
from appliance.server import notify
from appliance.state import StateKeeper

#: Signals held from the binding of the listeners until their handlers are in place:
#: a client or a readiness probe may see the port open at once and send SIGTERM,
#: which is then delivered to the handler instead of killing the process.
HELD_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1})


def hold_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)


def release_signals() -> None:
    """Once the handlers are installed; a held signal is delivered now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)


class Worker(Protocol):
    """What a worker runs: the server, with its sockets bound."""

    share: int
    state: StateKeeper
    workers: dict[int, int]
    operations: Any

    def serve(self) -> None: ...
    def reload(self, quiet: bool = False) -> str: ...
    def become_worker(self, index: int) -> None: ...


def supervise(server: Worker, workers: int) -> int:
    """Fork ``workers`` workers that serve the sockets ``server`` has bound; respawn
    one that dies; forward SIGTERM, SIGINT (as SIGTERM), SIGHUP and SIGUSR1 (reopen
    the log file) to them all."""
    server.share = workers
    children = server.workers  # pid -> index; the control socket's status reads it
    handlers: list = []  # the supervisor's signal handlers, not a worker's
    # The counters table is shared memory: made now, every worker counts in it.
    server.state.prefork(workers)

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            gevent.reinit()
            for handler in handlers:  # else the worker's own (reload, drain) never run
                handler.cancel()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until serve() installs its own
            notify.forget()  # only the supervisor speaks to the service manager
            try:
                server.become_worker(index)
                server.serve()
            finally:
                os._exit(0)
        children[pid] = index

    for i in range(workers):
        spawn(i)
    logs.event("workers", count=workers, pids=",".join(map(str, children)))

    stopping = Event()

    def forward(sig: int) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping.set()
            notify.stopping()
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM if sig == signal.SIGINT else sig)
            except ProcessLookupError:
                pass
        if sig == signal.SIGHUP:
            server.reload(quiet=True)  # each worker logs its own reload
        elif sig == signal.SIGUSR1:
            logs.reopen()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        handlers.append(gevent.signal_handler(sig, forward, sig))
    release_signals()
    notify.ready()  # the workers' sockets listen, and a SIGHUP is forwarded

    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            gevent.sleep(0.1)
            continue
        index = children.pop(pid, None)
        if index is not None and not stopping.is_set():
            logs.event("worker_died", level=40, pid=pid, status=status)
            server.state.worker_gone(index)
            server.operations.metrics.worker_gone(pid)
            spawn(index)
    sys.stdout.flush()
    return 0
