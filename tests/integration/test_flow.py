"""Flow control and error control (the built-in ``flow`` plugin) against the real
server: every limit at its exact boundary with its reply, reset after the interval,
other clients still served, exemptions, client grouping, monitor mode, tarpit,
pregreet and auto-ban. Clients use 127.0.0.x source addresses to be different
clients (Linux routes all of 127/8 to loopback)."""

from __future__ import annotations

import base64
import json
import signal
import smtplib
import socket
import threading
import time
import uuid

import pytest

from .conftest import read_reply
from .test_receive import MSG, stored, talk

HOST = b"mx.test.example"


def flow(extra: str = "", exempt: str = "[]") -> str:
    """A conf.d fragment: loopback is exempt by default, so tests un-exempt it."""
    return f"[flow]\nexempt_networks = {exempt}\n{extra}\n"


@pytest.fixture(params=["local", "redis"])
def store(request) -> str:
    """The counters backend as a conf.d fragment: the in-process table, or a real
    redis-server (each test its own key prefix)."""
    if request.param == "local":
        return ""
    redis = request.getfixturevalue("redis_server")
    return (f'[server.state]\nbackend = "redis"\nredis_url = "{redis.url}"\n'
            f'key_prefix = "flow-test-{uuid.uuid4().hex[:12]}:"\n')


def dial(app, src: str = "127.0.0.1", host: str = "127.0.0.1", port: int | None = None):
    """Connect from ``src``; returns (socket, first reply)."""
    s = socket.create_connection((host, port or app.port), timeout=10,
                                 source_address=(src, 0))
    return s, read_reply(s)


def closed(s: socket.socket) -> bool:
    s.settimeout(10)
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True


def until_closed(s: socket.socket) -> bytes:
    s.settimeout(10)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def refusal(text: str, code: int = 421, enhanced: str = "4.7.0") -> bytes:
    return b"%d %s %s %s\r\n" % (code, enhanced.encode(), HOST, text.encode())


def eventually(check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def greeted(app, src="127.0.0.1") -> bool:
    s, reply = dial(app, src)
    s.close()
    return reply.startswith(b"220 ")


# --- connection limits ---------------------------------------------------------------------


def test_concurrent_connections_per_ip(make_appliance, store):
    app = make_appliance(store + flow("[flow.concurrent_connections_per_ip]\nlimit = 3"))
    held = [dial(app) for _ in range(3)]
    assert all(reply.startswith(b"220 ") for _, reply in held)
    for _ in range(3):
        s, reply = dial(app)
        assert reply == refusal("Too many concurrent connections from 127.0.0.1 (limit 3),"
                                " try again later")
        assert closed(s)
    # Another client is served meanwhile, and the held sessions still work.
    other, reply = dial(app, "127.0.0.2")
    assert reply.startswith(b"220 ")
    assert talk(held[0][0], b"NOOP\r\n").startswith(b"250")
    # Ending one session frees its place.
    assert talk(held[0][0], b"QUIT\r\n").startswith(b"221")
    assert eventually(lambda: greeted(app))
    assert app.log().count("flow_refused") == 1  # once per interval, however many refusals
    for sock, _ in held[1:]:
        sock.close()


def test_concurrent_limit_holds_across_workers(make_appliance, store):
    app = make_appliance(store + "[server]\nworkers = 2\n"
                         + flow("[flow.concurrent_connections_per_ip]\nlimit = 2"))
    for last in range(2, 8):  # each round a new client; the workers take turns at random
        ip = f"127.0.0.{last}"
        held = [dial(app, ip) for _ in range(2)]
        assert all(reply.startswith(b"220 ") for _, reply in held)
        assert dial(app, ip)[1].startswith(b"421 4.7.0"), "a worker did not see the others"
        for s, _ in held:
            s.close()


def test_limits_survive_a_reload(make_appliance, store):
    app = make_appliance(store + flow("[flow.concurrent_connections_per_ip]\nlimit = 1"))
    held, reply = dial(app, "127.0.0.2")
    assert reply.startswith(b"220 ")
    app.signal(signal.SIGHUP)
    assert eventually(lambda: "reloaded" in app.log())
    # The new configuration's plugin sees the session the old one let in ...
    assert dial(app, "127.0.0.2")[1].startswith(b"421 4.7.0")
    # ... and the old one's end frees the place.
    assert talk(held, b"QUIT\r\n").startswith(b"221")
    assert eventually(lambda: greeted(app, "127.0.0.2"))


def test_concurrent_gauge_released_after_drop_and_timeout(make_appliance, store):
    app = make_appliance(store + flow("[flow.concurrent_connections_per_ip]\nlimit = 2")
                         + '[limits]\ncommand_timeout = "1s"\n')
    dropped = [dial(app)[0] for _ in range(2)]
    for s in dropped:  # the client vanishes without QUIT
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    idle = [dial(app) for _ in range(2)]
    assert all(reply.startswith(b"220 ") for _, reply in idle)
    assert not greeted(app)
    for s, _ in idle:  # the server times them out
        assert read_reply(s, timeout=10).startswith(b"421 4.4.2")
    assert eventually(lambda: greeted(app))
    rude = [dial(app)[0] for _ in range(2)]
    for s in rude:  # the core ends these for too many bad commands
        s.sendall(b"FOO\r\n" * 9)
        assert b"\r\n421 4.7.0 Too many errors" in until_closed(s)
    assert eventually(lambda: greeted(app))


def test_connections_per_ip_per_interval_resets(make_appliance, store):
    app = make_appliance(store + flow('[flow.connections_per_ip]\nlimit = 3\ninterval = "2s"'))
    # (127.0.0.1 made the fixture's readiness probe: these tests use other clients)
    for _ in range(3):
        assert greeted(app, "127.0.0.10")
    s, reply = dial(app, "127.0.0.10")
    assert reply == refusal("Too many connections from 127.0.0.10 (limit 3 per 2s),"
                            " try again later")
    assert closed(s)
    assert greeted(app, "127.0.0.2")  # another client is not affected
    time.sleep(2.2)
    assert greeted(app, "127.0.0.10")


def test_new_connections_per_listener(make_appliance, store):
    app = make_appliance(store + flow('[flow.new_connections]\nlimit = 2\ninterval = "2s"'))
    time.sleep(2.2)  # the fixture's readiness probe was a connection too
    assert greeted(app, "127.0.0.2")
    assert greeted(app, "127.0.0.3")
    s, reply = dial(app, "127.0.0.4")
    assert reply == refusal("Too many new connections to this service (limit 2 per 2s),"
                            " try again later")
    assert closed(s)
    time.sleep(2.2)
    assert greeted(app, "127.0.0.4")


def test_ipv4_clients_grouped_by_prefix(make_appliance):
    app = make_appliance(flow("ipv4_prefix = 24\n[flow.concurrent_connections_per_ip]\n"
                              "limit = 1"))
    held, reply = dial(app, "127.0.0.2")
    assert reply.startswith(b"220 ")
    s, reply = dial(app, "127.0.0.3")  # same /24: the same client
    assert reply == refusal("Too many concurrent connections from 127.0.0.0/24 (limit 1),"
                            " try again later")
    held.close()


def test_ipv6_client_grouped_by_64(make_appliance):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    app = make_appliance(flow("[flow.concurrent_connections_per_ip]\nlimit = 1"),
                         listeners={"mta6": {"address": "::1"}})
    held, reply = dial(app, "::1", "::1")
    assert reply.startswith(b"220 ")
    s, reply = dial(app, "::1", "::1")
    assert reply == refusal("Too many concurrent connections from ::/64 (limit 1),"
                            " try again later")
    held.close()


# --- rate limits ----------------------------------------------------------------------------


def mail(s, sender=b"a@example.org") -> bytes:
    reply = talk(s, b"MAIL FROM:<%s>\r\n" % sender)
    if reply.startswith(b"250"):
        talk(s, b"RSET\r\n")
    return reply


def test_messages_per_ip(make_appliance, store):
    app = make_appliance(store + flow('[flow.messages_per_ip]\nlimit = 2\ninterval = "2s"'))
    s, _ = dial(app)
    talk(s, b"EHLO client.example\r\n")
    assert mail(s).startswith(b"250")
    assert mail(s).startswith(b"250")
    assert mail(s) == (b"451 4.7.1 Too many messages from 127.0.0.1 (limit 2 per 2s),"
                       b" try again later\r\n")
    assert talk(s, b"NOOP\r\n").startswith(b"250")  # the session goes on
    other, _ = dial(app, "127.0.0.2")
    talk(other, b"EHLO other.example\r\n")
    assert mail(other).startswith(b"250")
    time.sleep(2.2)
    assert mail(s).startswith(b"250")


def test_recipients_per_ip(make_appliance, store):
    app = make_appliance(store + flow('[flow.recipients_per_ip]\nlimit = 3\ninterval = "1m"'))
    s, _ = dial(app)
    talk(s, b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n")
    for i in range(3):
        assert talk(s, b"RCPT TO:<r%d@example.net>\r\n" % i).startswith(b"250 2.1.5")
    assert talk(s, b"RCPT TO:<r4@example.net>\r\n") == (
        b"451 4.7.1 Too many recipients from 127.0.0.1 (limit 3 per 1m), try again later\r\n")
    other, _ = dial(app, "127.0.0.2")
    talk(other, b"EHLO other.example\r\nMAIL FROM:<a@example.org>\r\n")
    assert talk(other, b"RCPT TO:<o@example.net>\r\n").startswith(b"250 2.1.5")
    # The accepted ones are delivered.
    assert talk(s, b"DATA\r\n").startswith(b"354")
    assert talk(s, MSG + b".\r\n").startswith(b"250")
    env, _ = stored(app)
    assert len(env["recipients"]) == 3


def test_messages_per_sender_domain(make_appliance, store):
    app = make_appliance(store + flow("[flow.messages_per_sender_domain]\nlimit = 1"))
    s, _ = dial(app)
    talk(s, b"EHLO client.example\r\n")
    assert mail(s, b"a@example.org").startswith(b"250")
    assert mail(s, b"b@Example.ORG") == (
        b"451 4.7.1 Too many messages from sender domain example.org (limit 1 per 1m),"
        b" try again later\r\n")
    assert mail(s, b"c@other.example").startswith(b"250")
    assert mail(s, b"").startswith(b"250")  # the null sender has no domain to count


# --- error control ----------------------------------------------------------------------------

BAD_RCPT = """
[plugins.test-scripted]
enabled = true
[[plugins.test-scripted.rules]]
event = "rcpt_to"
action = "reject"
match = "bad"
code = 550
enhanced = "5.1.1"
text = "No such user"
[[plugins.test-scripted.rules]]
event = "rcpt_to"
action = "reject"
match = "relay"
code = 550
enhanced = "5.7.1"
text = "Relay access denied"
"""


# --- exemptions -----------------------------------------------------------------------------


def test_exempt_networks_and_allow_listed(make_appliance):
    app = make_appliance(
        flow("[flow.concurrent_connections_per_ip]\nlimit = 1", exempt='["127.0.0.2/32"]')
        + '[access]\nallow = ["127.0.0.3"]\n')
    for src in ("127.0.0.2", "127.0.0.3"):
        held = [dial(app, src) for _ in range(3)]
        assert all(reply.startswith(b"220 ") for _, reply in held), src
    first, reply = dial(app)
    assert reply.startswith(b"220 ")
    assert dial(app)[1].startswith(b"421 4.7.0")


def test_allow_listed_not_exempt_when_configured(make_appliance):
    app = make_appliance(flow("exempt_allow_listed = false\n"
                              "[flow.concurrent_connections_per_ip]\nlimit = 1")
                         + '[access]\nallow = ["127.0.0.3"]\n')
    held, _ = dial(app, "127.0.0.3")
    assert dial(app, "127.0.0.3")[1].startswith(b"421 4.7.0")
    held.close()


def test_loopback_exempt_by_default(make_appliance):
    app = make_appliance("[flow.concurrent_connections_per_ip]\nlimit = 1\n")
    held = [dial(app) for _ in range(3)]
    assert all(reply.startswith(b"220 ") for _, reply in held)


# --- monitor mode ------------------------------------------------------------------------------


def test_limit_in_monitor_mode_logs_and_traces(make_appliance):
    app = make_appliance(flow('[flow.messages_per_ip]\nlimit = 1\nmode = "monitor"'))
    with smtplib.SMTP("127.0.0.1", app.port) as c:
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    env, _ = stored(app)
    flow_trace = [e for e in env["trace"]  # (debug logging also traces "continue")
                  if e["plugin"] == "flow" and e["action"] != "continue"]
    assert flow_trace == [{"event": "mail_from", "plugin": "flow", "action": "tmpreject",
                           "code": 451, "enhanced": "4.7.1",
                           "text": "Too many messages from 127.0.0.1 (limit 1 per 1m),"
                                   " try again later", "mode": "monitor"}]
    log = app.log()
    assert "flow_would_refuse" in log and "limit=messages_per_ip" in log
    assert "flow_refused" not in log


def test_plugin_in_monitor_mode_refuses_nothing(make_appliance):
    app = make_appliance(flow("[flow.concurrent_connections_per_ip]\nlimit = 1")
                         + '[plugins.flow]\nmode = "monitor"\n')
    held = [dial(app) for _ in range(2)]
    assert all(reply.startswith(b"220 ") for _, reply in held)
    log = app.log()
    assert "flow_would_refuse" in log
    assert "trace connect flow abort 421 4.7.0" in log and "(monitor)" in log


# --- tarpit and pregreet -----------------------------------------------------------------------


def test_tarpit_delays_only_the_erring_session(make_appliance):
    app = make_appliance(flow('[flow.tarpit]\ndelay = "3s"\nafter_errors = 2'))
    slow, _ = dial(app)
    talk(slow, b"EHLO client.example\r\n")
    assert talk(slow, b"FOO\r\n").startswith(b"500")
    started = time.monotonic()
    assert talk(slow, b"EHLO client.example\r\n").startswith(b"250")  # one error: no delay
    assert talk(slow, b"BAR\r\n").startswith(b"500")
    done = []

    def tarpitted():
        done.append(talk(slow, b"EHLO client.example\r\n"))
        done.append(time.monotonic() - started)

    t = threading.Thread(target=tarpitted)
    t.start()
    other, reply = dial(app, "127.0.0.2")
    assert reply.startswith(b"220 ")
    assert talk(other, b"EHLO other.example\r\n").startswith(b"250")
    assert not done, "another client waited for the tarpit"
    t.join(10)
    assert done[0].startswith(b"250") and done[1] >= 2.9


def test_pregreet_client_is_dropped(make_appliance):
    app = make_appliance(flow('[flow.pregreet]\ndelay = "1s"'))
    s = socket.create_connection(("127.0.0.1", app.port), timeout=10)
    s.sendall(b"EHLO impatient.example\r\n")
    assert read_reply(s) == refusal("Protocol error: talking before the greeting",
                                    554, "5.7.1")
    assert closed(s)
    # A polite client waits for the banner and is served.
    with smtplib.SMTP("127.0.0.1", app.port, timeout=10) as c:
        assert c.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    assert "pregreet" in app.log()


def test_pregreet_in_monitor_mode_keeps_what_the_client_sent(make_appliance):
    app = make_appliance(flow('[flow.pregreet]\ndelay = "1s"\nmode = "monitor"'))
    s = socket.create_connection(("127.0.0.1", app.port), timeout=10)
    s.sendall(b"EHLO impatient.example\r\n")
    replies = read_reply(s)  # the banner, then the answer to the early EHLO
    if replies.count(b"\r\n") == 1:
        replies += read_reply(s)
    assert replies.startswith(b"220 " + HOST)
    assert b"\r\n250-" + HOST + b" Hello impatient.example" in replies
    assert "flow_would_refuse" in app.log()


# --- auto-ban ---------------------------------------------------------------------------------

AUTOBAN = """
[flow.autoban]
bad_recipients = 2
relay_attempts = 1
window = "1m"
ban_time = "{ban_time}"
action = "{action}"
"""


def bans(app) -> dict:
    out = app.cli("bans", "list", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_autoban_after_bad_recipients(make_appliance, store):
    app = make_appliance(store + flow(AUTOBAN.format(ban_time="3s", action="abort")) + BAD_RCPT)
    s, _ = dial(app)
    talk(s, b"EHLO harvester.example\r\nMAIL FROM:<a@example.org>\r\n")
    for i in range(3):  # two are allowed; the third is one too many
        assert talk(s, b"RCPT TO:<bad%d@example.net>\r\n" % i).startswith(b"550 5.1.1")
    assert talk(s, b"RCPT TO:<good@example.net>\r\n") == (
        b"421 4.7.0 Client 127.0.0.1 is temporarily banned for repeated errors,"
        b" try again later\r\n")
    assert closed(s)
    s, reply = dial(app)
    assert reply == refusal("Client 127.0.0.1 is temporarily banned for repeated errors,"
                            " try again later")
    assert greeted(app, "127.0.0.2")  # only that client
    assert "flow_banned" in app.log()
    time.sleep(3.2)
    assert greeted(app)


def test_autoban_relay_attempts_reject_and_bans_cli(make_appliance, store):
    app = make_appliance(store + flow(AUTOBAN.format(ban_time="1h", action="reject")) + BAD_RCPT)
    s, _ = dial(app)
    talk(s, b"EHLO relay.example\r\nMAIL FROM:<a@example.org>\r\n")
    for i in range(2):
        assert talk(s, b"RCPT TO:<relay%d@elsewhere.example>\r\n" % i).startswith(b"550 5.7.1")
    assert talk(s, b"QUIT\r\n").startswith(b"221")  # counted at the end of the session
    s.close()

    def banned():
        s, reply = dial(app)
        s.close()
        return reply == refusal("Client 127.0.0.1 is banned for repeated errors", 554, "5.7.1")

    assert eventually(banned)
    listed = bans(app)
    assert "flow:127.0.0.1" in json.dumps(listed)
    assert "relay attempts" in json.dumps(listed)
    out = app.cli("bans", "delete", "flow:127.0.0.1")
    assert out.returncode == 0, out.stderr
    assert greeted(app)


# --- configuration ---------------------------------------------------------------------------


def test_config_errors_name_file_and_key(make_appliance):
    app = make_appliance(flow("[flow.connections_per_ip]\nlimt = 3\n"
                              '[flow.messages_per_ip]\ninterval = 5\n'), start=False)
    out = app.cli("check-config")
    assert out.returncode == 1
    assert "50-extra.toml: flow.connections_per_ip.limt: unknown key 'limt'" in out.stdout
    assert "50-extra.toml: flow.messages_per_ip.interval: expected a duration" in out.stdout


# --- the shared store down ----------------------------------------------------------------


def test_store_outage_fails_open_or_closed_per_limit(make_appliance, private_redis_server):
    redis = private_redis_server
    app = make_appliance(
        f'[server.state]\nbackend = "redis"\nredis_url = "{redis.url}"\n'
        'timeout = "200ms"\nretry_interval = "500ms"\n'
        + flow('[flow.connections_per_ip]\nlimit = 100\non_store_failure = "closed"\n'
               "[flow.messages_per_ip]\nlimit = 100\n"
               '[flow.recipients_per_ip]\nlimit = 100\non_store_failure = "closed"\n'))
    s, _ = dial(app, "127.0.0.2")
    talk(s, b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n")
    assert talk(s, b"RCPT TO:<b@example.net>\r\n").startswith(b"250")
    redis.stop()
    assert talk(s, b"RSET\r\n").startswith(b"250")
    assert mail(s).startswith(b"250")  # messages_per_ip fails open: counted locally
    assert talk(s, b"MAIL FROM:<a@example.org>\r\n").startswith(b"250")
    assert talk(s, b"RCPT TO:<b@example.net>\r\n") == (
        b"451 4.3.0 Flow control state unavailable, try again later\r\n")
    assert talk(s, b"NOOP\r\n").startswith(b"250")  # the session goes on
    other, reply = dial(app, "127.0.0.3")  # connections_per_ip fails closed
    assert reply == refusal("Flow control state unavailable, try again later", 421, "4.3.0")
    assert closed(other)
    redis.start()
    assert eventually(lambda: greeted(app, "127.0.0.3"), timeout=10)
    assert talk(s, b"RCPT TO:<b@example.net>\r\n").startswith(b"250")


# --- with AUTH -------------------------------------------------------------------------------

PASSWORD = "correct horse battery staple"


def auth_config(tmp_path) -> str:
    from appliance.users import make_entry, write_users

    users = tmp_path / "users.toml"
    write_users(users, {u: make_entry(u, PASSWORD, ["PLAIN"], "mx.test.example")
                        for u in ("alice", "bob")})
    return (f'[auth]\nusers_file = "{users}"\nplaintext_mechanisms = ["PLAIN"]\n'
            'failure_delay = "0s"\nmax_failures = 3\n')


def login(s, user: str, password: str = PASSWORD) -> bytes:
    token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
    return talk(s, b"AUTH PLAIN " + token + b"\r\n")


def test_messages_per_authenticated_user(make_appliance, store, tmp_path):
    app = make_appliance(store + auth_config(tmp_path)
                         + flow("[flow.messages_per_user]\nlimit = 2"))
    s, _ = dial(app, "127.0.0.2")
    talk(s, b"EHLO client.example\r\n")
    assert login(s, "alice").startswith(b"235")
    assert mail(s).startswith(b"250") and mail(s).startswith(b"250")
    assert mail(s) == (b"451 4.7.1 Too many messages from user alice (limit 2 per 1m),"
                       b" try again later\r\n")
    # The same user from another client is still alice; bob is not.
    other, _ = dial(app, "127.0.0.3")
    talk(other, b"EHLO client.example\r\n")
    assert login(other, "alice").startswith(b"235")
    assert mail(other).startswith(b"451 4.7.1")
    third, _ = dial(app, "127.0.0.4")
    talk(third, b"EHLO client.example\r\n")
    assert login(third, "bob").startswith(b"235")
    assert mail(third).startswith(b"250")


def test_autoban_after_auth_failures(make_appliance, store, tmp_path):
    app = make_appliance(store + auth_config(tmp_path)
                         + flow("[flow.autoban]\nauth_failures = 4"))
    for session_failures in (3, 2):  # 3 end the first session (auth.max_failures)
        s, _ = dial(app, "127.0.0.2")
        talk(s, b"EHLO guesser.example\r\n")
        for _ in range(session_failures):
            reply = login(s, "alice", "wrong")
        assert reply.startswith(b"421 4.7.0" if session_failures == 3 else b"535 5.7.8")
        s.close()

    def banned():
        s, reply = dial(app, "127.0.0.2")
        s.close()
        return reply.startswith(b"421 4.7.0 " + HOST + b" Client 127.0.0.2 is temporarily banned")

    assert eventually(banned)
    assert greeted(app, "127.0.0.3")
