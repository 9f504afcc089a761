"""A probe of the shared counters (``on_configure``'s ``counters``) for the tests.

``test-counters``: every connection counts one event for its client IP; above
``limit`` events per ``interval`` the connection gets 421 4.7.0 (the text names the
count); a concurrency gauge per IP refuses above ``max_concurrent``; with ``ban``
set, exceeding the limit also bans the IP (554 5.7.1 at connect). EHLO is
answered 550 with "pid=P count=N" so a test can see which worker served it.
"""

from __future__ import annotations

import os

from attrs import frozen

from appliance import Duration, PluginConfig, Verdict, hookimpl


class CountersProbe:
    @frozen(kw_only=True)
    class Config(PluginConfig):
        enabled: bool = False
        limit: int = 5
        interval: Duration = Duration("60s")
        max_concurrent: int = 1000
        fail: str = "open"
        ban: Duration = Duration("0s")  # > 0: exceeding the limit also bans the IP

    def __init__(self, config):
        self.config = config
        self.counters = None

    @hookimpl
    def on_configure(self, counters):
        self.counters = counters

    @hookimpl
    def on_connect(self, session):
        key = f"test-counters:{session.remote_ip}"
        left = self.counters.banned(key)
        if left:
            return Verdict.reject(f"banned for {left:.0f}s", 554, "5.7.1")
        n = self.counters.hit(key, float(self.config.interval), fail=self.config.fail)
        session.stash["test-counters"] = n
        if n > self.config.limit:
            if self.config.ban:
                self.counters.ban(key, float(self.config.ban), f"more than {self.config.limit}")
            return Verdict.abort(f"rate limit reached: count={n} pid={os.getpid()}")
        active = self.counters.enter(key, fail=self.config.fail)
        session.stash["test-counters-gauge"] = key
        if active > self.config.max_concurrent:
            return Verdict.abort(f"concurrency limit reached: active={active}")
        return None

    @hookimpl
    def on_ehlo(self, session):
        n = session.stash.get("test-counters", 0)
        return Verdict.reject(f"pid={os.getpid()} count={n}", 550, "5.7.1")

    @hookimpl
    def on_disconnect(self, session):
        key = session.stash.pop("test-counters-gauge", None)
        if key:
            self.counters.leave(key)
