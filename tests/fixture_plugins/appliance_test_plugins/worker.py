"""Which server process served a session, for the pre-fork tests."""

from __future__ import annotations

import os
from pathlib import Path

from attrs import frozen
from gevent import monkey

from appliance import Duration, PluginConfig, hookimpl

#: time.sleep as it was before gevent patched it: it stops the whole process.
_blocking_sleep = monkey.get_original("time", "sleep")


class WorkerProbe:
    """``[plugins.test-worker]``: stamps every message with ``X-Worker-Pid``, the pid
    of the process that received it. With ``hold`` set, a client saying
    ``EHLO hold...`` keeps that whole process busy for that long (a blocking sleep,
    as a CPU-bound plugin would), so only another worker can accept meanwhile; the
    held process first writes its pid to the file ``held_pid_file``."""

    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False
        hold: Duration = Duration(0)
        held_pid_file: str = ""

    def __init__(self, config):
        self.config = config

    @hookimpl
    def on_ehlo(self, hostname):
        if self.config.hold and hostname.startswith("hold"):
            if self.config.held_pid_file:
                Path(self.config.held_pid_file).write_text(str(os.getpid()))
            _blocking_sleep(float(self.config.hold))

    @hookimpl
    def on_headers_received(self, headers):
        headers.add("X-Worker-Pid", str(os.getpid()))
