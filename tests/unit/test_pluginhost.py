"""The dispatch facade: order, first verdict wins, monitor mode, failures, trace.

Plugins are registered in-process here (no entry points) to test the facade in
isolation; the same behaviour through real entry points and a real server is
in tests/integration/test_plugins.py.
"""

from attrs import evolve

from appliance import Verdict, hookimpl
from appliance.config import PluginConfig
from appliance.hooks.host import PluginHost, discover
from appliance.mail.context import SessionContext, Transaction


class Says:
    def __init__(self, name, answer, seen):
        self.name, self.answer, self.seen = name, answer, seen

    @hookimpl
    def on_mail_from(self, transaction):
        self.seen.append(self.name)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def build(plugins, configs=None):
    found = {n: d for n, d in discover(plugins.items()).items() if n in plugins}
    configs = {n: (configs or {}).get(n, PluginConfig()) for n in plugins}
    return PluginHost.build(found, configs, 0)


def ctx():
    s = SessionContext(session_id="s", listener="l", local_ip="1", local_port=1,
                       remote_ip="2", remote_port=2)
    return s, Transaction(queue_id="q", mail_from="a@b")


def test_priority_order_and_first_refusal_wins():
    seen = []
    host = build({"late": Says("late", Verdict.accept(), seen),
                  "early": Says("early", None, seen),
                  "middle": Says("middle", Verdict.reject("no"), seen)},
                 {"late": PluginConfig(priority=30), "early": PluginConfig(priority=10),
                  "middle": PluginConfig(priority=20)})
    s, t = ctx()
    verdict, who = host.decide("mail_from", s, t)
    assert (verdict.action.value, who) == ("reject", "middle")
    assert seen == ["early", "middle"]
    assert [e.plugin for e in t.trace] == ["middle"] and s.trace == t.trace


def test_monitor_mode_is_traced_and_ignored():
    seen = []
    host = build({"watch": Says("watch", Verdict.reject("would"), seen)},
                 {"watch": PluginConfig(mode="monitor")})
    s, t = ctx()
    assert host.decide("mail_from", s, t) == (None, "")
    assert t.trace[0].mode == "monitor" and t.trace[0].action == "reject"


def test_exception_and_bad_return_become_451():
    for answer in (RuntimeError("boom"), "not a verdict"):
        host = build({"bad": Says("bad", answer, [])})
        s, t = ctx()
        verdict, who = host.decide("mail_from", s, t)
        assert verdict.reply_parts()[:2] == (451, "4.3.0") and who == "bad"


def test_disabled_plugin_not_registered():
    host = build({"off": Says("off", Verdict.reject(), [])},
                 {"off": evolve(PluginConfig(), enabled=False)})
    assert host.order == []
