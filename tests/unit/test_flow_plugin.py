"""The flow plugin's hooks with the real in-process counters and real contexts, for
what needs an authenticated session: the authenticated user and the auth-failure
count are set here the way the core's AUTH sets them (``core_set``). Everything
else is covered against the real server in tests/integration/test_flow.py."""

from __future__ import annotations

import textwrap

import pytest
from appliance_plugins.flow import FlowControl
from appliance_plugins.flow.settings import FlowSettings

from appliance.config import PluginConfig, State, load_config
from appliance.hooks.verdict import Action
from appliance.mail.context import SessionContext, Transaction, core_set
from appliance.state import open_counters


@pytest.fixture
def make_plugin(tmp_path):
    def make(flow_toml: str, mode: str = "enforce") -> FlowControl:
        (tmp_path / "10.toml").write_text(textwrap.dedent(f"""
            [listeners.mta]
            port = 2525
            [queue]
            directory = "{tmp_path / 'spool'}"
            [flow]
            exempt_networks = []
        """) + textwrap.dedent(flow_toml))
        config = load_config(tmp_path, {"flow": PluginConfig}, {"flow": FlowSettings})
        plugin = FlowControl(PluginConfig(mode=mode))
        plugin.on_configure(config, open_counters(State(), None))
        return plugin
    return make


def session(ip: str = "192.0.2.7", user: str = "") -> SessionContext:
    ctx = SessionContext(session_id="S1", listener="mta", local_ip="192.0.2.1",
                         local_port=25, remote_ip=ip, remote_port=40000)
    if user:
        core_set(ctx, "auth_user", user)  # what the core's AUTH will do
    return ctx


def mail(sender: str = "a@example.org") -> Transaction:
    return Transaction(queue_id="Q", mail_from=sender)


def test_messages_and_recipients_per_user(make_plugin):
    plugin = make_plugin("""
        [flow.messages_per_user]
        limit = 2
        [flow.recipients_per_user]
        limit = 1
    """)
    alice = session(user="Alice")
    assert plugin.on_connect(alice) is None
    assert plugin.on_mail_from(alice, mail()) is None
    assert plugin.on_mail_from(alice, mail()) is None
    refused = plugin.on_mail_from(alice, mail())
    assert refused.action is Action.TMPREJECT
    assert refused.reply_parts() == (451, "4.7.1", "Too many messages from user Alice"
                                                    " (limit 2 per 1m), try again later")
    # The same user from another address is the same user; another user is not.
    elsewhere = session("198.51.100.9", user="alice")
    plugin.on_connect(elsewhere)
    assert plugin.on_mail_from(elsewhere, mail()).action is Action.TMPREJECT
    bob = session(user="bob")
    plugin.on_connect(bob)
    assert plugin.on_mail_from(bob, mail()) is None
    assert plugin.on_rcpt_to(bob, mail()) is None
    assert plugin.on_rcpt_to(bob, mail()).reply_parts()[:2] == (451, "4.7.1")
    # Unauthenticated sessions are not counted per user.
    anonymous = session("203.0.113.5")
    plugin.on_connect(anonymous)
    for _ in range(5):
        assert plugin.on_mail_from(anonymous, mail()) is None


def test_autoban_on_auth_failures(make_plugin):
    plugin = make_plugin("[flow.autoban]\nauth_failures = 4\n")
    first = session()
    plugin.on_connect(first)
    core_set(first, "auth_failures", 2)
    plugin.on_disconnect(first)  # counted at the end of the session
    second = session()
    assert plugin.on_connect(second) is None
    core_set(second, "auth_failures", 3)  # 2 + 3 > 4 in the window
    assert plugin.on_ehlo(second).reply_parts()[:2] == (421, "4.7.0")
    assert "flow:192.0.2.7" in plugin.counters.bans()
    third = session()
    assert plugin.on_connect(third).action is Action.ABORT


def test_plugin_monitor_mode_takes_no_side_effects(make_plugin):
    plugin = make_plugin("[flow.autoban]\nbad_recipients = 1\n", mode="monitor")
    ctx = session()
    plugin.on_connect(ctx)
    core_set(ctx, "bad_recipients", 5)
    plugin.on_disconnect(ctx)
    assert plugin.counters.bans() == {}


class CountingStore:
    """The real in-process counters, with a tally of the calls the plugin makes
    (each would be a round trip to the supervisor or to Redis)."""

    def __init__(self, store) -> None:
        self.store = store
        self.calls: list[str] = []

    def __getattr__(self, name):
        method = getattr(self.store, name)

        def call(*args, **kwargs):
            self.calls.append(name)
            return method(*args, **kwargs)
        return call


def test_the_limits_of_one_command_cost_one_store_call(make_plugin):
    plugin = make_plugin("""
        [flow.messages_per_ip]
        limit = 2
        [flow.messages_per_user]
        limit = 100
        [flow.messages_per_sender_domain]
        limit = 100
        [flow.recipients_per_ip]
        limit = 100
        [flow.recipients_per_sender_domain]
        limit = 100
    """)
    store = plugin.counters = CountingStore(plugin.counters)
    alice = session(user="alice")
    plugin.on_connect(alice)
    store.calls.clear()
    assert plugin.on_mail_from(alice, mail()) is None
    assert store.calls == ["hit_many"]  # per IP, per user and per domain together
    assert plugin.on_rcpt_to(alice, mail()) is None
    assert store.calls == ["hit_many"] * 2  # recipients_per_user is off: not counted
    assert plugin.on_mail_from(alice, mail()) is None
    refused = plugin.on_mail_from(alice, mail())  # the 3rd message from this IP
    assert refused.reply_parts() == (451, "4.7.1", "Too many messages from 192.0.2.7"
                                                    " (limit 2 per 1m), try again later")
    # the refused message was counted for the user and the domain too
    assert store.store.count("flow:messages:user:mta:alice", 60) == 3
    assert store.store.count("flow:messages:domain:mta:example.org", 60) == 3
    # the server keeps serving others
    other = session("198.51.100.3")
    plugin.on_connect(other)
    assert plugin.on_mail_from(other, mail()) is None


def test_no_store_call_when_every_limit_is_off(make_plugin):
    plugin = make_plugin("""
        [flow.connections_per_ip]
        limit = 0
        [flow.concurrent_connections_per_ip]
        limit = 0
        [flow.concurrent_connections_per_network]
        limit = 0
    """)
    store = plugin.counters = CountingStore(plugin.counters)
    s = session()
    assert plugin.on_connect(s) is None
    assert plugin.on_mail_from(s, mail()) is None
    assert plugin.on_rcpt_to(s, mail()) is None
    plugin.on_disconnect(s)
    assert store.calls == []
