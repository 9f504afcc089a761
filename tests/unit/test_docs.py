"""The plugin API in docs/plugins.md: every hook with its exact signature, every
public name."""

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


def test_every_public_name_is_documented_and_resolves():
    """The public API table of docs/plugins.md lists what `appliance` and
    `appliance.clients` export, and every export imports."""
    import appliance
    import appliance.clients

    table = DOC.split("## The public API", 1)[1].split("\n## ", 1)[0]
    for module in (appliance, appliance.clients):
        assert module.__all__
        for name in module.__all__:
            assert f"`{name}`" in table, f"docs/plugins.md's public API lacks {name}"
            assert getattr(module, name) is not None
