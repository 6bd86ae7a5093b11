"""The package's layers, read from its own imports (module level, function level and the
``"module:function"`` strings of the evaluation registry): no module imports a layer above
its own, and no import circle exists between modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "trim_pomdp"

#: bottom to top; a module may import its own layer and the layers before it
LAYERS: list[tuple[str, ...]] = [
    ("trim_pomdp.errors", "trim_pomdp.steps", "trim_pomdp._io", "trim_pomdp._lazy",
     "trim_pomdp._core", "trim_pomdp._deprecated", "trim_pomdp._validate"),
    ("trim_pomdp.engine",),
    ("trim_pomdp.traces",),
    ("trim_pomdp.routing",),
    ("trim_pomdp.fit",),
    ("trim_pomdp.simulation",),
    ("trim_pomdp.rl",),
    ("trim_pomdp.banks",),
    ("trim_pomdp.evaluation",),
    ("trim_pomdp.serving",),
    ("trim_pomdp.cli", "trim_pomdp.commands", "trim_pomdp.__main__", "trim_pomdp"),
]


def _layer(module: str) -> int:
    best, best_len = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py")
    return best


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    out["trim_pomdp._core"] = PKG / "_core.pyi"  # compiled; imports nothing of ours
    return out


def _registry_targets(tree: ast.Module) -> list[str]:
    """Modules named by ``"module:function"`` values of a ``FAMILY_FACTORIES`` dict."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if "FAMILY_FACTORIES" in names and isinstance(node.value, ast.Dict):
                for v in node.value.values:
                    if isinstance(v, ast.Constant) and isinstance(v.value, str) and ":" in v.value:
                        found.append(v.value.split(":")[0])
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        if path.suffix == ".pyi":
            graph[name] = set()
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                subs = {f"{mod}.{a.name}" for a in node.names} & mods.keys()
                deps.update(subs)  # `from pkg import submodule` imports the submodule
                if len(subs) < len(node.names):
                    deps.add(mod)
        deps.update(_registry_targets(tree))
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


GRAPH = _graph()


def test_every_module_has_a_layer():
    for name in GRAPH:
        _layer(name)


def test_registry_strings_are_seen():
    assert "trim_pomdp.evaluation.families" in GRAPH["trim_pomdp.evaluation.registry"]
    assert "trim_pomdp.rl.grid" in GRAPH["trim_pomdp.evaluation.registry"]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_upward_import(module):
    up = sorted(d for d in GRAPH[module] if _layer(d) > _layer(module))
    assert not up, f"{module} (layer {_layer(module)}) imports upward: {up}"


def test_engine_knows_nothing_of_trim():
    for name, deps in GRAPH.items():
        if name.startswith("trim_pomdp.engine"):
            assert all(_layer(d) <= 1 for d in deps), (name, deps)


def test_no_import_circle():
    # faces (package __init__) re-export lazily by strings, so they add no edges here
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(GRAPH[n]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(GRAPH):
        if n not in state:
            visit(n)


def test_the_checker_sees_a_circle_and_an_upward_import():
    # the walker itself must be able to fail: a circle and an upward edge added by hand
    saved = {k: set(v) for k, v in GRAPH.items()}
    try:
        GRAPH["trim_pomdp.engine.model"].add("trim_pomdp.routing.model")
        with pytest.raises(AssertionError, match="imports upward"):
            test_no_upward_import("trim_pomdp.engine.model")
        GRAPH["trim_pomdp.routing.model"].add("trim_pomdp.engine.model")
        GRAPH["trim_pomdp.engine.model"].discard("trim_pomdp.routing.model")
        GRAPH["trim_pomdp.engine.finite"].add("trim_pomdp.routing.model")
        with pytest.raises(AssertionError, match="import circle"):
            test_no_import_circle()
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
