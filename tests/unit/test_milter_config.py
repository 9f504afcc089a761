"""The [milter] area: loaded by the real config loader, overridden per listener as a
whole list, compiled per listener by the plugin, and errors that name file and key.
The per-listener behaviour end to end is in tests/integration/test_milter.py."""

from __future__ import annotations

import pytest
from appliance_plugins.milter import MilterArea, MilterPlugin

from appliance.config import ConfigError, load_config
from appliance.spool import Spool

AREAS = {"milter": MilterArea}
LISTENERS = """\
[listeners.mta]
port = 2525
[listeners.submission]
port = 2587
"""


def write(tmp_path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)


def configured(tmp_path) -> MilterPlugin:
    config = load_config(tmp_path, plugin_areas=AREAS)
    plugin = MilterPlugin(MilterPlugin.Config())
    plugin.on_configure(config=config, spool=Spool(tmp_path / "spool"))
    return plugin


def names(specs) -> list[str]:
    return [s.name for s in specs]


def test_a_listener_list_replaces_the_global_one_for_that_listener_only(tmp_path):
    write(tmp_path, "10-listeners.toml", LISTENERS)
    write(tmp_path, "49-milter.toml", "[milter]\nmilters = []\n")  # as shipped
    write(tmp_path, "60-milters.toml", """\
[[milter.milters]]
name = "clamav"
socket = "unix:/run/clamav/clamav-milter.ctl"

[[listeners.submission.milter.milters]]
name = "clamav"
socket = "unix:/run/clamav/clamav-milter.ctl"
command_timeout = "3s"

[[listeners.submission.milter.milters]]
name = "opendkim"
socket = "inet:127.0.0.1:8891"
default_action = "accept"
""")
    plugin = configured(tmp_path)
    specs = plugin.specs.listeners
    assert names(specs["mta"]) == ["clamav"]
    assert names(specs["submission"]) == ["clamav", "opendkim"]
    clamav, opendkim = specs["submission"]
    assert clamav.command_timeout == 3.0 and specs["mta"][0].command_timeout == 10.0
    assert opendkim.default_action == "accept" and opendkim.eom_timeout == 20.0
    assert names(plugin.specs.fallback) == ["clamav"]


def test_an_empty_listener_list_asks_no_milter_there(tmp_path):
    write(tmp_path, "10-listeners.toml", LISTENERS + "[listeners.submission.milter]\n"
          "milters = []\n")
    write(tmp_path, "60-milters.toml",
          '[[milter.milters]]\nname = "clamav"\nsocket = "inet:127.0.0.1:7357"\n')
    plugin = configured(tmp_path)
    specs = plugin.specs.listeners
    assert names(specs["mta"]) == ["clamav"] and specs["submission"] == []


def test_no_milter_by_default(tmp_path):
    write(tmp_path, "10-listeners.toml", LISTENERS)
    plugin = configured(tmp_path)
    assert plugin.specs.listeners == {"mta": [], "submission": []} and plugin.specs.fallback == []


def test_the_old_plugin_table_shape_is_refused_with_file_and_key(tmp_path):
    write(tmp_path, "60-milters.toml", '[plugins.milter]\nenabled = true\n'
          '[[plugins.milter.milters]]\nname = "clamav"\nsocket = "inet:127.0.0.1:7357"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, plugin_schemas={"milter": MilterPlugin.Config},
                    plugin_areas=AREAS)
    text = str(caught.value)
    assert "60-milters.toml: plugins.milter.milters: unknown key" in text, text


def test_errors_in_a_listener_list_name_file_and_key(tmp_path):
    write(tmp_path, "10-listeners.toml", LISTENERS)
    write(tmp_path, "60-milters.toml", """\
[[listeners.submission.milter.milters]]
name = "dkim"
socket = "tcp:8891"

[[listeners.submission.milter.milters]]
name = "dkim"
socket = "inet:127.0.0.1:8891"
default_action = "continue"
""")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, plugin_areas=AREAS)
    text = str(caught.value)
    for expected in (
        "60-milters.toml: listeners.submission.milter.milters[0].socket: expected "
        "inet:host:port",
        "60-milters.toml: listeners.submission.milter.milters[1].default_action: "
        "expected one of",
    ):
        assert expected in text, text


def test_two_milters_of_one_name_in_a_list_are_refused(tmp_path):
    write(tmp_path, "60-milters.toml",
          '[[milter.milters]]\nname = "dkim"\nsocket = "inet:127.0.0.1:1"\n'
          '[[milter.milters]]\nname = "dkim"\nsocket = "inet:127.0.0.1:2"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, plugin_areas=AREAS)
    assert "60-milters.toml: milter.milters: expected milters with different names" in str(
        caught.value), str(caught.value)
