"""How conf.d files are found, ordered and merged, and how each key keeps its file."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import ConfigError, load_config
from appliance.config.merge import Merged

from .plugin_fixtures import PLUGINS


def test_later_file_overrides_earlier_key_and_tables_merge(conf) -> None:
    conf.write(
        "10-base.toml",
        """
        [limits]
        max_recipients = 100
        max_bad_commands = 5
        """,
    )
    conf.write("20-local.toml", "[limits]\nmax_recipients = 200\n")
    config = load_config(conf.path)
    assert config.limits.max_recipients == 200  # overridden by the later file
    assert config.limits.max_bad_commands == 5  # kept from the earlier one
    assert config.limits.max_received_headers == 30  # default


def test_files_are_read_in_file_name_order_not_creation_order(conf) -> None:
    conf.write("90-last.toml", "[server]\nworkers = 9\n")
    conf.write("05-first.toml", "[server]\nworkers = 2\n")
    conf.write("50-middle.toml", "[server]\nworkers = 5\n")
    config = load_config(conf.path)
    assert config.server.workers == 9
    assert [p.name for p in config.sources] == ["05-first.toml", "50-middle.toml", "90-last.toml"]


def test_sources_are_config_dir_joined_paths(conf) -> None:
    conf.write("10-a.toml", "")
    assert load_config(str(conf.path)).sources == (conf.path / "10-a.toml",)


def test_only_toml_files_directly_in_the_dir_are_read(conf) -> None:
    conf.write("10-a.toml", "[server]\nworkers = 2\n")
    conf.write("20-b.toml.disabled", "[server]\nworkers = 3\n")
    conf.write("README", "not toml at all [")
    conf.write(".30-hidden.toml", "[server]\nworkers = 4\n")
    (conf.path / "sub").mkdir()
    conf.write("sub/40-nested.toml", "[server]\nworkers = 5\n")
    config = load_config(conf.path)
    assert config.server.workers == 2
    assert [p.name for p in config.sources] == ["10-a.toml"]


def test_plain_arrays_are_replaced_and_arrays_of_tables_append(conf) -> None:
    conf.write(
        "10-a.toml",
        """
        [plugins.greylist]
        networks = ["192.0.2.0/24", "198.51.100.0/24"]
        [[plugins.greylist.routes]]
        domain = "a.example"
        host = "mx1"
        """,
    )
    conf.write(
        "20-b.toml",
        """
        [plugins.greylist]
        networks = ["203.0.113.0/24"]
        [[plugins.greylist.routes]]
        domain = "b.example"
        host = "mx2"
        """,
    )
    greylist = load_config(conf.path, PLUGINS).plugins["greylist"]
    assert greylist.networks == ["203.0.113.0/24"]
    assert [(r.domain, r.host) for r in greylist.routes] == [
        ("a.example", "mx1"),
        ("b.example", "mx2"),
    ]


def test_a_later_value_may_replace_a_table(conf) -> None:
    conf.write("10-a.toml", "[limits]\nmax_recipients = 5\n")
    conf.write("20-b.toml", "limits = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(conf.path)
    assert caught.value.errors == [f"{conf.file('20-b.toml')}: limits: expected a table (got 3)"]


def test_error_names_the_later_file_when_it_set_the_bad_key(conf) -> None:
    conf.write("10-a.toml", "[limits]\nmax_recipients = 100\n")
    conf.write("20-b.toml", "[limits]\nmax_recipients = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(conf.path)
    assert caught.value.errors == [
        f"{conf.file('20-b.toml')}: limits.max_recipients: "
        "expected an integer of at least 1 (got 0)"
    ]


def test_error_names_the_earlier_file_when_the_later_one_set_other_keys(conf) -> None:
    conf.write("10-a.toml", "[limits]\nmax_recipients = 0\n")
    conf.write("20-b.toml", "[limits]\nmax_bad_commands = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(conf.path)
    assert caught.value.errors == [
        f"{conf.file('10-a.toml')}: limits.max_recipients: "
        "expected an integer of at least 1 (got 0)"
    ]


def test_missing_key_is_blamed_on_the_file_that_started_the_table(conf) -> None:
    conf.write("10-a.toml", '[listeners.mta]\naddress = "::1"\n')
    conf.write("20-b.toml", "[listeners.mta]\nenabled = true\n")
    with pytest.raises(ConfigError) as caught:
        load_config(conf.path)
    assert caught.value.errors == [
        f"{conf.file('10-a.toml')}: listeners.mta.port: "
        "missing required key (expected a port from 1 to 65535)"
    ]


def test_a_later_file_can_complete_a_table_an_earlier_one_started(conf) -> None:
    conf.write("10-a.toml", '[listeners.mta]\naddress = "::1"\n')
    conf.write("20-b.toml", "[listeners.mta]\nport = 2525\n")
    listener = load_config(conf.path).listeners["mta"]
    assert (listener.address, listener.port) == ("::1", 2525)


def test_origins_record_the_file_of_every_key(conf) -> None:
    first = conf.write("10-a.toml", "[limits]\nmax_recipients = 1\nmax_bad_commands = 2\n")
    second = conf.write("20-b.toml", "[limits]\nmax_recipients = 3\n")
    origins = load_config(conf.path).origins
    assert origins["limits.max_recipients"] == second
    assert origins["limits.max_bad_commands"] == first
    assert origins["limits"] == first


def test_merged_origins_follow_replacement_and_appends() -> None:
    a, b = Path("a.toml"), Path("b.toml")
    merged = Merged()
    merged.merge({"t": {"x": {"deep": 1}, "arr": [{"k": 1}], "plain": [1, 2]}}, a)
    merged.merge({"t": {"x": 5, "arr": [{"k": 2}], "plain": [3]}}, b)
    assert merged.data == {"t": {"x": 5, "arr": [{"k": 1}, {"k": 2}], "plain": [3]}}
    assert merged.origins[("t", "x")] == b
    assert ("t", "x", "deep") not in merged.origins  # the replaced table's keys are gone
    assert merged.origins[("t", "arr", 0, "k")] == a
    assert merged.origins[("t", "arr", 1, "k")] == b
    assert merged.origins[("t", "plain")] == b
    assert merged.origin(("t", "plain", 0)) == b
    assert merged.origin(("t", "nothing", "here")) == a  # nearest parent that was set


def test_merge_does_not_alias_the_parsed_documents() -> None:
    document = {"t": {"x": 1}}
    merged = Merged()
    merged.merge(document, Path("a.toml"))
    merged.merge({"t": {"x": 2}}, Path("b.toml"))
    assert document == {"t": {"x": 1}}


def test_missing_config_dir_is_an_error(tmp_path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope")
    assert caught.value.errors == [f"{tmp_path / 'nope'}: config directory does not exist"]


def test_config_dir_that_is_a_file_is_an_error(tmp_path) -> None:
    (tmp_path / "file.toml").write_text("")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "file.toml")
    assert caught.value.errors == [
        f"{tmp_path / 'file.toml'}: config directory is a file, not a directory"
    ]


def test_config_dir_without_toml_files_is_an_error(conf) -> None:
    conf.write("README", "nothing here")
    with pytest.raises(ConfigError) as caught:
        load_config(conf.path)
    assert caught.value.errors == [f"{conf.path}: no *.toml files in the config directory"]


def test_syntax_errors_of_every_file_are_reported_with_line_and_column(conf) -> None:
    conf.write("10-a.toml", "[server]\nmax_sessions = = 3\n")
    conf.write("20-b.toml", "[limits]\nmax_recipients = 1\n")
    conf.write("30-c.toml", "a = 1\na = 2\n")
    with pytest.raises(ConfigError) as caught:
        load_config(conf.path)
    assert caught.value.errors == [
        f"{conf.file('10-a.toml')}:2:16: Invalid value",
        f"{conf.file('30-c.toml')}:2:6: Cannot overwrite a value",
    ]


def test_file_that_is_not_utf8_is_an_error(conf) -> None:
    (conf.path / "10-a.toml").write_bytes(b'[server]\nhostname = "\xff"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(conf.path)
    [line] = caught.value.errors
    assert line.startswith(f"{conf.file('10-a.toml')}: not valid UTF-8")
