"""Every [flow] key is documented in docs/configuration.md, with its default."""

import re
from pathlib import Path

import attrs
from appliance_plugins.flow.settings import FlowSettings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def flow_section() -> str:
    text = DOCS.read_text()
    start = text.index("## `[flow]`")
    return text[start:text.index("\n## ", start + 1)]


def test_every_flow_key_and_table_is_documented():
    body = flow_section()
    for f in attrs.fields(FlowSettings):
        table = getattr(FlowSettings(), f.name)
        if attrs.has(type(table)):
            assert f"[flow.{f.name}]" in body, f"[flow.{f.name}] not documented"
            for sub in attrs.fields(type(table)):
                assert f"`{sub.name}`" in body, f"flow.{f.name}.{sub.name} not documented"
        else:
            assert f"`{f.name}`" in body, f"flow.{f.name} not documented"


def test_documented_default_limits_match_the_schema():
    body = flow_section()
    defaults = FlowSettings()
    for f in attrs.fields(FlowSettings):
        table = getattr(defaults, f.name)
        if hasattr(table, "limit"):
            rows = [ln for ln in body.splitlines() if ln.startswith(f"| `[flow.{f.name}]`")]
            assert rows, f.name
            cells = [c.strip() for c in rows[0].split("|")[1:-1]]
            assert f"`{table.limit}`" in cells, (f.name, cells)
    row = next(ln for ln in body.splitlines() if ln.startswith("| `exempt_networks`"))
    documented = re.findall(r'"([^"]+)"', row.split("|")[3])
    assert documented == defaults.exempt_networks
