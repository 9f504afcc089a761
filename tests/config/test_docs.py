"""Every config key is documented: a field missing from docs/configuration.md fails here.

Each schema class has a ``## `[table]``` section; every field name must appear in
backticks inside that section (datasette's test_docs.py does the same for hooks).
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest
import tomli

from appliance.config import (
    Dns,
    Duration,
    Limits,
    Listener,
    Logging,
    PluginConfig,
    Queue,
    Server,
    Size,
    Smtp,
    State,
    Tls,
)
from appliance.config.schema import Metrics
from appliance.config.units import LogOutputs

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

TABLES = {
    "[server]": Server,
    "[server.state]": State,
    "[listeners.NAME]": Listener,
    "[tls]": Tls,
    "[limits]": Limits,
    "[smtp]": Smtp,
    "[queue]": Queue,
    "[logging]": Logging,
    "[metrics]": Metrics,
    "[dns]": Dns,
    "[plugins.NAME]": PluginConfig,
}


def sections(text: str) -> dict[str, str]:
    """Level-2 headings mapped to the text up to the next level-2 heading."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {heading.strip(): body for heading, body in zip(parts[1::2], parts[2::2], strict=True)}


@pytest.mark.parametrize(
    ("table", "cls"), list(TABLES.items()), ids=[t.strip("[]") for t in TABLES]
)
def test_every_field_is_documented_in_its_table_section(table: str, cls: type) -> None:
    found = sections(DOCS.read_text())
    heading = f"`{table}`"
    assert heading in found, f"docs/configuration.md has no '## {heading}' section"
    body = found[heading]
    missing = [f.name for f in attrs.fields(cls) if f"`{f.name}`" not in body]
    assert not missing, f"{table} keys missing from docs/configuration.md: {missing}"


def table_rows(body: str) -> dict[str, list[str]]:
    """Key rows of a markdown table: key -> cells (escaped pipes kept inside cells)."""
    rows = {}
    for line in body.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0].strip("`")] = cells
    return rows


def test_documented_defaults_match_the_schema() -> None:
    """The default column of each key row must say the schema's default."""
    found = sections(DOCS.read_text())
    for table, cls in TABLES.items():
        rows = table_rows(found[f"`{table}`"])
        for field in attrs.fields(cls):
            if field.default is attrs.NOTHING or isinstance(field.default, attrs.Factory):
                continue
            documented = rows[field.name][2]
            if field.default is None:
                assert documented == "not set", f"{table} {field.name}"
                continue
            value = tomli.loads(f"v = {documented.strip('`')}")["v"]
            if isinstance(field.default, Size | Duration | LogOutputs):
                value = type(field.default)(value)
            assert value == field.default, f"{table} {field.name}: {documented}"
