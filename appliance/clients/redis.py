"""The ``redis`` backend: counters shared by several appliances through one Redis.

Keys (all under ``[server.state] key_prefix``):

- ``win:<interval ms>:<key>``: a hash of slice number -> events. A Lua script adds,
  drops old slices and sums in one atomic step, on Redis's clock (``TIME``), so the
  appliances' clocks need not agree. Expires one interval after its last event.
- ``gauge:<key>``: a hash of appliance process -> its open count. Each process keeps
  ``alive:<process>`` (30 s TTL) refreshed every 10 s while it holds a gauge; the
  script that reads a gauge drops the fields of processes whose ``alive`` key has
  expired, so the sessions of a crashed appliance stop counting within 30 s.
- ``ban:<key>``: the reason, with the ban's time as the key's expiry (SET PX);
  listed with SCAN.

Scripts touch keys they build from the prefix; in a Redis Cluster the prefix is a
hash tag, so that all of them are in one slot (``redis_topology.py``).

Every call has ``[server.state] timeout``; after a failure Redis is tried again
at most once per ``retry_interval``, so a dead Redis delays one call per interval,
not every session. Meanwhile calls fail open (to the local table) or closed
(:class:`~appliance.state.counters.StoreUnavailable`), as each caller asks.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from collections import Counter
from typing import Any

import redis

from appliance import logs
from appliance.clients import redis_topology
from appliance.config import State
from appliance.state.counters import SLICES, StoreUnavailable

__all__ = ["RedisCounters"]

ALIVE_SECONDS = 30
HEARTBEAT_SECONDS = 10
#: A gauge nobody touched for this long is dropped whatever it says.
GAUGE_SECONDS = 24 * 3600

_HIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local width = tonumber(ARGV[1])
local slices = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local current = math.floor(now / width)
if amount > 0 then
  redis.call('HINCRBY', KEYS[1], current, amount)
  redis.call('PEXPIRE', KEYS[1], width * slices)
end
local total = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i]) <= current - slices then
    redis.call('HDEL', KEYS[1], all[i])
  else
    total = total + tonumber(all[i + 1])
  end
end
return total
"""

_ENTER = """
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
local total = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] == ARGV[1] or redis.call('EXISTS', ARGV[3] .. all[i]) == 1 then
    total = total + tonumber(all[i + 1])
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return total
"""

_LEAVE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
"""

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


class RedisCounters:
    """:class:`~appliance.state.counters.Counters` in Redis, with a local fallback."""

    def __init__(self, settings: State, fallback: Any | None) -> None:
        self.settings = settings
        self.prefix = redis_topology.key_prefix(settings)
        self.fallback = fallback
        self.client, self.where = redis_topology.connect(settings)
        self._hit = self.client.register_script(_HIT)
        self._enter = self.client.register_script(_ENTER)
        self._leave = self.client.register_script(_LEAVE)
        self._down_since: float | None = None
        self._next_try = 0.0
        self._pid = 0
        self._instance = ""
        self._held = 0                    # gauges this process holds in Redis
        self._heartbeat: Any = None
        self._local_held: Counter[str] = Counter()   # gauges that fell back
        self._unsent_leaves: Counter[str] = Counter()

    # --- the interface -----------------------------------------------------------------

    def hit(self, key: str, interval: float, amount: int = 1, fail: str = "open") -> int:
        return self._call(fail, lambda: self._slide(key, interval, int(amount)),
                          lambda f: f.hit(key, interval, amount))

    def hit_many(self, hits: list, fail: str = "open") -> list[int]:
        hits = [(key, float(interval), int(amount)) for key, interval, amount in hits]
        return self._call(fail, lambda: self._slide_many(hits),
                          lambda f: f.hit_many(hits))

    def count(self, key: str, interval: float, fail: str = "open") -> int:
        return self._call(fail, lambda: self._slide(key, interval, 0),
                          lambda f: f.count(key, interval))

    def _slide(self, key: str, interval: float, amount: int) -> int:
        width = max(1, round(float(interval) * 1000 / SLICES))
        return int(self._hit(keys=[self._window(key, interval)],
                             args=[width, SLICES, amount]))

    def _slide_many(self, hits: list) -> list[int]:
        """One pipeline (one round trip) of the window script, one call per hit."""
        if not hits:
            return []
        pipe = self.client.pipeline(transaction=False)
        for key, interval, amount in hits:
            width = max(1, round(interval * 1000 / SLICES))
            self._hit(keys=[self._window(key, interval)], args=[width, SLICES, amount],
                      client=pipe)
        return [int(n) for n in pipe.execute()]

    def enter(self, key: str, fail: str = "open") -> int:
        def in_redis() -> int:
            n = int(self._enter(keys=[self.prefix + "gauge:" + key, self._alive_key()],
                                args=[self._me(), ALIVE_SECONDS, self.prefix + "alive:",
                                      GAUGE_SECONDS]))
            self._held += 1
            self._keep_alive()
            return n

        def locally(f: Any) -> int:
            self._local_held[key] += 1
            return f.enter(key)

        return self._call(fail, in_redis, locally)

    def leave(self, key: str) -> None:
        if self._local_held[key] > 0:
            self._local_held[key] -= 1
            if not self._local_held[key]:
                del self._local_held[key]
            if self.fallback is not None:
                self.fallback.leave(key)
            return
        self._held = max(0, self._held - 1)

        def in_redis() -> None:
            self._leave(keys=[self.prefix + "gauge:" + key], args=[self._me()])

        def later(_f: Any) -> None:
            self._unsent_leaves[key] += 1

        self._call("open", in_redis, later, use_fallback=False)

    def ban(self, key: str, seconds: float, reason: str) -> None:
        ms = max(1, round(float(seconds) * 1000))
        self._call("open", lambda: self.client.set(self.prefix + "ban:" + key, reason, px=ms),
                   lambda f: f.ban(key, seconds, reason))

    def banned(self, key: str) -> float:
        def in_redis() -> float:
            ms = self.client.pttl(self.prefix + "ban:" + key)
            return ms / 1000 if ms > 0 else 0.0

        return self._call("open", in_redis, lambda f: f.banned(key))

    def bans(self) -> dict[str, tuple[float, str]]:
        def in_redis() -> dict[str, tuple[float, str]]:
            start = len(self.prefix) + len("ban:")
            pattern = _GLOB_SPECIAL.sub(r"\\\1", self.prefix) + "ban:*"
            names = list(self.client.scan_iter(match=pattern, count=1000))
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.pttl(name)
                pipe.get(name)
            values = pipe.execute()
            found = {}
            for i, name in enumerate(names):
                ms, reason = values[2 * i], values[2 * i + 1]
                if ms > 0 and reason is not None:
                    found[name[start:]] = (ms / 1000, reason)
            return found

        return self._call("open", in_redis, lambda f: f.bans())

    def unban(self, key: str) -> bool:
        lifted_here = self.fallback.unban(key) if self.fallback is not None else False
        lifted = self._call("open", lambda: bool(self.client.delete(self.prefix + "ban:" + key)),
                            lambda f: False)
        return lifted or lifted_here

    # --- outages -----------------------------------------------------------------------

    def _call(self, fail: str, in_redis, fallback, use_fallback: bool = True):
        now = time.monotonic()
        if self._down_since is None or now >= self._next_try:
            if self._down_since is not None:  # one probe per retry_interval
                self._next_try = now + float(self.settings.retry_interval)
            try:
                result = in_redis()
            except redis.RedisError as exc:
                self._went_down(now, exc)
            else:
                if self._down_since is not None:
                    self._came_back(now)
                return result
        if not use_fallback:
            return fallback(None)
        if fail == "closed" or self.fallback is None:
            raise StoreUnavailable(f"Redis at {self.where} is unreachable")
        return fallback(self.fallback)

    def _went_down(self, now: float, exc: Exception) -> None:
        self._next_try = now + float(self.settings.retry_interval)
        if self._down_since is None:
            self._down_since = now
            logs.event("state_store_down", level=logging.ERROR, redis=self.where,
                       error=str(exc) or type(exc).__name__,
                       note="limits fail open (local counts) or closed (451), as configured")

    def _came_back(self, now: float) -> None:
        logs.event("state_store_back", level=logging.WARNING, redis=self.where,
                   down_for=f"{now - self._down_since:.1f}s")
        self._down_since = None
        unsent, self._unsent_leaves = self._unsent_leaves, Counter()
        try:
            for key, n in unsent.items():
                for _ in range(n):
                    self._leave(keys=[self.prefix + "gauge:" + key], args=[self._me()])
        except redis.RedisError:
            pass  # the heartbeat's expiry settles them

    # --- gauges: which process holds what ----------------------------------------------

    def _me(self) -> str:
        """This process's name in gauges; a new one after a fork."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._instance = f"{socket.gethostname()}:{self._pid}:{uuid.uuid4().hex[:8]}"
            self._held, self._heartbeat = 0, None
        return self._instance

    def _alive_key(self) -> str:
        return self.prefix + "alive:" + self._me()

    def _keep_alive(self) -> None:
        if self._heartbeat is not None:
            return
        import gevent

        self._heartbeat = gevent.spawn(self._beat)

    def _beat(self) -> None:
        import gevent

        try:
            while self._held > 0:
                gevent.sleep(HEARTBEAT_SECONDS)
                try:
                    self.client.set(self._alive_key(), "1", ex=ALIVE_SECONDS)
                except redis.RedisError:
                    pass  # the outage is logged by the calls
        finally:
            self._heartbeat = None

    def _window(self, key: str, interval: float) -> str:
        return f"{self.prefix}win:{round(float(interval) * 1000)}:{key}"
