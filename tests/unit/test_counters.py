"""The counters contract, run unchanged against every backend:

- ``local``: the table in shared memory (one process here; the tests at the end
  fork real worker processes that count in it together);
- ``redis``: a real redis-server (tests/redis_fixture.py).

Expiry is checked by polling with a generous deadline, never by timing.
"""

from __future__ import annotations

import os
import time
import uuid

import gevent
import gevent.socket
import pytest

from appliance.config import State
from appliance.state import LocalCounters, StateKeeper
from appliance.state.control import ControlClient, ControlService
from appliance.state.counters import Counters
from appliance.state.table import PROBES, LocalTable

SHORT = 0.3  # seconds: the interval of expiry tests
BRIEF = 1.0  # seconds: an interval that must not pass between two steps of a test


def eventually(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def redis_settings(request, kind: str) -> State:
    """``[server.state]`` for one of the real Redis topologies (tests/redis_topologies.py)."""
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    if kind == "redis":
        return State(backend="redis", redis_url=request.getfixturevalue("redis_server").url,
                     key_prefix=prefix)
    if kind == "redis-sentinel":
        sentinel = request.getfixturevalue("redis_sentinel")
        return State(backend="redis", redis_mode="sentinel", redis_nodes=sentinel["nodes"],
                     redis_service=sentinel["service"], key_prefix=prefix)
    if kind == "redis-cluster":
        return State(backend="redis", redis_mode="cluster", key_prefix=prefix,
                     redis_nodes=request.getfixturevalue("redis_cluster"))
    tls = request.getfixturevalue("redis_tls")
    return State(backend="redis", redis_url=tls["url"], redis_tls_ca=tls["ca"],
                 redis_tls_certificate=tls["certificate"], redis_tls_key=tls["key"],
                 key_prefix=prefix)


@pytest.fixture(params=["local", "redis", "redis-sentinel", "redis-cluster", "redis-tls"])
def counters(request) -> Counters:
    if request.param == "local":
        yield LocalCounters(LocalTable())
    else:
        from appliance.clients.redis import RedisCounters

        store = RedisCounters(redis_settings(request, request.param),
                              fallback=None)  # an outage would raise
        yield store
        store.client.close()


def test_implements_the_protocol(counters):
    assert isinstance(counters, Counters)


# --- windows ---------------------------------------------------------------------------


def test_hit_counts_every_event_exactly(counters):
    for n in range(1, 6):
        assert counters.hit("ip:192.0.2.1", 60) == n
    assert counters.count("ip:192.0.2.1", 60) == 5
    assert counters.hit("ip:192.0.2.1", 60, amount=3) == 8
    assert counters.count("ip:192.0.2.1", 60) == 8


def test_count_adds_nothing_and_unknown_keys_are_zero(counters):
    assert counters.count("ip:192.0.2.9", 60) == 0
    assert counters.count("ip:192.0.2.9", 60) == 0
    assert counters.hit("ip:192.0.2.9", 60) == 1


def test_keys_and_intervals_are_separate_windows(counters):
    counters.hit("a", 60)
    counters.hit("a", 60)
    assert counters.hit("b", 60) == 1
    assert counters.hit("a", 3600) == 1
    assert counters.count("a", 60) == 2


def test_events_stop_counting_after_the_interval(counters):
    for _ in range(3):
        counters.hit("burst", SHORT)
    assert eventually(lambda: counters.count("burst", SHORT) == 0)
    assert counters.hit("burst", SHORT) == 1


def test_a_limit_is_reached_exactly_and_resets_after_the_interval(counters):
    limit = 4

    def allowed() -> bool:
        return counters.hit("conn:198.51.100.7", BRIEF) <= limit

    results = [allowed() for _ in range(limit + 2)]
    assert results == [True] * limit + [False, False]
    assert eventually(lambda: counters.count("conn:198.51.100.7", BRIEF) == 0)
    assert allowed()


def test_hit_many_counts_like_hit_in_one_call(counters):
    counters.hit("ip:192.0.2.20", 60)
    hits = [("ip:192.0.2.20", 60, 1), ("domain:example.org", 60, 2), ("ip:192.0.2.20", 3600, 1)]
    assert counters.hit_many(hits) == [2, 2, 1]
    assert counters.hit_many(hits) == [3, 4, 2]
    # the same key twice in one call counts twice, in order
    assert counters.hit_many([("dup", 60, 1), ("dup", 60, 1)]) == [1, 2]
    assert counters.count("ip:192.0.2.20", 60) == 3
    assert counters.count("domain:example.org", 60) == 4
    assert counters.hit("domain:example.org", 60) == 5
    assert counters.hit_many([]) == []


def test_hit_many_reaches_a_limit_exactly_and_resets_after_the_interval(counters):
    limit = 3
    hits = [("rcpt-ip:198.51.100.8", BRIEF, 1), ("rcpt-domain:example.net", 60, 1)]
    results = [counters.hit_many(hits) for _ in range(limit + 1)]
    assert [ip <= limit for ip, _ in results] == [True] * limit + [False]
    assert [d for _, d in results] == [1, 2, 3, 4]
    assert eventually(lambda: counters.count("rcpt-ip:198.51.100.8", BRIEF) == 0)
    assert counters.hit_many(hits) == [1, 5]


# --- gauges ----------------------------------------------------------------------------


def test_gauge_goes_up_and_down(counters):
    assert counters.enter("sessions:192.0.2.1") == 1
    assert counters.enter("sessions:192.0.2.1") == 2
    assert counters.enter("sessions:192.0.2.2") == 1
    counters.leave("sessions:192.0.2.1")
    assert counters.enter("sessions:192.0.2.1") == 2


def test_gauge_never_goes_below_zero(counters):
    counters.enter("g")
    for _ in range(3):
        counters.leave("g")
    counters.leave("never-entered")
    assert counters.enter("g") == 1
    assert counters.enter("never-entered") == 1


# --- bans ------------------------------------------------------------------------------


def test_ban_is_in_force_listed_and_lifted(counters):
    assert counters.banned("ip:203.0.113.5") == 0.0
    counters.ban("ip:203.0.113.5", 30, "5 auth failures")
    left = counters.banned("ip:203.0.113.5")
    assert 25 < left <= 30
    listed = counters.bans()
    assert set(listed) == {"ip:203.0.113.5"}
    assert 25 < listed["ip:203.0.113.5"][0] <= 30
    assert listed["ip:203.0.113.5"][1] == "5 auth failures"
    assert counters.unban("ip:203.0.113.5") is True
    assert counters.banned("ip:203.0.113.5") == 0.0
    assert counters.bans() == {}
    assert counters.unban("ip:203.0.113.5") is False


def test_a_new_ban_replaces_the_old_one(counters):
    counters.ban("k", 30, "first")
    counters.ban("k", 300, "second")
    assert counters.banned("k") > 290
    assert counters.bans()["k"][1] == "second"


def test_bans_expire(counters):
    counters.ban("short", BRIEF, "test")
    counters.ban("long", 60, "test")
    assert counters.banned("short") > 0
    assert eventually(lambda: counters.banned("short") == 0.0)
    assert set(counters.bans()) == {"long"}
    assert counters.unban("short") is False


# --- the local table's own promises ----------------------------------------------------


def test_local_table_memory_is_capped_dropping_the_window_nearest_its_end():
    now = [1000.0]
    table = LocalTable(max_keys=PROBES, clock=lambda: now[0])  # every key probes every slot
    for i in range(PROBES):
        table.hit(f"k{i}", 3600)
        now[0] += 60  # a later slice: a later end
    table.hit("k0", 3600)          # k0 now ends last; k1 is nearest its end
    table.hit("new", 3600)
    assert table.count("k1", 3600) == 0
    assert table.count("k0", 3600) == 2
    assert all(table.count(f"k{i}", 3600) == 1 for i in range(2, PROBES))
    assert table.count("new", 3600) == 1


def test_an_expired_window_frees_its_slot():
    now = [1000.0]
    table = LocalTable(max_keys=PROBES, clock=lambda: now[0])
    for i in range(PROBES):
        table.hit(f"k{i}", 10)
    now[0] += 11
    for i in range(PROBES):  # all expired: each new key takes a free slot
        assert table.hit(f"n{i}", 10) == 1
    assert table.hit("n0", 10) == 2


def test_window_slices_count_an_event_at_least_95_percent_of_the_interval():
    now = [1000.05]  # inside a slice, not on its edge
    table = LocalTable(clock=lambda: now[0])
    table.hit("k", 10)
    now[0] += 9.45
    assert table.count("k", 10) == 1
    now[0] += 0.51
    assert table.count("k", 10) == 0


def _in_worker(table: LocalTable, owner: int, work) -> int:
    """Fork a real worker process that counts in ``table`` as column ``owner``."""
    pid = os.fork()
    if pid == 0:
        try:
            table.owner = owner
            work(table)
        finally:
            os._exit(0)
    return pid


def test_forked_workers_count_in_one_table_exactly():
    table = LocalTable(owners=3)

    def work(t: LocalTable) -> None:
        for _ in range(500):
            t.hit("k", 60)
        t.hit_many([("m", 60, 2)] * 50)
        t.enter("ip")
        t.ban("ip:192.0.2.7", 60, "auth failures")

    pids = [_in_worker(table, owner, work) for owner in (1, 2)]
    for pid in pids:
        assert os.waitpid(pid, 0)[1] == 0
    assert table.count("k", 60) == 1000  # the lock lost none of the 1000 hits
    assert table.count("m", 60) == 200
    assert table.gauge("ip") == 2
    assert table.bans()["ip:192.0.2.7"][1] == "auth failures"


def test_a_dead_workers_gauges_are_dropped():
    table = LocalTable(owners=3)
    pid = _in_worker(table, 1, lambda t: [t.enter("ip"), t.enter("ip")])
    os.waitpid(pid, 0)
    table.owner = 2
    assert table.enter("ip") == 3
    table.drop_owner(1)
    assert table.gauge("ip") == 1
    table.leave("ip")
    assert table.gauge("ip") == 0
    table.leave("ip")  # never below zero, and not another worker's count
    assert table.gauge("ip") == 0


def test_the_admins_command_reads_and_lifts_bans_through_the_control_socket():
    table = LocalTable()
    table.ban("ip:192.0.2.7", 60, "relay attempts")
    service_end, command_end = gevent.socket.socketpair()
    glet = gevent.spawn(ControlService(LocalCounters(table)).serve, service_end)
    client = ControlClient(command_end)
    assert client.bans()["ip:192.0.2.7"][1] == "relay attempts"
    assert client.banned("ip:192.0.2.7") > 59
    assert client.unban("ip:192.0.2.7") is True
    assert table.banned("ip:192.0.2.7") == 0.0
    with pytest.raises(ValueError):
        client.call("hit", "k", 60)  # the command may not count
    command_end.close()
    glet.join(5)


def test_the_control_socket_answers_the_servers_own_operations():
    def reload():
        raise ValueError("reload refused: 70-broken.toml: limits.max_recipients")

    service_end, command_end = gevent.socket.socketpair()
    service = ControlService(LocalCounters(LocalTable()),
                             {"status": lambda: {"pid": 7}, "reload": reload})
    glet = gevent.spawn(service.serve, service_end)
    client = ControlClient(command_end)
    assert client.call("status") == {"pid": 7}
    with pytest.raises(ValueError, match="70-broken.toml: limits.max_recipients"):
        client.call("reload")
    assert client.bans() == {}  # the ban operations still answered
    command_end.close()
    glet.join(5)


def test_keeper_reuses_the_store_while_state_settings_are_unchanged():
    keeper = StateKeeper()
    first = keeper.counters_for(State())
    first.hit("k", 60)
    again = keeper.counters_for(State())
    assert again is first
    resized = keeper.counters_for(State(max_keys=5000))
    assert resized.count("k", 60) == 1  # the same local table, counts kept


def test_the_admins_command_is_told_when_the_server_is_gone():
    from appliance.state.counters import StoreUnavailable

    service_end, command_end = gevent.socket.socketpair()
    client = ControlClient(command_end)
    service_end.close()
    with pytest.raises(StoreUnavailable):
        client.bans()
