"""Areas owned by plugins: [access] validated by the plugin's Area class, overridden per
listener key by key, and the claims pluginhost accepts or refuses.

The Area classes are module level, as a plugin's would be (their annotations resolve by
name). Plugins are passed in-process (``discover(extra=...)``): no entry point needed to
test the loader; tests/integration/test_lifecycle.py runs a real plugin that owns one.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

import pytest
import tomli
from attrs import field, frozen

from appliance.config import (
    Check,
    ConfigError,
    Duration,
    FilePath,
    PluginConfig,
    Size,
    check_config,
    describe_listener,
    load_config,
)
from appliance.config.areas import area_problem, merge_over
from appliance.config.report import render
from appliance.hooks.host import Discovered, area_hints, areas, discover, loader_inputs


@frozen(kw_only=True)
class Senders:
    allow: list[str] = field(factory=list)
    action: Literal["reject", "tmpreject"] = "reject"
    max_size: Size = Size("1 MiB")


@frozen(kw_only=True)
class AccessArea:
    networks: list[str] = field(factory=lambda: ["127.0.0.0/8"])
    max_connections: Annotated[int, Check(lambda v: v >= 1, "an integer of at least 1")] = 10
    ban_time: Duration = Duration("15m")
    file: FilePath = FilePath("")
    senders: Senders = field(factory=Senders)
    comment: str | None = None


@frozen(kw_only=True)
class FlowArea:
    rate: int = 100


AREAS = {"access": AccessArea, "flow": FlowArea}


def load(conf, areas=AREAS, **kwargs):
    return load_config(conf.path, plugin_areas=areas, **kwargs)


def errors_of(conf, areas=AREAS, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(conf, areas, **kwargs)
    return caught.value.errors


LISTENERS = """
[listeners.mta]
port = 25
[listeners.submission]
port = 587
"""


# --- values ---------------------------------------------------------------------------


def test_absent_area_gets_the_area_defaults_globally_and_on_every_listener(conf) -> None:
    conf.write("10-l.toml", LISTENERS)
    config = load(conf)
    assert config.areas == {"access": AccessArea(), "flow": FlowArea()}
    assert config.listeners["mta"].areas == {"access": AccessArea(), "flow": FlowArea()}
    assert config.listeners["submission"].areas == config.areas


def test_default_listener_carries_the_global_areas(conf) -> None:
    conf.write("30-access.toml", "[access]\nmax_connections = 3\n")
    config = load(conf)
    assert config.listeners["default"].areas["access"].max_connections == 3


def test_no_plugin_areas_means_empty_areas(conf) -> None:
    conf.write("10-l.toml", LISTENERS)
    config = load_config(conf.path)
    assert config.areas == {} and config.listeners["mta"].areas == {}


def test_global_values_are_structured_with_units(conf) -> None:
    conf.write(
        "30-access.toml",
        """
        [access]
        networks = ["192.0.2.0/24"]
        ban_time = "1h"
        [access.senders]
        allow = ["example.org"]
        max_size = "2 MiB"
        [flow]
        rate = 5
        """,
    )
    config = load(conf)
    access = config.areas["access"]
    assert access.networks == ["192.0.2.0/24"]
    assert access.ban_time == 3600.0 and isinstance(access.ban_time, Duration)
    assert access.senders == Senders(allow=["example.org"], max_size=Size("2 MiB"))
    assert access.max_connections == 10  # not set: the Area default
    assert config.areas["flow"] == FlowArea(rate=5)


def test_listener_override_wins_only_for_the_keys_it_sets(conf) -> None:
    conf.write("10-l.toml", LISTENERS)
    conf.write(
        "30-access.toml", '[access]\nmax_connections = 20\nban_time = "1h"\n[flow]\nrate = 7\n'
    )
    conf.write("60-local.toml", "[listeners.submission.access]\nmax_connections = 2\n")
    config = load(conf)
    sub = config.listeners["submission"].areas
    assert sub["access"].max_connections == 2  # the listener's own
    assert sub["access"].ban_time == 3600.0  # from [access]
    assert sub["access"].networks == ["127.0.0.0/8"]  # the default
    assert sub["flow"] is config.areas["flow"]  # no [listeners.submission.flow]
    # other listeners and the global table are untouched
    assert config.listeners["mta"].areas["access"].max_connections == 20
    assert config.areas["access"].max_connections == 20


def test_listener_override_applies_whatever_the_file_order(conf) -> None:
    conf.write("10-l.toml", LISTENERS + "[listeners.mta.access]\nmax_connections = 1\n")
    conf.write("90-access.toml", "[access]\nmax_connections = 50\n")
    config = load(conf)
    assert config.listeners["mta"].areas["access"].max_connections == 1
    assert config.listeners["submission"].areas["access"].max_connections == 50


def test_listener_override_without_global_table(conf) -> None:
    conf.write("10-l.toml", LISTENERS + "[listeners.mta.flow]\nrate = 1\n")
    config = load(conf)
    assert config.listeners["mta"].areas["flow"] == FlowArea(rate=1)
    assert config.areas["flow"] == FlowArea()


def test_nested_tables_merge_key_by_key_and_arrays_are_replaced(conf) -> None:
    conf.write("10-l.toml", LISTENERS)
    conf.write(
        "30-access.toml",
        """
        [access]
        networks = ["192.0.2.0/24", "198.51.100.0/24"]
        [access.senders]
        allow = ["a.example", "b.example"]
        action = "tmpreject"
        """,
    )
    conf.write(
        "60-local.toml",
        """
        [listeners.mta.access]
        networks = ["203.0.113.0/24"]
        [listeners.mta.access.senders]
        max_size = "5 MiB"
        """,
    )
    mta = load(conf).listeners["mta"].areas["access"]
    assert mta.networks == ["203.0.113.0/24"]  # an array is replaced, not appended
    assert mta.senders == Senders(
        allow=["a.example", "b.example"], action="tmpreject", max_size=Size("5 MiB")
    )


def test_merge_over_is_recursive_and_leaves_its_inputs_alone() -> None:
    inherited = {"a": 1, "t": {"x": 1, "y": 2}, "l": [1, 2]}
    own = {"t": {"y": 3}, "l": [9]}
    assert merge_over(inherited, own) == {"a": 1, "t": {"x": 1, "y": 3}, "l": [9]}
    assert inherited == {"a": 1, "t": {"x": 1, "y": 2}, "l": [1, 2]}
    assert merge_over({"t": {"x": 1}}, {"t": 5}) == {"t": 5}


def test_file_paths_are_relative_to_the_file_that_sets_them(conf) -> None:
    conf.write("10-l.toml", LISTENERS + '[listeners.mta.access]\nfile = "mta/allow.txt"\n')
    conf.write("30-access.toml", '[access]\nfile = "../var/allow.txt"\n')
    config = load(conf)
    assert config.areas["access"].file == str(conf.root / "var" / "allow.txt")
    assert config.listeners["submission"].areas["access"].file == str(
        conf.root / "var" / "allow.txt"
    )
    assert config.listeners["mta"].areas["access"].file == str(conf.path / "mta" / "allow.txt")
    assert isinstance(config.listeners["mta"].areas["access"].file, FilePath)


def test_area_of_a_disabled_plugin_is_still_validated(conf) -> None:
    conf.write("50-plugins.toml", "[plugins.access]\nenabled = false\n")
    conf.write("30-access.toml", "[access]\nmax_conections = 3\n")
    errors = errors_of(conf, plugin_schemas={"access": PluginConfig})
    assert errors == [
        f"{conf.file('30-access.toml')}: access.max_conections: unknown key 'max_conections' "
        "(expected one of: ban_time, comment, file, max_connections, networks, senders)"
    ]


# --- errors ---------------------------------------------------------------------------


def test_unknown_key_names_file_and_key_path(conf) -> None:
    conf.write("30-access.toml", "[access.senders]\nalow = []\n")
    assert errors_of(conf) == [
        f"{conf.file('30-access.toml')}: access.senders.alow: unknown key 'alow' "
        "(expected one of: action, allow, max_size)"
    ]


def test_unknown_key_in_listener_override_names_the_listener_file(conf) -> None:
    conf.write("10-l.toml", LISTENERS)
    conf.write("30-access.toml", "[access]\nmax_connections = 3\n")
    conf.write("60-local.toml", "[listeners.mta.flow]\nrates = 3\n")
    assert errors_of(conf) == [
        f"{conf.file('60-local.toml')}: listeners.mta.flow.rates: unknown key 'rates' "
        "(expected one of: rate)"
    ]


def test_wrong_types_are_reported_with_what_was_expected(conf) -> None:
    conf.write(
        "30-access.toml",
        '[access]\nmax_connections = "ten"\nban_time = 60\n[access.senders]\naction = "drop"\n',
    )
    file = conf.file("30-access.toml")
    assert errors_of(conf) == [
        f'{file}: access.max_connections: expected an integer of at least 1 (got "ten")',
        f"{file}: access.ban_time: expected a duration with a unit such as "
        '"120s", "15m" or "1h30m" (got 60)',
        f'{file}: access.senders.action: expected one of "reject", "tmpreject" (got "drop")',
    ]


def test_check_boundary_in_listener_override(conf) -> None:
    conf.write("10-l.toml", LISTENERS + "[listeners.mta.access]\nmax_connections = 0\n")
    assert errors_of(conf) == [
        f"{conf.file('10-l.toml')}: listeners.mta.access.max_connections: "
        "expected an integer of at least 1 (got 0)"
    ]
    conf.write("10-l.toml", LISTENERS + "[listeners.mta.access]\nmax_connections = 1\n")
    assert load(conf).listeners["mta"].areas["access"].max_connections == 1


def test_broken_global_key_is_reported_once_not_per_listener(conf) -> None:
    conf.write("10-l.toml", LISTENERS + '[listeners.mta.access]\nban_time = "1h"\n')
    conf.write("30-access.toml", "[access]\nmax_connections = -1\n")
    assert errors_of(conf) == [
        f"{conf.file('30-access.toml')}: access.max_connections: "
        "expected an integer of at least 1 (got -1)"
    ]


def test_area_that_is_not_a_table(conf) -> None:
    conf.write("10-l.toml", LISTENERS + "access = 5\n")  # in [listeners.submission]
    conf.write("30-flow.toml", 'flow = "fast"\n')
    file_l, file_f = conf.file("10-l.toml"), conf.file("30-flow.toml")
    errors = errors_of(conf)
    assert f'{file_f}: flow: expected a table (got "fast")' in errors
    assert f"{file_l}: listeners.submission.access: expected a table (got 5)" in errors


def test_unknown_area_lists_the_known_areas(conf) -> None:
    conf.write("30-access.toml", "[acces]\nmax_connections = 3\n")
    assert errors_of(conf) == [
        f"{conf.file('30-access.toml')}: acces: unknown key 'acces' (expected one of: "
        "access, auth, delivery, dns, flow, limits, listeners, logging, metrics, plugins, "
        "queue, server, smtp, tls)"
    ]


def test_unknown_listener_sub_table_lists_the_known_areas(conf) -> None:
    conf.write("10-l.toml", LISTENERS + "[listeners.mta.acces]\nmax_connections = 3\n")
    assert errors_of(conf) == [
        f"{conf.file('10-l.toml')}: listeners.mta.acces: unknown key 'acces' (expected one "
        "of: access, address, auth, banner, enabled, flow, limits, max_sessions, port, "
        "proxy_protocol, proxy_timeout, proxy_trusted_networks, smtp, tls, "
        "tls_mode)"
    ]


def test_areas_is_not_a_key_an_admin_can_set(conf) -> None:
    conf.write("10-l.toml", "[listeners.mta]\nport = 25\n[listeners.mta.areas]\nx = 1\n")
    errors = errors_of(conf, areas={})
    assert errors == [
        f"{conf.file('10-l.toml')}: listeners.mta.areas: unknown key 'areas' (expected one "
        "of: address, auth, banner, enabled, limits, max_sessions, port, proxy_protocol, "
        "proxy_timeout, proxy_trusted_networks, smtp, tls, tls_mode)"
    ]


def test_area_of_a_broken_plugin_is_unknown_and_the_error_names_it(conf) -> None:
    conf.write("30-access.toml", "[access]\nmax_connections = 3\n")
    found = {"access": Discovered("access", error="ImportError: no module named 'ipset'")}
    errors = errors_of(conf, areas={}, area_hints=area_hints(found))
    assert errors == [
        f"{conf.file('30-access.toml')}: access: unknown key 'access' (expected one of: "
        "auth, delivery, dns, limits, listeners, logging, metrics, plugins, queue, server, "
        "smtp, tls); "
        "plugin access, "
        "its likely owner, could not be loaded (ImportError: no module named 'ipset')"
    ]


# --- claims (pluginhost) ----------------------------------------------------------------


# Area names unlikely to be claimed by a plugin installed in the test venv: discover()
# also loads the real entry points, and a real claim on the same name would collide.
class AccessPlugin:
    area = "t-access"
    Area = AccessArea

    def __init__(self, config) -> None:
        self.config = config


class OtherAccessPlugin(AccessPlugin):
    pass


class FlowPlugin:
    area = "t-flow"
    Area = FlowArea


def test_discover_collects_area_claims_for_the_loader(conf) -> None:
    found = discover([("t-access", AccessPlugin), ("t-flow", FlowPlugin)])
    assert areas(found)["t-access"] is AccessArea and areas(found)["t-flow"] is FlowArea
    assert found["t-access"].area == "t-access"
    conf.write("30-access.toml", "[t-access]\nmax_connections = 4\n[listeners.mx]\nport = 25\n")
    config = load_config(conf.path, **{**loader_inputs(found), "plugin_schemas": {}})
    assert config.areas["t-access"].max_connections == 4
    assert config.listeners["mx"].areas["t-flow"] == FlowArea()


def test_two_plugins_claiming_one_area_are_both_skipped(conf, caplog) -> None:
    with caplog.at_level(logging.ERROR, "smtp_appliance.plugins"):
        found = discover([("t-access", AccessPlugin), ("t-acl", OtherAccessPlugin)])
    expected = "area 't-access' is claimed by plugins t-access and t-acl: uninstall all but one"
    assert (found["t-access"].error, found["t-acl"].error) == (expected, expected)
    assert "t-access" not in areas(found)
    assert f"plugin t-acl (?) skipped: {expected}" in caplog.messages
    # a [t-access] table is then unknown, and the error says why
    conf.write("30-access.toml", "[t-access]\nmax_connections = 4\n")
    inputs = loader_inputs({n: d for n, d in found.items() if n in ("t-access", "t-acl")})
    errors = errors_of(conf, areas=inputs["plugin_areas"], area_hints=inputs["area_hints"])
    assert len(errors) == 1
    assert errors[0].startswith(f"{conf.file('30-access.toml')}: t-access: unknown key")
    assert errors[0].endswith(f"; plugin t-access, which claims it, was skipped: {expected}")


@pytest.mark.parametrize("name", ["limits", "listeners", "plugins", "server", "port", "areas"])
def test_a_core_name_cannot_be_claimed(name) -> None:
    plugin = type("Claims", (), {"area": name, "Area": FlowArea})
    found = discover([("claims", plugin)])
    assert found["claims"].error.startswith(
        f"area {name!r} is a core name and cannot be claimed (reserved: address, areas, "
        "auth, banner,"
    )
    assert name not in areas(found) and FlowArea not in areas(found).values()


def test_bad_area_classes_are_refused() -> None:
    @frozen(kw_only=True)
    class NoDefault:
        rate: int

    assert "every key needs a default" in area_problem("flow", NoDefault)
    assert "must be an attrs class" in area_problem("flow", dict)
    assert "lowercase letters" in area_problem("Flow", FlowArea)
    assert "lowercase letters" in area_problem(None, FlowArea)
    assert area_problem("flow", FlowArea) is None
    found = discover([("half", type("Half", (), {"area": "half"}))])
    assert "must be an attrs class" in found["half"].error


def test_plugin_without_an_area_claims_nothing() -> None:
    found = discover([("plain", type("Plain", (), {}))])
    assert found["plain"].error == "" and found["plain"].area == ""


# --- check-config ---------------------------------------------------------------------


@pytest.fixture
def with_areas(conf):
    conf.write("10-l.toml", LISTENERS)
    conf.write("30-access.toml", '[access]\nban_time = "1h"\n[access.senders]\nallow = ["x"]\n')
    conf.write(
        "60-local.toml",
        "[listeners.mta.access]\nmax_connections = 2\n"
        '[listeners.mta.access.senders]\naction = "tmpreject"\n',
    )
    return conf


def test_check_config_validates_areas(with_areas) -> None:
    with_areas.write("70-bad.toml", "[flow]\nrate = 1.5\n")
    status, text = check_config(with_areas.path, plugin_areas=AREAS)
    assert (status, text) == (
        1,
        f"{with_areas.file('70-bad.toml')}: flow.rate: expected an integer (got 1.5)",
    )


def test_check_config_summary_names_the_areas(with_areas) -> None:
    status, text = check_config(with_areas.path, plugin_areas=AREAS)
    assert status == 0
    assert (
        "areas owned by plugins: access, flow (per listener: check-config --listener NAME)"
        in text.splitlines()
    )
    assert "areas owned by plugins" not in check_config(with_areas.path.parent / "x")[1]


def test_describe_listener_prints_effective_areas_with_origins(with_areas) -> None:
    config = load(with_areas)
    lines = describe_listener(config, "mta").splitlines()
    local, access = with_areas.file("60-local.toml"), with_areas.file("30-access.toml")

    def line(text):
        found = [entry for entry in lines if entry.startswith(text)]
        assert len(found) == 1, (text, lines)
        return " ".join(found[0].split())

    section = lines.index("[listeners.mta.access]")
    assert lines.index("[listeners.mta.access.senders]") > section
    assert lines.index("[listeners.mta.flow]") > section
    assert line("max_connections") == f"max_connections = 2 # listener override, {local}"
    assert line("ban_time") == f'ban_time = "1h" # [access], {access}'
    assert line("networks") == 'networks = ["127.0.0.0/8"] # [access], default'
    assert line("# comment") == "# comment not set # [access], default"
    assert line("action") == f'action = "tmpreject" # listener override, {local}'
    assert line("allow") == f'allow = ["x"] # [access], {access}'
    assert line("max_size") == 'max_size = "1 MiB" # [access], default'
    assert line("rate") == "rate = 100 # [flow], default"


def test_describe_listener_is_toml_that_loads_back_to_the_same_areas(with_areas) -> None:
    config = load(with_areas)
    printed = with_areas.root / "printed"
    printed.mkdir()
    (printed / "10-printed.toml").write_text(describe_listener(config, "mta"))
    reloaded = load_config(printed, plugin_areas=AREAS).listeners["mta"]
    assert reloaded.areas == config.listeners["mta"].areas


def test_render_writes_toml_for_arrays_tables_and_nested_classes() -> None:
    value = {"a b": [Senders(allow=["x"]), {"n": 1}], "t": Duration("90s"), "e": {}}
    text = render(value)
    assert text == (
        '{ "a b" = [{ allow = ["x"], action = "reject", max_size = "1 MiB" }, { n = 1 }], '
        't = "1m30s", e = {} }'
    )
    assert tomli.loads(f"v = {text}")["v"]["a b"][0]["max_size"] == "1 MiB"
    assert render(frozenset({"b", "a"})) == '["a", "b"]'
