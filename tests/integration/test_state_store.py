"""The counters store in a real server: shared by the workers of one appliance, or
by two appliances through a real redis-server; and the `bans` command.

The ``test-counters`` fixture plugin counts one event per connection and client IP
(421 4.7.0 above ``limit``) and answers EHLO with "550 5.7.1 pid=P count=N", so a
test can tell which worker served a connection.
"""

from __future__ import annotations

import json
import re
import socket

from .conftest import read_reply


def probe(port: int, source_ip: str) -> tuple[bytes, int | None]:
    """Connect from ``source_ip``; return the greeting and the serving worker's pid
    (None when the greeting refused the connection)."""
    with socket.socket() as s:
        s.bind((source_ip, 0))
        s.connect(("127.0.0.1", port))
        greeting = read_reply(s)
        if not greeting.startswith(b"220"):
            return greeting, None
        s.sendall(b"EHLO client.example\r\n")
        reply = read_reply(s)
        s.sendall(b"QUIT\r\n")
        match = re.search(rb"pid=(\d+)", reply)
        assert match, reply
        return greeting, int(match.group(1))


def probe_config(limit: int, state: str = "", plugin: str = "", workers: int = 2) -> str:
    return f"""
        [server]
        workers = {workers}
        [plugins.test-counters]
        enabled = true
        limit = {limit}
        interval = "60s"
        {plugin}
        {state}
    """


def test_two_workers_share_a_per_ip_limit(make_appliance):
    limit = 6
    app = make_appliance(probe_config(limit))
    both_workers_seen = False
    for last in range(2, 40):  # each round from a fresh loopback address
        ip = f"127.0.0.{last}"
        pids = []
        for _ in range(limit):
            greeting, pid = probe(app.port, ip)
            assert greeting.startswith(b"220"), greeting
            pids.append(pid)
        greeting, _ = probe(app.port, ip)
        # The limit+1-th connection is refused whichever worker takes it.
        assert greeting.startswith(b"421 4.7.0"), greeting
        assert f"count={limit + 1}".encode() in greeting
        if len(set(pids)) == 2:
            both_workers_seen = True
            break
    assert both_workers_seen, "every connection went to one worker: sharing not shown"
    # Another address still gets in: the limit is per IP, and the server serves on.
    greeting, _ = probe(app.port, "127.0.0.250")
    assert greeting.startswith(b"220")


def test_two_appliances_share_a_limit_through_redis(make_appliance, redis_server):
    state = f"""
        [server.state]
        backend = "redis"
        redis_url = "{redis_server.url}"
        key_prefix = "shared-test:"
    """
    first = make_appliance(probe_config(3, state))
    second = make_appliance(probe_config(3, state))
    ip = "127.0.0.77"
    assert probe(first.port, ip)[0].startswith(b"220")
    assert probe(second.port, ip)[0].startswith(b"220")
    assert probe(first.port, ip)[0].startswith(b"220")
    greeting, _ = probe(second.port, ip)
    assert greeting.startswith(b"421 4.7.0") and b"count=4" in greeting, greeting


def test_bans_list_and_delete_with_redis(make_appliance, redis_server):
    import redis

    prefix = "bans-test:"
    app = make_appliance(f"""
        [server.state]
        backend = "redis"
        redis_url = "{redis_server.url}"
        key_prefix = "{prefix}"
    """, start=False)
    client = redis.Redis.from_url(redis_server.url)
    client.set(prefix + "ban:ip:192.0.2.66", "10 auth failures", ex=600)
    listed = app.cli("bans", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    bans = json.loads(listed.stdout)
    assert [b["key"] for b in bans] == ["ip:192.0.2.66"]
    assert bans[0]["reason"] == "10 auth failures"
    assert 590 < bans[0]["seconds_left"] <= 600
    text = app.cli("bans", "list")
    assert "ip:192.0.2.66" in text.stdout and "10 auth failures" in text.stdout
    deleted = app.cli("bans", "delete", "ip:192.0.2.66")
    assert deleted.returncode == 0, deleted.stderr
    assert client.exists(prefix + "ban:ip:192.0.2.66") == 0
    again = app.cli("bans", "delete", "ip:192.0.2.66")
    assert again.returncode == 1
    assert "no ban" in again.stderr


def test_bans_of_the_local_table_through_the_running_supervisor(make_appliance):
    app = make_appliance(probe_config(2, plugin='ban = "10m"'))
    ip = "127.0.0.88"
    assert probe(app.port, ip)[0].startswith(b"220")
    assert probe(app.port, ip)[0].startswith(b"220")
    assert probe(app.port, ip)[0].startswith(b"421 4.7.0")   # over the limit: banned
    for _ in range(4):  # whichever worker takes it
        greeting, _ = probe(app.port, ip)
        assert greeting.startswith(b"554 5.7.1") and b"banned for" in greeting, greeting

    listed = app.cli("bans", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    bans = json.loads(listed.stdout)
    assert [(b["key"], b["reason"]) for b in bans] == [(f"test-counters:{ip}", "more than 2")]
    assert 590 < bans[0]["seconds_left"] <= 600

    deleted = app.cli("bans", "delete", f"test-counters:{ip}")
    assert deleted.returncode == 0, deleted.stderr
    greeting, _ = probe(app.port, ip)
    assert greeting.startswith(b"421 4.7.0"), greeting   # no longer banned, still limited
    assert json.loads(app.cli("bans", "list", "--json").stdout)[0]["reason"] == "more than 2"


def test_bans_command_says_clearly_when_no_server_holds_the_local_table(make_appliance):
    app = make_appliance("", start=False)
    result = app.cli("bans", "list")
    assert result.returncode == 1
    assert "live in the running server" in result.stderr
    assert "state.sock" in result.stderr


def hold(port: int, source_ip: str) -> tuple[socket.socket, bytes, int | None]:
    """An open session from ``source_ip``: the socket, the greeting, the worker pid."""
    s = socket.socket()
    s.bind((source_ip, 0))
    s.connect(("127.0.0.1", port))
    greeting = read_reply(s)
    if not greeting.startswith(b"220"):
        s.close()
        return s, greeting, None
    s.sendall(b"EHLO client.example\r\n")
    match = re.search(rb"pid=(\d+)", read_reply(s))
    return s, greeting, int(match.group(1))


def refused_busy(greeting: bytes) -> bool:
    return greeting.startswith(b"421 4.7.0 ") and b"concurrency limit reached" in greeting


def test_workers_share_a_concurrency_gauge_and_a_dead_workers_sessions_stop_counting(
        make_appliance):
    import os
    import signal
    import time

    app = make_appliance(probe_config(1000, plugin="max_concurrent = 2"))
    ip = "127.0.0.99"
    held = []
    for _ in range(100):  # open sessions until both workers hold one, 2 at most
        # (which worker accepts is the kernel's choice: often the same one for a while)
        s, greeting, pid = hold(app.port, ip)
        if pid is None:
            assert refused_busy(greeting), greeting
            continue
        held.append((s, pid))
        if len(held) == 2:
            if held[0][1] != held[1][1]:
                break
            held.pop()[0].close()
            time.sleep(0.05)  # let the server see that session end
    assert len(held) == 2 and held[0][1] != held[1][1], "one worker took every session"
    s, greeting, _ = hold(app.port, ip)
    assert refused_busy(greeting), greeting

    # A worker killed outright never says "leave": the supervisor drops its sessions.
    os.kill(held[0][1], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        s, greeting, pid = hold(app.port, ip)
        if pid is not None:
            break
        assert time.monotonic() < deadline, "the dead worker's session still counts"
        time.sleep(0.1)
    s.close()
    for sock, _ in held:
        sock.close()


def test_redis_outage_in_a_running_server_fails_open_logs_once_and_recovers(
        make_appliance, private_redis_server):
    import time

    state = f"""
        [server.state]
        backend = "redis"
        redis_url = "{private_redis_server.url}"
        retry_interval = "100ms"
    """
    app = make_appliance(probe_config(3, state, workers=1))
    closed = make_appliance(probe_config(3, state, plugin='fail = "closed"', workers=1))
    ip = "127.0.0.111"
    assert probe(app.port, ip)[0].startswith(b"220")
    private_redis_server.stop()
    for _ in range(3):  # counted locally from 1 again: still limited at 3
        greeting, _ = probe(app.port, ip)
        assert greeting.startswith(b"220"), greeting
    assert probe(app.port, ip)[0].startswith(b"421 4.7.0")
    # fail closed: the plugin's StoreUnavailable is a temporary failure, never a crash
    greeting, _ = probe(closed.port, ip)
    assert greeting[:1] == b"4", greeting
    assert probe(app.port, "127.0.0.112")[0].startswith(b"220")  # still serving

    private_redis_server.start()
    deadline = time.monotonic() + 10
    while "state_store_back" not in app.log():
        assert time.monotonic() < deadline, app.log()
        probe(app.port, "127.0.0.113")
        time.sleep(0.1)
    assert probe(app.port, ip)[0].startswith(b"220")  # Redis is empty: counting anew
    log = app.log()
    assert log.count("state_store_down") == 1, log
    assert log.count("state_store_back") == 1, log


def test_counts_survive_a_reload_that_keeps_server_state(make_appliance):
    import signal
    import time

    app = make_appliance(probe_config(3))
    ip = "127.0.0.120"
    assert probe(app.port, ip)[0].startswith(b"220")
    assert probe(app.port, ip)[0].startswith(b"220")
    app.signal(signal.SIGHUP)   # forwarded to each worker, which reloads
    deadline = time.monotonic() + 10
    while app.log().count("reloaded") < 2:
        assert time.monotonic() < deadline, app.log()
        time.sleep(0.05)
    assert probe(app.port, ip)[0].startswith(b"220")
    greeting, _ = probe(app.port, ip)
    assert greeting.startswith(b"421 4.7.0") and b"count=4" in greeting, greeting
