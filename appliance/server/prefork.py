"""Pre-fork (as gunicorn does): the parent binds the listening sockets and forks
workers that share them; it then only supervises them, respawning a worker that
dies and forwarding signals."""

from __future__ import annotations

import os
import signal
import sys
from typing import Protocol

import gevent
from gevent.event import Event

from appliance import logs
from appliance.state import StateKeeper


class Worker(Protocol):
    """What a worker runs: the server, with its sockets bound."""

    share: int
    state: StateKeeper

    def serve(self) -> None: ...


def supervise(server: Worker, workers: int) -> int:
    """Fork ``workers`` workers that serve the sockets ``server`` has bound; respawn
    one that dies; forward SIGTERM, SIGINT (as SIGTERM) and SIGHUP to them all."""
    server.share = workers
    children: dict[int, int] = {}
    # The counters table is shared memory: made now, every worker counts in it.
    server.state.prefork(workers)

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            gevent.reinit()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            try:
                server.state.become_worker(index)
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
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM if sig == signal.SIGINT else sig)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        gevent.signal_handler(sig, forward, sig)

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
            spawn(index)
    sys.stdout.flush()
    return 0
