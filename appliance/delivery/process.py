"""The delivery service as a child process of ``smtp-appliance serve``: started
after the spool is prepared, restarted if it dies, stopped with the server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gevent

from appliance import logs


class DeliveryProcess:
    """``smtp-appliance deliver`` run by the server; respawned a second after it dies."""

    def __init__(self, config_dir: str | Path) -> None:
        self.argv = [sys.executable, "-m", "appliance", "--config-dir", str(config_dir),
                     "deliver"]
        self.proc: subprocess.Popen | None = None
        self.stopping = False
        self.owner = os.getpid()  # a pre-forked worker inherits this greenlet: not its job
        self.watcher = gevent.spawn(self._watch)

    def _watch(self) -> None:
        while not self.stopping:
            self.proc = subprocess.Popen(self.argv)
            logs.event("delivery_process", pid=self.proc.pid)
            status = self.proc.wait()
            if self.stopping or os.getpid() != self.owner:
                return
            logs.event("delivery_died", level=40, pid=self.proc.pid, status=status)
            gevent.sleep(1)

    def stop(self, timeout: float = 35.0) -> None:
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.watcher.kill()
