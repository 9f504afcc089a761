"""Prometheus metrics, counted from the events the appliance logs.

The session code only logs (``appliance.logs``); :class:`Metrics` observes every
event, logged or not, and counts it. Counting is always on: ``smtp-appliance
stats`` reads the same numbers over the control socket; ``[metrics] listen`` only
adds the HTTP endpoint.

Across pre-forked workers the numbers are summed with prometheus-client's
multiprocess mode: each process writes its values to its own memory-mapped file in
a directory made for this run, and the process that serves the endpoint (the
supervisor, or the only process) adds them up when scraped. It costs no message
between processes and no round trip per event, and a worker that dies keeps its
counts (its files stay; only its share of "sessions open" is dropped). See
docs/operations.md, "Metrics".
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance import logs

PREFIX = "smtp_appliance_"
REFUSING = frozenset({"reject", "tmpreject", "abort"})
#: the delivery side's events, counted in deliveries_total by outcome
DELIVERY_OUTCOMES = ("delivered", "deferred", "bounced", "expired", "dsn_sent", "released")

_SESSION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)
_COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_DELAY_BUCKETS = (1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 86400, 5 * 86400)


class Metrics:
    """This run's metrics. ``directory``: the per-run directory of the multiprocess
    mode (made by :func:`start`); None counts in this process only (tests)."""

    def __init__(self, directory: str | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

        self.directory = directory
        if directory is not None:
            # prometheus-client picks its value class from this variable; metrics
            # made from now on write to <directory>/<type>_<pid>.db
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
            values.ValueClass = values.MultiProcessValue()
        own = CollectorRegistry() if directory is None else None

        def counter(name: str, text: str, labels: tuple[str, ...] = ()) -> Any:
            return Counter(PREFIX + name, text, labels, registry=own)

        def histogram(name: str, text: str, buckets: tuple[float, ...]) -> Any:
            return Histogram(PREFIX + name, text, buckets=buckets, registry=own)

        self.connections = counter("connections", "Connections by listener and outcome "
                                   "(accepted, too_busy)", ("listener", "outcome"))
        self.sessions_open = Gauge(PREFIX + "sessions_open", "Sessions open now",
                                   ("listener",), registry=own, multiprocess_mode="livesum")
        self.messages = counter("messages_accepted", "Messages accepted and queued")
        self.bytes = counter("message_bytes", "Octets of the messages accepted")
        self.recipients = counter("recipients_accepted", "Recipients of the messages accepted")
        self.discarded = counter("messages_discarded", "Messages accepted and dropped")
        self.queue_failures = counter("queue_failures", "Messages that could not be stored")
        self.refusals = counter("refusals", "4xx/5xx replies by command, code, enhanced code "
                                "and the plugin that decided (\"\": the server's own)",
                                ("command", "code", "enhanced", "plugin"))
        self.tls = counter("tls_sessions", "TLS handshakes by TLS version", ("version",))
        self.tls_failures = counter("tls_failures", "Failed TLS handshakes")
        self.auth = counter("auth", "AUTH attempts by mechanism and result",
                            ("mechanism", "result"))
        self.checks = counter("check_results", "Check results by check and result",
                              ("check", "result"))
        self.deliveries = counter("deliveries", "Delivery outcomes", ("outcome",))
        self.session_seconds = histogram("session_seconds", "Session length",
                                         _SESSION_BUCKETS)
        self.commit_seconds = histogram("queue_commit_seconds", "Time to store an accepted "
                                        "message (the fsynced commit)", _COMMIT_BUCKETS)
        self.delivery_delay = histogram("delivery_delay_seconds", "From receipt to delivery",
                                        _DELAY_BUCKETS)
        self.registry = own
        self._on: dict[str, Callable[[dict[str, Any]], None]] = {
            "connect": self._connect, "too_busy": self._too_busy,
            "disconnect": self._disconnect, "tls": self._tls,
            "tls_failed": lambda f: self.tls_failures.inc(),
            "auth": lambda f: self.auth.labels(f.get("mechanism", ""), "success").inc(),
            "auth_failed": lambda f: self.auth.labels(f.get("mechanism", ""), "failure").inc(),
            "queued": self._queued, "reply": self._reply,
            "replies_not_logged": self._reply,
            "discarded": lambda f: self.discarded.inc(),
            "queue_failed": lambda f: self.queue_failures.inc(),
            **{name: self._delivery(name) for name in DELIVERY_OUTCOMES},
        }

    def observe(self, name: str, fields: dict[str, Any]) -> None:
        """The observer of :func:`appliance.logs.observe`: one dict look-up for an
        event that is not counted."""
        handler = self._on.get(name)
        if handler is not None:
            handler(fields)

    # --- the events ---------------------------------------------------------------------

    def _connect(self, f: dict[str, Any]) -> None:
        listener = f.get("listener", "")
        self.connections.labels(listener, "accepted").inc()
        self.sessions_open.labels(listener).inc()

    def _too_busy(self, f: dict[str, Any]) -> None:
        self.connections.labels(f.get("listener", ""), "too_busy").inc()

    def _disconnect(self, f: dict[str, Any]) -> None:
        self.sessions_open.labels(f.get("listener", "")).dec()
        self.session_seconds.observe(f.get("seconds", 0))
        self._checks(f)

    def _tls(self, f: dict[str, Any]) -> None:
        self.tls.labels(f.get("protocol", "")).inc()

    def _queued(self, f: dict[str, Any]) -> None:
        self.messages.inc()
        self.bytes.inc(f.get("size", 0))
        self.recipients.inc(f.get("rcpts", 0))
        if "seconds" in f:
            self.commit_seconds.observe(f["seconds"])
        self._checks(f)

    def _checks(self, f: dict[str, Any]) -> None:
        for item in filter(None, f.get("checks", "").split(",")):
            check, _, result = item.partition(":")
            self.checks.labels(check, result).inc()

    def _reply(self, f: dict[str, Any]) -> None:
        self.refusals.labels(f.get("command", ""), str(f.get("code", "")),
                             f.get("enhanced", ""), f.get("by", "")).inc(f.get("count", 1))

    def _delivery(self, outcome: str) -> Callable[[dict[str, Any]], None]:
        def count(f: dict[str, Any]) -> None:
            self.deliveries.labels(outcome).inc()
            if outcome == "delivered" and isinstance(f.get("delay"), int | float):
                self.delivery_delay.observe(f["delay"])
        return count

    # --- reading them -------------------------------------------------------------------

    def collector_registry(self, spool_queue: Path | None = None) -> Any:
        """What a scrape reads: every process's values (multiprocess mode), and the
        queue's size and oldest message, looked at when scraped."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        if self.directory is None:
            registry.register(Fresh(lambda: self.registry))
        else:
            MultiProcessCollector(registry, path=self.directory)
        if spool_queue is not None:
            registry.register(QueueCollector(spool_queue))
        return registry

    def worker_gone(self, pid: int) -> None:
        """In the supervisor: a worker exited; its sessions are no longer open."""
        if self.directory is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self.directory)


def samples(registry: Any) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of ``registry``, by sample name (for ``stats``)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in registry.collect():
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


class Fresh:
    """A collector whose registry is made anew at each collection (each scrape)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make

    def collect(self) -> Any:
        return self.make().collect()


class QueueCollector:
    """The spool's queue at scrape time: how many messages, and the oldest's age."""

    def __init__(self, queue: Path) -> None:
        self.queue = queue

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        count, oldest = 0, None
        for path in self.queue.glob("*.json"):
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue  # delivered while we looked
            count += 1
            oldest = mtime if oldest is None else min(oldest, mtime)
        yield GaugeMetricFamily(PREFIX + "queue_messages", "Messages in the queue", value=count)
        yield GaugeMetricFamily(PREFIX + "queue_oldest_seconds",
                                "Age of the oldest message in the queue (0: empty)",
                                value=time.time() - oldest if oldest is not None else 0)


#: the per-run directories' names: this prefix and the pid of the server
RUN_PREFIX = "smtp-appliance-metrics-"


def run_base() -> Path:
    """Where the per-run directory goes: systemd's RuntimeDirectory= if set, else
    /dev/shm, else the temporary directory. A memory file system, never the spool:
    a page of a memory-mapped file written on a full file system kills the process
    (SIGBUS), and a full spool must give 452, not a dead worker."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return Path(runtime)
    return Path("/dev/shm") if os.path.isdir("/dev/shm") else Path(tempfile.gettempdir())


def start(base: Path | None = None) -> Metrics:
    """This run's metrics, counted from now on in a fresh directory of their own,
    ``smtp-appliance-metrics-PID`` in ``base`` (:func:`run_base`; removed by
    :func:`stop`), so no earlier run's files are summed in. Those of a run that was
    killed are removed here."""
    base = base or run_base()
    for old in base.glob(RUN_PREFIX + "*"):
        pid = old.name.removeprefix(RUN_PREFIX)
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    directory = base / f"{RUN_PREFIX}{os.getpid()}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700)
    metrics = Metrics(str(directory))
    logs.observe(metrics.observe)
    return metrics


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(metrics: Metrics) -> None:
    if metrics.directory is not None:
        shutil.rmtree(metrics.directory, ignore_errors=True)
