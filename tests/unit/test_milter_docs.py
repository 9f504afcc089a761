"""Every key of [milter] and of a [[milter.milters]] entry is in docs/configuration.md
with the schema's default, the plugin's common keys are named there, and the shipped
conf.d configures no milter but shows the new shape."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import attrs
from appliance_plugins.milter import MilterArea, MilterPlugin, MilterSettings

from appliance.config import Duration

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "configuration.md"
SHIPPED = ROOT / "conf.d" / "49-milter.toml"


def section() -> str:
    text = DOCS.read_text()
    start = text.index("## `[milter]`")
    return text[start:text.index("\n## ", start + 1)]


def rows() -> dict[str, list[str]]:
    return {cells[0].strip("`"): cells
            for line in section().splitlines() if line.startswith("| `")
            for cells in [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]]}


def test_every_key_documented_with_its_default():
    documented = rows()
    entry = MilterSettings(name="x", socket="unix:/x")
    for cls, instance in ((MilterArea, MilterArea()), (MilterSettings, entry)):
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
            else:
                assert cell in ("`[]`", "`{}`", "Postfix's lists"), f.name


def test_plugin_table_keeps_only_the_common_keys():
    assert {f.name for f in attrs.fields(MilterPlugin.Config)} == {
        "enabled", "priority", "mode"}
    assert MilterPlugin.area == "milter" and MilterPlugin.Area is MilterArea
    assert MilterPlugin.Config().priority == 300
    assert "`priority` = 300" in section()


def test_shipped_file_configures_no_milter():
    shipped = tomllib.loads(SHIPPED.read_text())
    assert set(shipped) == {"milter"}
    assert MilterArea(**shipped["milter"]).milters == []
    # the commented examples are in the new shape, a listener's own list included
    text = SHIPPED.read_text()
    assert "# [[milter.milters]]" in text
    assert "# [[listeners.submission.milter.milters]]" in text
    assert "plugins.milter.milters" not in text
