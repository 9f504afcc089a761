"""The access plugin's decision on real SessionContext and AppConfig objects (no
server: the integration tests in tests/integration/test_access.py cover that)."""

from __future__ import annotations

import pytest
from appliance_plugins.access import AccessArea, AccessPlugin
from attrs.exceptions import FrozenAttributeError

from appliance.config import AppConfig, Listener, PluginConfig
from appliance.hooks.verdict import Action
from appliance.mail.context import SessionContext
from tests.unit.plugin_host import ask


def session(ip: str, listener: str = "mta") -> SessionContext:
    return SessionContext(session_id="S1", listener=listener, local_ip="127.0.0.1",
                          local_port=25, remote_ip=ip, remote_port=4000)


def plugin(global_area: AccessArea, mode: str = "enforce", **listener_areas) -> AccessPlugin:
    listeners = {"mta": Listener(port=25, areas={"access": global_area})}
    for name, area in listener_areas.items():
        listeners[name] = Listener(port=26, areas={"access": area})
    p = AccessPlugin(AccessPlugin.Config(mode=mode))
    p.on_configure(AppConfig(listeners=listeners, areas={"access": global_area}))
    return p


def test_allow_wins_and_marks_the_session():
    p = plugin(AccessArea(deny=["10.0.0.0/8"], allow=["10.1.2.3"]))
    s = session("10.1.2.3")
    assert p.on_connect(s) is None and s.checks.allow_listed is True
    s = session("10.1.2.4")
    v = p.on_connect(s)
    assert (v.action, v.reply_parts()) == (Action.REJECT, (554, "5.7.1", "Access denied"))
    assert s.checks.allow_listed is False


def test_check_results_are_writable_but_core_fields_are_not():
    s = session("192.0.2.1")
    s.checks.record("access", "allow", allow_listed=True)
    with pytest.raises(FrozenAttributeError):
        s.remote_ip = "192.0.2.2"


def test_default_deny_and_default_allow():
    assert plugin(AccessArea()).on_connect(session("192.0.2.1")) is None
    v = plugin(AccessArea(default="deny", deny_text="Partners only")).on_connect(
        session("192.0.2.1"))
    assert v.reply_parts() == (554, "5.7.1", "Partners only")


def test_close_is_an_abort_without_reply():
    v = plugin(AccessArea(deny=["192.0.2.1"], deny_action="close")).on_connect(
        session("192.0.2.1"))
    assert v.action is Action.ABORT and v.reply is False


@pytest.mark.parametrize("area_mode, plugin_mode", [("monitor", "enforce"),
                                                     ("enforce", "monitor")])
def test_monitor_traces_and_lets_in(area_mode, plugin_mode):
    p = plugin(AccessArea(deny=["192.0.2.1"], mode=area_mode), mode=plugin_mode)
    s = session("192.0.2.1")
    assert ask(p, "access", "connect", s) is None
    [entry] = s.trace
    assert (entry.event, entry.plugin, entry.action, entry.code, entry.enhanced,
            entry.mode) == ("connect", "access", "reject", 554, "5.7.1", "monitor")


def test_listener_area_is_used_for_its_sessions():
    p = plugin(AccessArea(deny=["192.0.2.1"]), sub=AccessArea(deny=["192.0.2.2"]))
    assert p.on_connect(session("192.0.2.1", "mta")) is not None
    assert p.on_connect(session("192.0.2.2", "mta")) is None
    assert p.on_connect(session("192.0.2.1", "sub")) is None
    assert p.on_connect(session("192.0.2.2", "sub")) is not None
    assert p.policies["mta"] is p.fallback  # a listener without its own table shares


def test_ipv4_mapped_client(tmp_path):
    p = plugin(AccessArea(deny=["192.0.2.0/24"]))
    assert p.on_connect(session("::ffff:192.0.2.9")) is not None


def test_bad_list_file_is_a_validation_error_naming_file_and_line(tmp_path):
    f = tmp_path / "deny.txt"
    f.write_text("192.0.2.1\n\n192.0.2.999\n")
    with pytest.raises(ValueError) as exc:
        AccessArea(deny_file=str(f))
    message, attribute = exc.value.args
    assert attribute.name == "deny_file"
    assert message.startswith(f"{f}:3: expected an IP address")
    assert message.endswith('(got "192.0.2.999")')


def test_file_broken_after_validation_refuses_temporarily(tmp_path):
    f = tmp_path / "deny.txt"
    f.write_text("192.0.2.1\n")
    area = AccessArea(deny_file=str(f))
    f.write_text("garbage\n")  # changed between validation and on_configure
    v = plugin(area).on_connect(session("198.51.100.1"))
    assert v.reply_parts() == (421, "4.3.0", "Access lists unavailable, try again later")


def test_plugin_config_defaults():
    config = AccessPlugin.Config()
    assert isinstance(config, PluginConfig) and config.priority == 10
