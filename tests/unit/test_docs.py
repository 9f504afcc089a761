"""Every hook is documented in docs/plugins.md with its exact signature."""

import inspect
from pathlib import Path

import pluggy

from appliance.hooks import specs as hookspecs

DOC = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()


def test_every_hook_documented_with_its_arguments():
    pm = pluggy.PluginManager(hookspecs.NAME)
    pm.add_hookspecs(hookspecs)
    names = [n for n in dir(pm.hook) if not n.startswith("_")]
    assert len(names) >= 11
    for name in names:
        args = list(inspect.signature(getattr(hookspecs, name)).parameters)
        heading = f"### {name}({', '.join(args)})"
        assert heading in DOC, f"docs/plugins.md lacks {heading!r}"
        assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"
