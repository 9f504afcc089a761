"""The dispatch facade: order, first verdict wins, monitor mode, failures, trace,
wrapper hooks refused, the time budget of every call.

Plugins are registered in-process here (no entry points) to test the facade in
isolation; the same behaviour through real entry points and a real server is
in tests/integration/test_plugins.py.
"""

import time

import gevent
import pytest
from attrs import evolve

from appliance import Verdict, hookimpl
from appliance.config import PluginConfig
from appliance.hooks.budgets import TimeBudgetExceeded, TimeBudgets
from appliance.hooks.host import Discovered, PluginHost, discover
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


# --- monitored verdicts: the plugin says so, the host traces -------------------------------


def test_a_monitored_verdict_is_traced_logged_and_the_next_plugin_asked(caplog):
    seen = []
    host = build({"watch": Says("watch", Verdict.reject("would").as_monitor(), seen),
                  "next": Says("next", Verdict.tmpreject("later"), seen)},
                 {"watch": PluginConfig(priority=10), "next": PluginConfig(priority=20)})
    s, t = ctx()
    with caplog.at_level("INFO", logger="smtp_appliance.plugins"):
        verdict, who = host.decide("mail_from", s, t)
    assert (verdict.action.value, who) == ("tmpreject", "next") and seen == ["watch", "next"]
    assert [str(e) for e in t.trace] == [
        "mail_from watch reject 550 5.7.1 'would' (monitor)",
        "mail_from next tmpreject 451 4.7.1 'later'"]
    assert s.trace == t.trace
    assert "trace mail_from watch reject 550 5.7.1 'would' (monitor)" in caplog.text
    traced = [r.fields for r in caplog.records if r.getMessage().startswith("trace ")]
    assert traced and all(f == {"session": "s"} for f in traced)


def test_several_limits_of_one_call_monitored_then_one_enforced():
    answer = (Verdict.tmpreject("per ip").as_monitor()
              .then(Verdict.tmpreject("per user").as_monitor())
              .then(Verdict.abort("per domain")))
    host = build({"flow": Says("flow", answer, [])})
    s, t = ctx()
    verdict, _ = host.decide("mail_from", s, t)
    assert verdict.action.value == "abort"
    assert [(e.text, e.mode) for e in t.trace] == [
        ("per ip", "monitor"), ("per user", "monitor"), ("per domain", "enforce")]


def test_a_stopping_verdict_is_not_overridden_by_a_later_one():
    refused = Verdict.reject("first")
    assert refused.then(Verdict.accept()) is refused
    assert Verdict.reject("x").as_monitor().then(None).stops is False


def test_monitored_garbage_is_a_bad_return_value():
    bad = Verdict(Verdict.accept().action, monitored=("not a verdict",))
    host = build({"bad": Says("bad", bad, [])})
    s, t = ctx()
    verdict, who = host.decide("mail_from", s, t)
    assert verdict.reply_parts()[:2] == (451, "4.3.0") and who == "bad"


# --- wrapper hooks: refused at load ----------------------------------------------------------


class Wrapper:
    @hookimpl(wrapper=True)
    def on_mail_from(self, transaction):
        return (yield)


class OldStyleWrapper:
    @hookimpl(hookwrapper=True)
    def on_rcpt_to(self, transaction):
        yield


def test_wrapper_hooks_skip_their_plugin_with_a_clear_error(caplog):
    with caplog.at_level("ERROR", logger="smtp_appliance.plugins"):
        host = build({"wraps": Wrapper(), "old": OldStyleWrapper(),
                      "plain": Says("plain", Verdict.reject("plain"), [])})
    assert host.order == ["plain"]
    assert sorted(host.errors) == [
        "plugin old: PluginValidationError: hook 'on_rcpt_to' is a wrapper (wrapper=True"
        " or hookwrapper=True), which smtp-appliance does not support: implement it as a"
        " plain hook",
        "plugin wraps: PluginValidationError: hook 'on_mail_from' is a wrapper"
        " (wrapper=True or hookwrapper=True), which smtp-appliance does not support:"
        " implement it as a plain hook"]
    assert "plugin wraps" in caplog.text and "plugin skipped" in caplog.text
    s, t = ctx()
    assert host.decide("mail_from", s, t)[1] == "plain"  # not a 451 from a generator


# --- time budgets: every hook call, first-result hooks too ----------------------------------


class SlowQueue:
    def __init__(self, seconds):
        self.seconds = seconds

    @hookimpl
    def queue_message(self, transaction):
        gevent.sleep(self.seconds)
        return "Q1"


def test_first_result_hooks_are_bounded_by_the_budget():
    host = PluginHost.build({"slow": Discovered("slow", SlowQueue(5))},
                            {"slow": PluginConfig()}, 0.2)
    s, t = ctx()
    for _ in range(2):  # the greenlet's budget fires again after a first timeout
        started = time.monotonic()
        with pytest.raises(TimeBudgetExceeded, match="took longer than 0.2s"):
            host.first("queue_message", session=s, transaction=t, message=None)
        assert time.monotonic() - started < 2
    fast = PluginHost.build({"fast": Discovered("fast", SlowQueue(0.01))},
                            {"fast": PluginConfig()}, 0.2)
    assert fast.first("queue_message", session=s, transaction=t, message=None) == (
        "Q1", "fast")


def test_a_hook_asked_inside_a_timed_hook_is_timed_too():
    budgets = TimeBudgets(0.2)
    inner = []

    def outer():
        with pytest.raises(TimeBudgetExceeded):
            budgets.run(lambda: gevent.sleep(5))
        inner.append("timed out")
        return "outer done"

    assert budgets.run(outer) == "outer done" and inner == ["timed out"]
    assert budgets.run(lambda: "again") == "again"
