"""Real peers killed (SIGKILL) in the middle of an SMTP session: Redis (the shared
state store), unbound (DNS), opendkim (a milter) and postgrey (a policy server),
each a private instance started here. The session gets the documented answer for
a dead peer (a 4xx, or the fail-open default where one is documented), the server
logs it, and it keeps serving others."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.dns_fixture import DnsServer
from tests.milter_fixture import OpenDKIM
from tests.postgrey_fixture import Postgrey
from tests.redis_fixture import RedisServer

from .test_faults import MESSAGE
from .test_receive import connect, talk


def kill(peer) -> None:
    peer.proc.kill()
    peer.proc.wait()


def in_transaction(app):
    sock = connect(app)
    assert talk(sock, b"EHLO client.example\r\n").startswith(b"250")
    return sock


def still_serving(app) -> None:
    """A new session is greeted and answered."""
    s = connect(app)
    assert talk(s, b"EHLO other.example\r\n").startswith(b"250")
    assert talk(s, b"NOOP\r\n").startswith(b"250")
    s.close()


def test_redis_killed_mid_session_fails_open(make_appliance, tmp_path):
    redis = RedisServer(tmp_path / "redis").start()
    try:
        app = make_appliance(f"""
            [server.state]
            backend = "redis"
            redis_url = "{redis.url}"
            retry_interval = "100ms"
            [flow]
            exempt_networks = []
            [flow.recipients_per_ip]
            limit = 100
        """)
        sock = in_transaction(app)
        assert talk(sock, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")
        assert talk(sock, b"RCPT TO:<b@example.net>\r\n").startswith(b"250")
        kill(redis)
        # counted locally from here on ([server.state] fails open, docs/configuration.md)
        assert talk(sock, b"RCPT TO:<c@example.net>\r\n").startswith(b"250")
        assert talk(sock, b"DATA\r\n").startswith(b"354")
        assert talk(sock, MESSAGE).startswith(b"250 2.0.0")
        sock.close()
        assert "state_store_down" in app.log()
        still_serving(app)
    finally:
        redis.stop()


def test_dns_killed_mid_session_gives_spf_temperror(make_appliance, tmp_path):
    dns = DnsServer(tmp_path / "dns").start()
    try:
        app = make_appliance(dns.toml(timeout="1s") + """
            [plugins.spf]
            enabled = true
            [spf]
            timeout = "2s"
        """)
        sock = in_transaction(app)
        assert talk(sock, b"MAIL FROM:<alice@pass.spf.test>\r\n").startswith(b"250")
        assert talk(sock, b"RSET\r\n").startswith(b"250")
        kill(dns)
        reply = talk(sock, b"MAIL FROM:<bob@neutral.spf.test>\r\n")
        assert reply.startswith(b"451 4.7.24 "), reply  # [spf.on_temperror]
        sock.close()
        assert "spf temperror for neutral.spf.test" in app.log()
        still_serving(app)
    finally:
        dns.stop()


def test_milter_killed_mid_session_gives_its_default_action(make_appliance):
    root = Path(tempfile.mkdtemp(prefix="dkim-"))
    milter = OpenDKIM(root).start()
    try:
        app = make_appliance(f"""
            [[milter.milters]]
            name = "opendkim"
            socket = "{milter.socket}"
            default_action = "tempfail"
        """)
        sock = in_transaction(app)
        assert talk(sock, b"MAIL FROM:<a@test.example>\r\n").startswith(b"250")
        kill(milter)
        replies = [talk(sock, b"RCPT TO:<b@example.net>\r\n")]
        if replies[-1].startswith(b"250"):
            replies.append(talk(sock, b"DATA\r\n"))
            if replies[-1].startswith(b"354"):
                replies.append(talk(sock, MESSAGE))
        assert replies[-1].startswith(b"451 4.7.1 "), replies
        assert app.queued() == []
        sock.close()
        assert "milter opendkim failed" in app.log()
        still_serving(app)
    finally:
        milter.stop()


def test_policy_server_killed_mid_session_gives_its_default_action(make_appliance):
    postgrey = Postgrey().start()
    try:
        app = make_appliance(f"""
            [[policy.servers]]
            name = "postgrey"
            address = "{postgrey.address}"
            default_action = "tmpreject"
        """)
        sock = in_transaction(app)
        assert talk(sock, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")
        first = talk(sock, b"RCPT TO:<b@example.net>\r\n")
        assert first.startswith(b"450 4.2.0 "), first  # postgrey greylists: it is alive
        kill(postgrey)
        reply = talk(sock, b"RCPT TO:<c@example.net>\r\n")
        assert reply.startswith(b"451 4.3.0 Policy server unavailable"), reply
        sock.close()
        assert "policy_server_unavailable" in app.log()
        still_serving(app)
    finally:
        postgrey.stop()
