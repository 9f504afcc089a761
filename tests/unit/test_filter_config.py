"""[policy] and [http_hooks]: every key documented in docs/configuration.md with
its default, shown in the shipped conf.d, and errors that name file and key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import attrs
import pytest
from appliance_plugins.http_hooks import HttpHook, HttpHooksArea
from appliance_plugins.policy import PolicyArea, PolicyServer

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "configuration.md"


def section(heading: str) -> str:
    text = DOCS.read_text()
    start = text.index(f"## `[{heading}]`")
    return text[start:text.index("\n## ", start + 1)]


def rows(body: str) -> dict[str, list[str]]:
    out = {}
    for line in body.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            out.setdefault(cells[0].strip("`"), cells)
    return out


def documented(cell: str, like: object) -> object:
    """The default column's value, read as the schema's type ("300s" -> 300.0)."""
    value = json.loads(cell.strip("`"))
    return type(like)(value) if type(like).__name__ in ("Duration", "Size") else value


@pytest.mark.parametrize("heading, classes, conf", [
    ("policy", (PolicyArea, PolicyServer), "48-policy.toml"),
    ("http_hooks", (HttpHooksArea, HttpHook), "49-http-hooks.toml"),
])
def test_keys_and_defaults_documented(heading, classes, conf):
    table = rows(section(heading))
    example = (ROOT / "conf.d" / conf).read_text()
    for cls in classes:
        for f in attrs.fields(cls):
            assert f.name in table, f"[{heading}] {f.name} not documented"
            assert re.search(rf"^#? ?{f.name} = ", example, re.M), f"{conf}: no {f.name}"
            if f.default is attrs.NOTHING:
                assert table[f.name][2] == "(required)"
                continue
            default = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default
            assert documented(table[f.name][2], default) == default, (f.name, table[f.name])


def test_config_errors_name_file_and_key(tmp_path):
    from appliance.config import ConfigError, load_config

    (tmp_path / "60-filters.toml").write_text(
        '[[policy.servers]]\nname = "grey"\naddress = "10023"\nstages = ["rcpt", "quit"]\n'
        'default_action = "dunno"\n'
        '[[http_hooks.hooks]]\nname = "x"\nurl = "ftp://h/"\ntimeout = "0s"\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, plugin_areas={"policy": PolicyArea, "http_hooks": HttpHooksArea})
    text = str(info.value)
    for expected in (
        '60-filters.toml: policy.servers[0].address: expected "inet:host:port"',
        "60-filters.toml: policy.servers[0].stages[1]: expected one of",
        "60-filters.toml: policy.servers[0].default_action: expected one of",
        "60-filters.toml: http_hooks.hooks[0].url: expected an http:// or https:// URL",
        "60-filters.toml: http_hooks.hooks[0].timeout: expected a duration longer than 0s",
    ):
        assert expected in text, text
