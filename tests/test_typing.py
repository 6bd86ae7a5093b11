"""Types of the public API: ``mypy --strict`` on the modules that carry it, and the
compiled module's stub (``trim_pomdp/_core.pyi``) against the functions it really binds."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: the modules behind ``trim_pomdp.__all__`` and the faces of the subpackages, checked
#: with ``mypy --strict`` (imports of other modules are followed silently)
MYPY_MODULES = [
    "trim_pomdp/__init__.py", "trim_pomdp/errors.py", "trim_pomdp/steps.py",
    "trim_pomdp/_io.py", "trim_pomdp/_lazy.py", "trim_pomdp/_deprecated.py",
    "trim_pomdp/_core.pyi",
    "trim_pomdp/engine", "trim_pomdp/traces", "trim_pomdp/serving",
    "trim_pomdp/routing/protocols.py", "trim_pomdp/routing/policy.py",
    "trim_pomdp/routing/router.py", "trim_pomdp/routing/step_policy.py",
    "trim_pomdp/fit/transition.py", "trim_pomdp/fit/observation.py",
    "trim_pomdp/simulation/scenario.py",
    "trim_pomdp/evaluation/sweep.py", "trim_pomdp/evaluation/metrics.py",
]


@pytest.mark.slow
def test_mypy_strict_on_the_public_api():
    pytest.importorskip("mypy")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--no-incremental", *MYPY_MODULES],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _stub_signatures() -> dict[str, list[str]]:
    tree = ast.parse((ROOT / "trim_pomdp" / "_core.pyi").read_text())
    sigs = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            a = node.args
            sigs[node.name] = [x.arg for x in a.posonlyargs + a.args] + ["*"] + [
                x.arg for x in a.kwonlyargs]
    return sigs


def _bound_signature(doc: str) -> list[str]:
    """Parameter names from pybind11's signature line ``name(a: T, *, b: U = 1) -> R``."""
    inner = doc.splitlines()[0]
    inner = inner[inner.index("(") + 1 : inner.rindex(") ->")]
    names, depth, token = [], 0, ""
    for ch in inner + ",":
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            token = token.strip()
            names.append("*" if token == "*" else re.match(r"\w+", token).group(0))
            token = ""
        else:
            token += ch
    if "*" not in names:
        names.append("*")
    return names


def test_core_stub_matches_the_compiled_module():
    from trim_pomdp import _core

    bound = {n: getattr(_core, n) for n in dir(_core)
             if callable(getattr(_core, n)) and not n.startswith("__")}
    stub = _stub_signatures()
    assert sorted(stub) == sorted(bound)
    consts = {n for n in dir(_core) if not n.startswith("__") and n not in bound}
    stub_text = (ROOT / "trim_pomdp" / "_core.pyi").read_text()
    for n in consts:
        assert re.search(rf"^{n}: ", stub_text, re.M), f"_core.{n} has no type in _core.pyi"
    for name, fn in bound.items():
        assert stub[name] == _bound_signature(fn.__doc__), name
