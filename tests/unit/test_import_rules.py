"""The import rules of docs/architecture.md, checked on the source with ``ast``:
the protocol engine stands alone, the core imports no plugin, plugins use only the
public API, SASL stays sans-IO, and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: What a plugin may import of ours (docs/plugins.md, "The public API").
PUBLIC = {"appliance", "appliance.dns", "appliance.netlist", "appliance.checks",
          "appliance.dkim", "appliance.clients", "appliance.sasl", "appliance.spool",
          "appliance.delivery"}

#: Plugins: the built-ins, the example an author copies, the test fixtures.
PLUGIN_TREES = {"plugins": "appliance_plugins", "examples": None,
                "tests/fixture_plugins": None}


def module_name(path: Path, top: str, package: str) -> str:
    parts = [package, *path.relative_to(ROOT / top).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(top: str, package: str | None = None) -> dict[str, Path]:
    """Module name -> file, for every .py under ``top``."""
    found = {}
    for path in sorted((ROOT / top).rglob("*.py")):
        if ".venv" in path.parts or "build" in path.parts:
            continue
        found[module_name(path, top, package or top.replace("/", "."))] = path
    return found


def imports(path: Path, name: str, *, top_level_only: bool = False) -> set[str]:
    """The absolute names of the modules ``path`` imports. With ``top_level_only``,
    imports inside functions (run later, not at import time) are left out; those
    under ``if TYPE_CHECKING:`` count (a type is a dependency too)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if not top_level_only:
                    visit(node.body)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit([n for n in getattr(node, field, []) if isinstance(n, ast.AST)])

    visit(tree.body)
    return found


def ours(found: set[str], modules: dict[str, Path]) -> set[str]:
    """Only the names that are modules of ours (``from x import name`` also adds
    ``x.name``, which is a module only when it is one)."""
    return {m for m in found if m in modules}


APPLIANCE = sources("appliance")


def offenders(modules: dict[str, Path], allowed) -> list[str]:
    return [f"{name} imports {imported}" for name, path in modules.items()
            for imported in sorted(imports(path, name)) if not allowed(name, imported)]


def test_the_protocol_engine_imports_nothing_but_itself_and_attrs():
    engine = {n: p for n, p in APPLIANCE.items() if n.startswith("appliance.protocol")}
    assert engine

    def allowed(name: str, imported: str) -> bool:
        root = imported.split(".")[0]
        if root == "appliance":
            return imported.startswith("appliance.protocol")
        return root not in {"gevent", "socket", "ssl", "selectors", "threading",
                            "pluggy", "tomli", "appliance_plugins"}

    assert offenders(engine, allowed) == []


def test_the_core_imports_no_plugin():
    assert offenders(APPLIANCE, lambda n, i: not i.startswith("appliance_plugins")) == []


def test_sasl_is_sans_io():
    sasl = {n: p for n, p in APPLIANCE.items() if n.startswith("appliance.sasl")}
    assert sasl
    io = {"gevent", "socket", "ssl", "selectors", "threading", "asyncio", "subprocess"}
    assert offenders(sasl, lambda n, i: i.split(".")[0] not in io) == []


def test_config_imports_no_gevent():
    config = {n: p for n, p in APPLIANCE.items() if n.startswith("appliance.config")}
    assert offenders(config, lambda n, i: i.split(".")[0] != "gevent") == []


@pytest.mark.parametrize("top", sorted(PLUGIN_TREES))
def test_plugins_import_only_the_public_api(top):
    modules = sources(top, PLUGIN_TREES[top])
    assert modules

    def allowed(name: str, imported: str) -> bool:
        root = imported.split(".")[0]
        if root == "appliance":
            # ``from appliance import X`` also lists appliance.X: a name, not a module
            return imported in PUBLIC or imported.rsplit(".", 1)[0] in PUBLIC \
                and imported not in APPLIANCE
        if root == "appliance_plugins" and top == "plugins":
            # its own package only: plugins/flow/ may import appliance_plugins.flow.*
            own = ".".join(name.split(".")[:2])
            return imported == "appliance_plugins" and name.count(".") == 1 \
                or imported == own or imported.startswith(own + ".")
        return True

    assert offenders(modules, allowed) == []


def test_no_import_cycles():
    graph = {name: ours(imports(path, name, top_level_only=True), APPLIANCE) - {name}
             for name, path in APPLIANCE.items()}
    # ``from pkg import submodule`` inside pkg imports the submodule, not pkg again
    for name, deps in graph.items():
        for dep in list(deps):
            if name.startswith(dep + ".") and any(d.startswith(dep + ".") for d in deps):
                deps.discard(dep)
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(path[path.index(dep):] + [node, dep])
                              if dep in path else f"{node} -> {dep}")
            elif dep not in state:
                walk(dep, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [])
    assert cycles == []


def test_the_rules_see_a_violation(tmp_path):
    """The checker itself: a module that breaks a rule is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("import gevent\nfrom appliance.mail.context import TraceEntry\n"
                   "def later():\n    import appliance_plugins.flow\n")
    found = imports(bad, "appliance_plugins.bad")
    assert {"gevent", "appliance.mail.context", "appliance_plugins.flow"} <= found
    assert "appliance_plugins.flow" not in imports(bad, "x", top_level_only=True)
