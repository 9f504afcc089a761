"""Every key of [plugins.milter] and of a [[plugins.milter.milters]] entry is in
docs/configuration.md with the schema's default, and the shipped conf.d loads."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import attrs
from appliance_plugins.milter import MilterPlugin, MilterSettings

from appliance.config import Duration

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "configuration.md"


def rows() -> dict[str, list[str]]:
    text = DOCS.read_text()
    start = text.index("## `[plugins.milter]`")
    body = text[start:text.index("\n## ", start + 1)]
    return {cells[0].strip("`"): cells
            for line in body.splitlines() if line.startswith("| `")
            for cells in [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]]}


def test_every_key_documented_with_its_default():
    documented = rows()
    entry = MilterSettings(name="x", socket="unix:/x")
    for cls, instance in ((MilterPlugin.Config, MilterPlugin.Config()),
                          (MilterSettings, entry)):
        for f in attrs.fields(cls):
            assert f.name in documented, f"{f.name} not documented"
            cell = documented[f.name][2]
            if f.default is attrs.NOTHING:
                assert cell == "required", f.name
            elif not isinstance(f.default, attrs.Factory):
                value = tomllib.loads(f"v = {cell.strip('`')}")["v"]
                if isinstance(f.default, Duration):
                    value = Duration(value)
                assert value == getattr(instance, f.name), f.name


def test_shipped_file_configures_no_milter():
    shipped = tomllib.loads((ROOT / "conf.d" / "49-milter.toml").read_text())
    config = MilterPlugin.Config(**shipped["plugins"]["milter"])
    assert config.milters == [] and config.enabled and config.priority == 300
