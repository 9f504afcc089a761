"""The sender checks' areas ([spf], [dnsbl], [sender_mx], [reverse_dns]) through the
real loader with the installed plugins: per-listener overrides, error messages naming
file and key path, the shipped examples, and docs/configuration.md."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import attrs
import pytest
from appliance_plugins.dnsbl import DnsblArea, DnsblPlugin
from appliance_plugins.reverse_dns import ReverseDnsArea, ReverseDnsPlugin
from appliance_plugins.sender_mx import SenderMxArea, SenderMxPlugin
from appliance_plugins.spf import SpfArea, SpfPlugin

from appliance.config import ConfigError, Duration, load_config
from appliance.hooks.host import discover, loader_inputs

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "configuration.md"
SHIPPED = REPO / "conf.d"
INPUTS = loader_inputs(discover())
#: area -> (plugin name, plugin class, Area class)
CHECKS = {
    "spf": ("spf", SpfPlugin, SpfArea),
    "dnsbl": ("dnsbl", DnsblPlugin, DnsblArea),
    "sender_mx": ("sender-mx", SenderMxPlugin, SenderMxArea),
    "reverse_dns": ("reverse-dns", ReverseDnsPlugin, ReverseDnsArea),
}
LISTENERS = """
[listeners.mta]
port = 2525
[listeners.submission]
port = 2587
"""


def load(conf):
    return load_config(conf.path, **INPUTS)


@pytest.mark.parametrize("area", CHECKS)
def test_plugins_own_their_areas_and_are_off_by_default(conf, area):
    name, plugin, area_class = CHECKS[area]
    assert (plugin.area, plugin.Area) == (area, area_class)
    conf.write("00-listeners.toml", LISTENERS)
    config = load(conf)
    assert config.plugins[name].enabled is False
    assert config.areas[area] == area_class()
    assert config.listeners["mta"].areas[area] is config.areas[area]


def test_listener_overrides_merge_key_by_key_into_nested_tables(conf):
    conf.write("00-listeners.toml", LISTENERS)
    conf.write("46-checks.toml", """
        [spf]
        timeout = "3s"
        [spf.on_softfail]
        text = "SoftFail for #Domain#"
        [listeners.mta.spf.on_softfail]
        action = "reject"
        [[dnsbl.zones]]
        zone = "zen.example"
        [listeners.submission.dnsbl]
        zones = []
        stage = "rcpt_to"
        """)
    config = load(conf)
    mta = config.listeners["mta"].areas["spf"]
    assert mta.timeout == Duration("3s")
    assert attrs.asdict(mta.on_softfail) == {"action": "reject", "code": 0,
                                             "enhanced_code": "", "text": "SoftFail for #Domain#"}
    assert config.listeners["submission"].areas["spf"].on_softfail.action == "continue"
    assert config.areas["spf"].on_softfail.action == "continue"
    sub = config.listeners["submission"].areas["dnsbl"]
    assert (sub.zones, sub.stage) == ([], "rcpt_to")          # an array is replaced
    assert [z.zone for z in config.listeners["mta"].areas["dnsbl"].zones] == ["zen.example"]


def test_errors_name_the_file_and_the_area_key_path(conf):
    conf.write("00-listeners.toml", LISTENERS)
    bad = conf.write("50-checks.toml", """
        [spf.on_fail]
        action = "refuse"
        [listeners.mta.dnsbl]
        threshold = 0
        [[listeners.mta.dnsbl.zones]]
        zone = "nodots"
        [listeners.submission.sender_mx.on_error]
        enhanced_code = "4.1"
        [reverse_dns]
        stage = "data"
        """)
    with pytest.raises(ConfigError) as caught:
        load(conf)
    errors = "\n".join(caught.value.errors)
    assert f'{bad}: spf.on_fail.action: expected one of "accept", "continue", "reject", ' \
           f'"tmpreject", "discard", "abort" (got "refuse")' in errors
    assert f"{bad}: listeners.mta.dnsbl.threshold: expected an integer of at least 1" in errors
    assert f"{bad}: listeners.mta.dnsbl.zones[0].zone: expected a DNS zone" in errors
    assert f"{bad}: listeners.submission.sender_mx.on_error.enhanced_code: expected an " \
           f"enhanced status code" in errors
    assert f"{bad}: reverse_dns.stage: expected one of" in errors
    assert len(caught.value.errors) == 5


def test_the_old_shape_is_refused_with_the_common_keys_listed(conf):
    old = conf.write("46-checks.toml", """
        [plugins.spf]
        enabled = true
        timeout = "3s"
        """)
    with pytest.raises(ConfigError) as caught:
        load(conf)
    assert caught.value.errors == [
        f"{old}: plugins.spf.timeout: unknown key 'timeout' "
        f"(expected one of: enabled, mode, priority)"]


def test_shipped_examples_load_when_uncommented(conf):
    """Every commented table and key of 46-sender-checks.toml, uncommented, is valid
    and does what its comments say."""
    shutil.copytree(SHIPPED, conf.path, dirs_exist_ok=True)
    conf.make_certificate()
    example = re.compile(r"^# (\[\[?[a-z_.-]+\]\]?|[a-z_]+ = .*)$")
    lines = (conf.path / "46-sender-checks.toml").read_text().splitlines()
    uncommented = [example.sub(r"\1", line) for line in lines]
    assert sum(a != b for a, b in zip(lines, uncommented, strict=True)) >= 40
    (conf.path / "46-sender-checks.toml").write_text("\n".join(uncommented) + "\n")
    config = load(conf)
    assert all(config.plugins[name].enabled for name, _, _ in CHECKS.values())
    assert config.listeners["mta"].areas["spf"].on_softfail.action == "reject"
    assert config.listeners["submission"].areas["spf"].on_softfail.action == "continue"
    assert config.listeners["submission"].areas["dnsbl"].zones == []
    assert len(config.listeners["mta"].areas["dnsbl"].zones) == 2


def section(table: str) -> str:
    text = DOCS.read_text()
    start = text.index(f"### `[{table}]`")
    return text[start:text.index("\n##", start + 1)]


@pytest.mark.parametrize("area", CHECKS)
def test_every_key_documented_with_its_default(area):
    name, plugin, area_class = CHECKS[area]
    body = section(area)
    config = plugin.Config()
    assert (f"`[plugins.{name}]`: `enabled` = `{str(config.enabled).lower()}`, "
            f"`priority` = `{config.priority}`") in " ".join(body.split())
    rows = {}
    for line in body.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0].strip("`")] = cells
    defaults = area_class()
    for f in attrs.fields(area_class):
        assert f.name in rows, f"{area}.{f.name} not documented"
        default, documented = getattr(defaults, f.name), rows[f.name][2]
        if attrs.has(type(default)):  # a result's table: its action, code, text
            assert documented.startswith(f"`{default.action}`"), f"{area}.{f.name}"
            for part in (default.code or "", default.enhanced_code, default.text):
                assert not part or f"`{tomllib_repr(part)}`" in documented, (
                    f"{area}.{f.name}: {part!r} not in {documented}")
            continue
        value = tomllib.loads(f"v = {documented.strip('`')}")["v"]
        if isinstance(default, Duration):
            value = Duration(value)
        assert value == default, f"{area}.{f.name}: {documented}"


def tomllib_repr(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)
