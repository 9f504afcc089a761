"""A scale-out topology started by the test: a real HAProxy with the PROXY protocol in
front of two appliances, each with its own spool, sharing one real Redis. Clients
connect to HAProxy from several loopback source addresses (127.0.0.x).

Shown: the per-IP limit and the auto-ban hold across both instances; an access-list
deny of one source address works through HAProxy; kill -9 of one instance under load
loses no acknowledged message (each is in one of the two spools), HAProxy's SMTP
health check takes the dead one out and the other keeps serving, also while Redis is
stopped and started; HAProxy's version 1 header (``send-proxy``) works too."""

from __future__ import annotations

import smtplib
import socket
import threading
import uuid

import pytest

from tests.haproxy_fixture import HAProxy
from tests.peers import wait_for

from .conftest import read_reply
from .test_receive import talk

SHARED = """
[server.state]
backend = "redis"
redis_url = "{url}"
key_prefix = "{prefix}"
timeout = "250ms"
retry_interval = "1s"
[listeners.mta]
proxy_protocol = "{mode}"
proxy_trusted_networks = ["127.0.0.1"]
[relay]
local_domains = ["example.net"]
relay_networks = []
check_recipients = false
[flow]
exempt_networks = ["127.0.0.1"]   # HAProxy's own health checks (PROXY LOCAL)
{flow}
"""


@pytest.fixture
def topology(make_appliance, private_redis_server, tmp_path):
    """``topology(flow_toml, mode)``: (haproxy, [app_a, app_b], redis)."""
    started: list[HAProxy] = []

    def build(flow: str = "", mode: str = "v2", count: int = 2, extra: str = ""):
        prefix = f"scaleout-{uuid.uuid4().hex[:8]}:"
        config = SHARED.format(url=private_redis_server.url, prefix=prefix, mode=mode,
                               flow=flow) + extra
        apps = [make_appliance(config) for _ in range(count)]
        send = "send-proxy-v2" if mode == "v2" else "send-proxy"
        haproxy = HAProxy(tmp_path / "haproxy", {f"a{i + 1}": app.port
                                                 for i, app in enumerate(apps)}, send)
        started.append(haproxy.start())
        wait_for(lambda: set(haproxy.states().values()) == {"UP"}, "servers UP", 15)
        return haproxy, apps, private_redis_server

    yield build
    for haproxy in started:
        haproxy.stop()


def dial(haproxy: HAProxy, source: str) -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", haproxy.port), timeout=10,
                                 source_address=(source, 0))
    try:
        return s, read_reply(s)
    except ConnectionResetError:
        return s, b""


def greeting(haproxy: HAProxy, source: str) -> bytes:
    s, reply = dial(haproxy, source)
    if reply.startswith(b"220"):
        talk(s, b"QUIT\r\n")
    s.close()
    return reply


def message(source: str) -> tuple[str, bytes]:
    mid = f"<{uuid.uuid4().hex}@{source}>"
    return mid, (f"From: a@example.org\r\nTo: b@example.net\r\nMessage-ID: {mid}\r\n"
                 f"Subject: scale-out\r\n\r\nfrom {source}\r\n").encode()


def send(haproxy: HAProxy, source: str) -> str:
    """One message through HAProxy; its Message-ID once acknowledged with 250."""
    mid, text = message(source)
    with smtplib.SMTP("127.0.0.1", haproxy.port, timeout=10,
                      source_address=(source, 0)) as client:
        client.sendmail("a@example.org", ["b@example.net"], text)
    return mid


def spooled(app) -> str:
    return "".join(p.read_text(errors="replace") for p in (app.spool / "queue").glob("*.msg"))


def test_per_ip_limit_and_ban_hold_across_both_instances(topology):
    haproxy, (a, b), _ = topology("""
        [flow.connections_per_ip]
        limit = 4
        interval = "1m"
        [flow.autoban]
        relay_attempts = 1
        ban_time = "1h"
        action = "reject"
    """)
    for _ in range(4):
        assert greeting(haproxy, "127.0.0.5").startswith(b"220 ")
    # round robin: both instances counted the same client, in the one Redis
    assert "client=[127.0.0.5]" in a.log() and "client=[127.0.0.5]" in b.log()
    for _ in range(2):  # the fifth and sixth, whichever instance gets them
        reply = greeting(haproxy, "127.0.0.5")
        assert reply.startswith(b"421 4.7.0 mx.test.example") and b"127.0.0.5" in reply
    assert greeting(haproxy, "127.0.0.6").startswith(b"220 ")  # another client

    s, _ = dial(haproxy, "127.0.0.7")
    talk(s, b"EHLO relay.example\r\n")
    talk(s, b"MAIL FROM:<a@example.org>\r\n")
    for i in range(2):
        assert talk(s, b"RCPT TO:<x%d@elsewhere.example>\r\n" % i).startswith(b"554 5.7.1")
    talk(s, b"QUIT\r\n")
    s.close()
    banned = b"554 5.7.1 mx.test.example Client 127.0.0.7 is banned for repeated errors\r\n"
    wait_for(lambda: greeting(haproxy, "127.0.0.7") == banned, "the ban")
    assert [greeting(haproxy, "127.0.0.7") for _ in range(4)] == [banned] * 4
    assert "flow_refused" in a.log() + b.log()
    assert sum("client=[127.0.0.7]" in app.log() for app in (a, b)) == 2


def test_access_list_deny_through_haproxy(topology):
    haproxy, (a, b), _ = topology(extra='[access]\ndeny = ["127.0.0.9"]\n')
    for _ in range(2):
        assert greeting(haproxy, "127.0.0.9").startswith(b"554 5.7.1 mx.test.example Access")
    mids = [send(haproxy, "127.0.0.10") for _ in range(2)]
    text = spooled(a) + spooled(b)
    assert all(mid in text for mid in mids)
    assert "(unknown [127.0.0.10])" in text
    assert "access_refused" in a.log() and "access_refused" in b.log()


def test_kill_one_instance_under_load_loses_no_acknowledged_message(topology):
    haproxy, (a, b), redis = topology('[flow.connections_per_ip]\nlimit = 100000\n'
                                      'interval = "1m"\n')
    acked: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def client(source: str) -> None:
        while not stop.is_set():
            try:
                acked.append(send(haproxy, source))
            except (OSError, smtplib.SMTPException) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")  # never acknowledged

    threads = [threading.Thread(target=client, args=(f"127.0.0.{20 + i}",)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(acked) >= 40, "40 messages", 60)
        a.proc.kill()  # kill -9, in the middle of sessions
        a.proc.wait()
        wait_for(lambda: haproxy.states()["a1"] == "DOWN", "HAProxy taking a1 out", 15)
        assert haproxy.states()["a2"] == "UP"
        after_down = len(acked)
        wait_for(lambda: len(acked) >= after_down + 20, "20 more messages", 60)
        redis.stop()  # the shared counters gone: limits fail open, mail flows
        during = len(acked)
        wait_for(lambda: len(acked) >= during + 10, "10 messages without Redis", 60)
        redis.start()
        wait_for(lambda: "state_store_back" in b.log(), "Redis back in use", 30)
        back = len(acked)
        wait_for(lambda: len(acked) >= back + 10, "10 messages with Redis back", 60)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    text = spooled(a) + spooled(b)
    lost = [mid for mid in acked if mid not in text]
    assert lost == [], f"{len(lost)} acknowledged messages in neither spool"
    assert spooled(a) and spooled(b)  # both served before the kill
    assert "state_store_down" in b.log()
    assert len(failures) < len(acked)  # the failures are the kill's window


def test_send_proxy_version_1(topology):
    haproxy, (a,), _ = topology(mode="v1", count=1)
    mid = send(haproxy, "127.0.0.30")
    assert mid in spooled(a)
    assert "(unknown [127.0.0.30])" in spooled(a)
    assert "version=1" in a.log() and "client=[127.0.0.30]" in a.log()
