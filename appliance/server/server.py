"""The gevent server: one StreamServer per listener, one greenlet per session;
SIGHUP reloads, SIGTERM drains. With ``server.workers > 1`` it runs in each
pre-forked worker (``prefork.py``), and ``server.max_sessions`` is split evenly
between them.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import resource
import signal
import socket
import time
from pathlib import Path

import gevent
from gevent.event import Event
from gevent.server import StreamServer

from appliance import logs, metrics
from appliance.config import ConfigError
from appliance.dns import ResolverKeeper
from appliance.hooks.host import Discovered, discover
from appliance.protocol import Reply
from appliance.server import notify, prefork, privileges, proxied
from appliance.server.operations import Operations
from appliance.server.replies import Shutdown
from appliance.server.runtime import Runtime, build_runtime
from appliance.server.session import Session
from appliance.server.stress import Stress
from appliance.state import StateKeeper, control_path

TOO_BUSY = Reply(421, "4.3.2", "Too many connections, try again later")
BACKLOG = 1024


def bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((address, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


class Server:
    def __init__(self, config_dir: str | Path, found: dict[str, Discovered]) -> None:
        self.config_dir = config_dir
        self.found = found
        self.state = StateKeeper()  # the shared counters, kept across reloads
        self.dns = ResolverKeeper()  # the resolver and its cache, likewise
        self.runtime: Runtime = build_runtime(config_dir, found, self.state, self.dns)
        self.sockets: dict[str, socket.socket] = {}
        self.servers: list[StreamServer] = []
        self.sessions: dict[gevent.Greenlet, Session] = {}
        self.per_listener: dict[str, int] = {}
        self.share = 1  # how many workers share the session limit
        self.stress = Stress(self.sessions.values)
        self.stopped = Event()
        #: the pre-forked workers: pid -> index (none when this process serves)
        self.workers: dict[int, int] = {}
        self.operations: Operations | None = None  # the metrics endpoint, stats, reload
        self.delivery = None  # the delivery service's process (start_delivery)

    # --- start ------------------------------------------------------------------------

    def bind_all(self) -> None:
        for name, lr in self.runtime.listeners.items():
            address = lr.config.address
            where = f"[{address}]" if ":" in address else address
            try:
                self.sockets[name] = bind(address, lr.config.port)
            except OSError as exc:
                raise OSError(f"listener {name}: cannot listen on {where}:{lr.config.port}: "
                              f"{exc}") from exc
            logs.event("listening", listener=name,
                       address=f"[{lr.config.address}]:{lr.config.port}",
                       tls=lr.config.tls_mode)

    def prepare_spool(self) -> None:
        spool = self.runtime.spool
        spool.prepare()
        for path in spool.recover():
            logs.event("spool_recovered", removed=path)

    def start_listeners(self) -> None:
        for name, sock in self.sockets.items():
            server = StreamServer(sock, handle=self._handler(name))
            server.start()
            self.servers.append(server)

    def _handler(self, name: str):
        def handle(sock: socket.socket, address: tuple) -> None:
            self.handle(name, sock, address)
        return handle

    # --- sessions ------------------------------------------------------------------------

    def handle(self, name: str, sock: socket.socket, address: tuple) -> None:
        runtime = self.runtime
        lr = runtime.listeners.get(name)
        if lr is None:  # listener removed by a reload: keep serving with the old one
            sock.close()
            return
        limit = self.session_limit()
        own = lr.config.max_sessions
        if len(self.sessions) >= limit or (
            own and self.per_listener.get(name, 0) >= max(1, own // self.share)
        ):
            logs.event("too_busy", listener=name, client=address[0],
                       sessions=len(self.sessions))
            try:
                sock.sendall(TOO_BUSY.render())
            except OSError:
                pass
            sock.close()
            return
        lc = lr.config
        arrival = proxied.arrive(sock, address, name, lc.proxy_protocol, lr.proxy_trusted,
                                 float(lc.proxy_timeout))
        if arrival is None:
            sock.close()
            return
        session = Session(runtime, lr, sock, arrival, self.stress)
        me = gevent.getcurrent()
        self.sessions[me] = session
        self.per_listener[name] = self.per_listener.get(name, 0) + 1
        self.stress.update(len(self.sessions), limit, runtime.config.server)
        try:
            session.run()
        finally:
            del self.sessions[me]
            self.per_listener[name] -= 1
            self.stress.update(len(self.sessions), self.session_limit(),
                               self.runtime.config.server)

    def session_limit(self) -> int:
        """The sessions this process may hold: its share of ``server.max_sessions``."""
        return max(1, self.runtime.config.server.max_sessions // self.share)

    # --- signals -------------------------------------------------------------------------

    def reload(self, quiet: bool = False) -> str:
        """A new runtime from the config dir for new sessions; ``quiet``: no log
        lines (the pre-fork supervisor, whose workers log their own). Returns why
        the new configuration was refused, or "" if it is in force. The service
        manager hears RELOADING=1, then READY=1 whatever the outcome."""
        notify.reloading()
        try:
            return self._reload(quiet)
        finally:
            notify.ready()

    def _reload(self, quiet: bool) -> str:
        # Plugins pip-installed since the start are found (docs/plugins.md).
        importlib.invalidate_caches()
        found = discover()
        try:
            new = build_runtime(self.config_dir, found, self.state, self.dns)
        except (ConfigError, OSError, ValueError) as exc:
            error = str(exc).replace("\n", "; ")
            if not quiet:
                logs.event("reload_refused", level=40, error=error)
            return error
        moved = [n for n, lr in new.listeners.items()
                 if n not in self.runtime.listeners
                 or (lr.config.address, lr.config.port)
                 != (self.runtime.listeners[n].config.address,
                     self.runtime.listeners[n].config.port)]
        if moved and not quiet:
            logs.event("reload_listeners_unchanged", level=30, listeners=",".join(moved),
                       note="new or moved listeners take effect after a restart")
        new.spool.prepare()
        self.runtime = new
        self.found = found
        logs.configure(new.config.logging)  # the classes' levels; outputs at a restart
        if self.delivery is not None:
            self.delivery.restart()  # it reads the new configuration as it starts
        if not quiet:
            logs.event("reloaded", config_dir=str(self.config_dir))
        return ""

    def become_worker(self, index: int) -> None:
        """In a freshly forked worker: the supervisor's sockets are not its to serve."""
        self.state.become_worker(index)
        if self.operations is not None:
            self.operations.become_worker()

    def stop(self) -> None:
        """Stop accepting; 421 to idle sessions; let sessions in DATA finish within
        ``server.graceful_timeout``; then close the rest."""
        notify.stopping()
        logs.event("stopping", sessions=len(self.sessions))
        for server in self.servers:
            server.close()
        deadline = time.monotonic() + float(self.runtime.config.server.graceful_timeout)
        for glet, session in list(self.sessions.items()):
            session.closing = True  # a busy session says 421 after its message
            if not session.busy:
                glet.kill(Shutdown, block=False)
        while self.sessions and time.monotonic() < deadline:
            gevent.sleep(0.05)
        for glet, session in list(self.sessions.items()):
            session.busy = False
            glet.kill(Shutdown, block=False)
        gevent.joinall(list(self.sessions), timeout=2)
        logs.event("stopped")
        self.stopped.set()

    def install_signals(self) -> None:
        gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(self.stop))
        gevent.signal_handler(signal.SIGINT, lambda: gevent.spawn(self.stop))
        gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(self.reload))
        gevent.signal_handler(signal.SIGUSR1, logs.reopen)

    def serve(self) -> None:
        self.start_listeners()
        self.install_signals()
        prefork.release_signals()
        notify.ready()  # every listener is bound, and SIGHUP no longer kills us
        self.stopped.wait()


# --- process model ---------------------------------------------------------------------------


def raise_open_files_limit(max_sessions: int) -> None:
    """One descriptor per session, and some for spool files, plugins' connections
    and the listeners: raise the soft limit (up to the hard one) to fit them."""
    want = max_sessions + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    if soft != resource.RLIM_INFINITY and soft < want:
        logs.event("open_files_limit_low", level=30, limit=soft, wanted=want,
                   note="raise the hard limit (systemd: LimitNOFILE) or lower max_sessions")


def serve(config_dir: str | Path, found: dict[str, Discovered]) -> int:
    server = Server(config_dir, found)
    logs.setup(server.runtime.config.logging)  # OSError names the output's key
    raise_open_files_limit(server.runtime.config.server.max_sessions)
    # before the listeners are bound: once they are, clients (and a readiness
    # probe) may come, and SIGTERM must find the server's handlers soon after
    measured = metrics.start()
    server.operations = operations = Operations(server, measured)
    delivery = None
    prefork.hold_signals()  # until serve() or supervise() has its handlers
    try:
        if server.runtime.config.metrics.listen:
            operations.start_http(server.runtime.config.metrics.listen)
        server.bind_all()
        # Root binds ports below 1024; the spool, the control socket, the metrics
        # and every client then belong to server.user.
        privileges.drop(server.runtime.config, owned=[measured.directory])
        server.prepare_spool()
        # `smtp-appliance bans`, `stats`, `status` and `reload` reach the server here.
        server.state.open_control(control_path(server.runtime.config.queue.directory),
                                  operations.handlers())
        workers = server.runtime.config.server.workers or os.cpu_count() or 1
        delivery = server.delivery = start_delivery(config_dir, server.runtime.config)
        if workers == 1:
            server.serve()
            return 0
        return prefork.supervise(server, workers)
    finally:
        if delivery:
            delivery.stop()
        server.state.close_control()
        operations.close()
        metrics.stop(measured)


def start_delivery(config_dir: str | Path, config):
    """The delivery service's process, when [delivery] has next hops (docs/delivery.md)."""
    if not (config.delivery.enabled and config.delivery.next_hops):
        return None
    from appliance.delivery.process import DeliveryProcess

    return DeliveryProcess(config_dir)
