"""The delivery service as a child process of ``smtp-appliance serve``: started
after the spool is prepared, restarted if it dies, stopped with the server."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

import gevent

from appliance import logs

PR_SET_PDEATHSIG = 1


class DeliveryProcess:
    """``smtp-appliance deliver`` run by the server; respawned a second after it dies."""

    def __init__(self, config_dir: str | Path) -> None:
        self.argv = [sys.executable, "-m", "appliance", "--config-dir", str(config_dir),
                     "deliver"]
        self.proc: subprocess.Popen | None = None
        self.stopping = False
        self.restarting = False
        self.owner = os.getpid()  # a pre-forked worker inherits this greenlet: not its job
        self.watcher = gevent.spawn(self._watch)

    def _watch(self) -> None:
        while not self.stopping:
            self.proc = subprocess.Popen(self.argv, preexec_fn=_die_with_parent)
            logs.event("delivery_process", pid=self.proc.pid)
            while self.proc.poll() is None and _exists(self.proc.pid):
                gevent.sleep(0.5)  # not wait(): the pre-fork supervisor may reap it
            status = self.proc.returncode
            if self.stopping or os.getpid() != self.owner:
                return
            if self.restarting:
                self.restarting = False
                continue
            logs.event("delivery_died", level=40, pid=self.proc.pid, status=status)
            gevent.sleep(1)

    def restart(self) -> None:
        """After a reload: the service ends its transactions, stops, and starts again
        with the new configuration."""
        if os.getpid() != self.owner or self.proc is None or self.proc.poll() is not None:
            return
        self.restarting = True
        self.proc.terminate()

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


def _die_with_parent() -> None:
    """In the child: SIGKILL when the server dies, even by kill -9 (Linux's
    PR_SET_PDEATHSIG), so no orphan delivers beside the next server's service; and
    the signals the server may still hold at start-up are its own again."""
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
