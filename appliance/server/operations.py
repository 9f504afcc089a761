"""What the running server tells and does for its administrator: the Prometheus
endpoint (``[metrics] listen``) and the control socket's ``stats``, ``status`` and
``reload`` (``appliance/state/control.py`` carries them).

Both are served by the process that binds the sockets (the supervisor, or the only
process); a forked worker closes its copies (:meth:`Operations.become_worker`).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Protocol

from appliance import logs
from appliance.metrics import Fresh, Metrics, samples


class Served(Protocol):
    """What the operations read of the server."""

    config_dir: Any
    runtime: Any
    workers: dict[int, int]

    def reload(self, quiet: bool = False) -> str: ...


class Operations:
    def __init__(self, server: Served, metrics: Metrics) -> None:
        self.server = server
        self.metrics = metrics
        self.started = time.time()
        self.http: Any = None

    def handlers(self) -> dict[str, Any]:
        """The control socket's operations."""
        return {"stats": self.stats, "status": self.status, "reload": self.reload}

    def _registry(self) -> Any:
        return self.metrics.collector_registry(self.server.runtime.spool.queue)

    # --- the endpoint -------------------------------------------------------------------

    def start_http(self, listen: str) -> None:
        """Serve ``/metrics`` on ``listen`` ("address:port"); OSError names the key."""
        from gevent.pywsgi import WSGIServer
        from prometheus_client import make_wsgi_app

        host, _, port = listen.rpartition(":")
        app = make_wsgi_app(Fresh(self._registry))
        try:
            self.http = WSGIServer((host.strip("[]"), int(port)), app, log=None)
            self.http.start()
        except OSError as exc:
            raise OSError(f"metrics.listen {listen}: {exc.strerror or exc}") from exc
        logs.event("metrics_listening", address=listen)

    def become_worker(self) -> None:
        """In a forked worker: the endpoint is the supervisor's to serve."""
        if self.http is not None:
            self.http.close()
            self.http = None

    def close(self) -> None:
        self.become_worker()

    # --- the control socket's operations ------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {"uptime": round(time.time() - self.started, 1),
                "samples": {name: [[labels, value] for labels, value in found]
                            for name, found in samples(self._registry()).items()}}

    def status(self) -> dict[str, Any]:
        runtime = self.server.runtime
        open_now = samples(self._registry()).get("smtp_appliance_sessions_open", [])
        return {
            "pid": os.getpid(),
            "workers": sorted(self.server.workers),
            "uptime": round(time.time() - self.started, 1),
            "config_dir": str(Path(self.server.config_dir).resolve()),
            "listeners": {name: f"[{lr.config.address}]:{lr.config.port} "
                                f"tls {lr.config.tls_mode}"
                          for name, lr in runtime.listeners.items()},
            "sessions": int(sum(value for _, value in open_now)),
        }

    def reload(self) -> str:
        """As SIGHUP, but answered: the new configuration is checked here first; if
        refused, the workers are not asked and the reason is the answer."""
        workers = self.server.workers
        error = self.server.reload(quiet=bool(workers))
        if error:
            if workers:  # else reload() logged it
                logs.event("reload_refused", level=40, error=error)
            raise ValueError(f"reload refused, the running configuration stays: {error}")
        for pid in list(workers):
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass
        return f"reloaded {self.server.config_dir}"
