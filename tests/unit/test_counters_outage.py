"""Redis going away and coming back, with a real redis-server stopped mid-test."""

from __future__ import annotations

import logging
import time

import pytest

from appliance.clients.redis import RedisCounters
from appliance.config import Duration, State
from appliance.state import LocalCounters
from appliance.state.counters import StoreUnavailable
from appliance.state.table import LocalTable


def events(caplog, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


@pytest.fixture
def store(private_redis_server):
    settings = State(backend="redis", redis_url=private_redis_server.url,
                     key_prefix="outage:", timeout=Duration("250ms"),
                     retry_interval=Duration("100ms"))
    local = LocalCounters(LocalTable())
    store = RedisCounters(settings, fallback=local)
    yield store
    store.client.close()


def until_back(store, timeout: float = 10.0) -> int:
    """Call with fail="closed" until Redis answers again; return that count."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return store.hit("after", 60, fail="closed")
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_outage_fails_open_or_closed_logs_once_and_recovers(
        store, private_redis_server, caplog):
    caplog.set_level(logging.INFO, logger="smtp_appliance")
    assert store.hit("ip:192.0.2.1", 60) == 1
    assert store.hit("ip:192.0.2.1", 60) == 2

    private_redis_server.stop()
    # fail open: counting goes on in the local table (which starts from zero)
    assert store.hit("ip:192.0.2.1", 60, fail="open") == 1
    assert store.hit("ip:192.0.2.1", 60, fail="open") == 2
    assert store.count("ip:192.0.2.1", 60) == 2
    # fail closed: the caller is told
    with pytest.raises(StoreUnavailable):
        store.hit("ip:192.0.2.1", 60, fail="closed")
    with pytest.raises(StoreUnavailable):
        store.enter("sessions:192.0.2.1", fail="closed")
    # bans fail open to the local table
    store.ban("ip:203.0.113.9", 60, "during outage")
    assert store.banned("ip:203.0.113.9") > 50
    time.sleep(0.15)  # past retry_interval: the next call tries Redis again, and fails
    assert store.hit("ip:192.0.2.1", 60) == 3
    assert len(events(caplog, "state_store_down")) == 1
    assert events(caplog, "state_store_back") == []

    private_redis_server.start()  # same port, empty (no persistence)
    assert until_back(store) == 1  # counted in Redis again, not locally
    assert store.hit("ip:192.0.2.1", 60) == 1
    assert len(events(caplog, "state_store_down")) == 1
    assert len(events(caplog, "state_store_back")) == 1


def test_hit_many_fails_open_or_closed_as_a_whole(store, private_redis_server, caplog):
    caplog.set_level(logging.INFO, logger="smtp_appliance")
    hits = [("ip:192.0.2.2", 60, 1), ("domain:example.org", 60, 1)]
    assert store.hit_many(hits) == [1, 1]
    private_redis_server.stop()
    assert store.hit_many(hits, fail="open") == [1, 1]  # in the local table now
    assert store.hit_many(hits, fail="open") == [2, 2]
    with pytest.raises(StoreUnavailable):
        store.hit_many(hits, fail="closed")
    assert store.fallback.count("ip:192.0.2.2", 60) == 2  # the refused call counted nothing
    assert len(events(caplog, "state_store_down")) == 1
    private_redis_server.start()
    until_back(store)
    assert store.hit_many(hits, fail="closed") == [1, 1]  # Redis again (restarted empty)


def test_a_gauge_entered_during_an_outage_is_left_where_it_was_entered(
        store, private_redis_server):
    assert store.enter("g") == 1
    private_redis_server.stop()
    assert store.enter("g", fail="open") == 1          # local
    private_redis_server.start()
    until_back(store)
    store.leave("g")                                  # the local one
    assert store.fallback.enter("g") == 1             # local is back to 0 (+1 now)
    assert store.enter("g") == 1                      # Redis is a new empty server


def test_a_dead_redis_never_crashes_a_caller(store, private_redis_server):
    private_redis_server.stop()
    for n in range(1, 51):
        assert store.hit("k", 60) == n
        assert store.enter("g") == 1
        store.leave("g")
        assert store.banned("k") == 0.0
    assert store.bans() == {}
    assert store.unban("k") is False


def test_sessions_of_a_crashed_appliance_stop_counting_in_redis(
        private_redis_server, monkeypatch):
    """Each appliance process keeps an ``alive`` key while it holds gauges; a process
    that crashed stops refreshing it, and its share of every gauge is dropped."""
    from appliance.clients import redis as redis_store

    monkeypatch.setattr(redis_store, "ALIVE_SECONDS", 1)
    settings = State(backend="redis", redis_url=private_redis_server.url, key_prefix="crash:")
    crashed = RedisCounters(settings, fallback=None)
    survivor = RedisCounters(settings, fallback=None)
    crashed._instance, crashed._pid = "crashed-host:1:aaaa", __import__("os").getpid()
    assert crashed.enter("sessions:192.0.2.1") == 1
    assert crashed.enter("sessions:192.0.2.1") == 2
    assert survivor.enter("sessions:192.0.2.1") == 3   # the crashed one is still alive
    survivor.leave("sessions:192.0.2.1")
    deadline = time.monotonic() + 10
    while survivor.enter("sessions:192.0.2.1") != 1:   # its alive key expires (1 s)
        survivor.leave("sessions:192.0.2.1")
        assert time.monotonic() < deadline, "the crashed appliance's sessions still count"
        time.sleep(0.1)


def test_sentinel_failover_moves_the_counters_to_the_new_master(redis_sentinel, caplog):
    """A real Sentinel promotes the replica: after at most one failing call the store
    counts on the new master, with what was replicated to it."""
    caplog.set_level(logging.INFO, logger="smtp_appliance")
    sentinel, service = redis_sentinel["sentinel"], redis_sentinel["service"]
    settings = State(backend="redis", redis_mode="sentinel", redis_nodes=redis_sentinel["nodes"],
                     redis_service=service, key_prefix="failover:",
                     retry_interval=Duration("100ms"))
    store = RedisCounters(settings, fallback=LocalCounters(LocalTable()))
    try:
        assert store.hit("ip:192.0.2.1", 60, fail="closed") == 1
        before = int(sentinel.sentinel_get_master_addr_by_name(service)[1])
        import redis

        replica = next(port for port in (redis_sentinel["master"], redis_sentinel["replica"])
                       if port != before)
        with redis.Redis(port=replica, socket_timeout=5) as copy:
            deadline = time.monotonic() + 10  # the count reaches the replica
            while not list(copy.scan_iter(match="failover:win:*")):
                assert time.monotonic() < deadline, "not replicated"
                time.sleep(0.05)
        sentinel.sentinel_failover(service)
        deadline = time.monotonic() + 20
        while sentinel.sentinel_master(service)["port"] == before:  # what clients ask
            assert time.monotonic() < deadline, "no failover"
            time.sleep(0.1)
        assert until_back(store) == 1  # on the new master (a key of its own)
        assert store.hit("ip:192.0.2.1", 60, fail="closed") == 2  # replicated, and on
        assert store.client.connection_pool.get_master_address()[1] != before
    finally:
        store.client.close()
