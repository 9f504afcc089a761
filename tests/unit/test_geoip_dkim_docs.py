"""Every key of [geoip], [dkim] and [dmarc] is documented in docs/configuration.md,
in its own section, with the schema's default."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import attrs
import pytest
from appliance_plugins.dkim import DkimArea
from appliance_plugins.dmarc import DmarcArea
from appliance_plugins.geoip import GeoIPArea

from appliance.config import Duration, Size

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
CONF = Path(__file__).resolve().parents[2] / "conf.d" / "47-geoip-dkim.toml"


def section(table: str) -> str:
    text = DOCS.read_text()
    start = text.index(f"## `[{table}]`")
    return text[start:text.index("\n## ", start + 1)]


@pytest.mark.parametrize("table, cls", [("geoip", GeoIPArea), ("dkim", DkimArea),
                                        ("dmarc", DmarcArea)])
def test_every_key_documented_with_its_default(table, cls):
    rows = {line.split("|")[1].strip().strip("`"): line
            for line in section(table).splitlines() if line.startswith("| `")}
    defaults = cls()
    for f in attrs.fields(cls):
        assert f.name in rows, f"{table}.{f.name} not documented"
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", rows[f.name])[1:-1]]
        documented = tomllib.loads(f"v = {cells[2].strip('`')}")["v"]
        if isinstance(f.default, Size | Duration):
            documented = type(f.default)(documented)
        assert documented == getattr(defaults, f.name), f"{table}.{f.name}: {cells[2]}"


@pytest.mark.parametrize("table, cls", [("geoip", GeoIPArea), ("dkim", DkimArea),
                                        ("dmarc", DmarcArea)])
def test_shipped_file_shows_every_key_with_its_default(table, cls):
    shipped = tomllib.loads(CONF.read_text())[table]
    assert list(shipped) == [f.name for f in attrs.fields(cls)]
    defaults = cls()
    for name, value in shipped.items():
        default = getattr(defaults, name)
        if isinstance(default, Size | Duration):
            value = type(default)(value)
        assert value == default, f"{table}.{name}"
