"""The dnsbl plugin on real SessionContext and AppConfig objects and the real test
zones (unbound); the integration tests (test_sender_checks.py) cover it through the
server."""

from __future__ import annotations

import pytest
from appliance_plugins.dnsbl import DnsblArea, DnsblPlugin, Zone

from appliance.config import AppConfig, Listener
from appliance.dns import Resolver
from appliance.hooks.verdict import Action
from appliance.mail.context import SessionContext
from tests.dns_fixture import stall_name


@pytest.fixture(scope="module")
def resolver(dns_server):
    return Resolver([dns_server.nameserver], timeout=0.3, retries=0)


def session(ip: str, listener: str = "mta") -> SessionContext:
    return SessionContext(session_id="S1", listener=listener, local_ip="127.0.0.1",
                          local_port=25, remote_ip=ip, remote_port=4000)


def plugin(resolver, listeners: dict[str, DnsblArea] | None = None, **keys) -> DnsblPlugin:
    """The plugin configured with ``[dnsbl]`` = keys, listener "mta" sharing it and
    the ``listeners`` given with areas of their own."""
    area = DnsblArea(**keys)
    configured = {"mta": Listener(port=25, areas={"dnsbl": area})}
    for name, own in (listeners or {}).items():
        configured[name] = Listener(port=26, areas={"dnsbl": own})
    p = DnsblPlugin(DnsblPlugin.Config(enabled=True))
    p.on_configure(config=AppConfig(listeners=configured, areas={"dnsbl": area}), dns=resolver)
    return p


def test_listed_sets_the_seed_variables_and_rejects_with_the_txt(resolver):
    p = plugin(resolver, zones=[Zone(zone="dnsbl.test")])
    s = session("127.0.0.2")
    v = p.on_connect(s)
    assert v.reply_parts() == (554, "5.7.1",
                               "127.0.0.2 is listed, see https://dnsbl.test/q?127.0.0.2")
    assert (s.checks["dnsbl"].result, s.checks["dnsbl"].explanation) == ("127.0.0.2", v.text)
    clean = session("127.0.0.1")
    assert p.on_connect(clean) is None and clean.checks["dnsbl"].result == ""


def test_a_zone_without_txt_gets_the_default_text(resolver):
    p = plugin(resolver, zones=[Zone(zone="dnsbl.test", listed=["127.0.0.10"])])
    v = p.on_connect(session("127.0.0.6"))
    assert v.reply_parts() == (554, "5.7.1", "Client host [127.0.0.6] blocked using dnsbl.test")


def test_a_zone_that_does_not_answer_is_on_error(resolver):
    from appliance_plugins.dnsbl import Error

    zones = [Zone(zone=stall_name("bl"))]
    assert plugin(resolver, zones=zones).on_connect(session("127.0.0.2")) is None
    zones = [Zone(zone=stall_name("bl"))]
    p = plugin(resolver, zones=zones, on_error=Error(action="tmpreject"))
    v = p.on_connect(session("127.0.0.2"))
    assert v.action is Action.TMPREJECT
    assert v.reply_parts() == (451, "4.7.1", "Block list lookup failed, try again later")


def test_allow_zone_marks_the_session_and_skips_the_block_lists(resolver):
    p = plugin(resolver, zones=[Zone(zone="dnsbl.test"), Zone(zone="dnswl.test", kind="allow")])
    s = session("127.0.0.5")
    assert p.on_connect(s) is None
    assert s.checks.allow_listed is True and s.checks["dnsbl"].result == ""


def test_the_stage_decides_when_it_answers(resolver):
    p = plugin(resolver, zones=[Zone(zone="dnsbl.test")], stage="rcpt_to")
    s = session("127.0.0.2")
    assert p.on_connect(s) is None and p.on_mail_from(s) is None
    assert p.on_rcpt_to(s).action is Action.REJECT


def test_threshold_boundary(resolver):
    zones = [Zone(zone="dnsbl.test"), Zone(zone="dnsbl2.test")]
    p = plugin(resolver, zones=zones, threshold=2)
    both = session("127.0.0.2")                      # listed by both: score 2 = threshold
    assert p.on_connect(both).reply_parts()[:2] == (554, "5.7.1")
    one = session("127.0.0.7")                       # listed by dnsbl2.test only: score 1
    assert p.on_connect(one) is None and one.checks["dnsbl"].result == ""
    p = plugin(resolver, zones=zones, threshold=3)
    assert p.on_connect(session("127.0.0.2")) is None


def test_each_listener_gets_its_own_area(resolver):
    """A listener with its own [listeners.NAME.dnsbl] answers by it; the others by
    [dnsbl]; a listener the configuration does not know by [dnsbl] too."""
    own = DnsblArea(zones=[Zone(zone="dnsbl.test")], stage="rcpt_to")
    p = plugin(resolver, listeners={"submission": own, "off": DnsblArea()},
               zones=[Zone(zone="dnsbl.test")])
    assert p.on_connect(session("127.0.0.2")).reply_parts()[:2] == (554, "5.7.1")
    assert p.on_connect(session("127.0.0.2", "unknown")).action is Action.REJECT
    s = session("127.0.0.2", "submission")
    assert p.on_connect(s) is None and p.on_mail_from(s) is None
    assert p.on_rcpt_to(s).reply_parts()[:2] == (554, "5.7.1")
    s = session("127.0.0.2", "off")                  # no zones: no lookups at all
    assert p.on_connect(s) is None and "dnsbl" not in s.checks


def test_settings_are_compiled_once_per_area_instance(resolver):
    p = plugin(resolver, listeners={"submission": DnsblArea(stage="rcpt_to")},
               zones=[Zone(zone="dnsbl.test")])
    assert p.settings.listeners["mta"] is p.settings.fallback
    assert p.settings.listeners["submission"] is not p.settings.fallback
