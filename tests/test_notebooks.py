"""The notebooks in ``notebooks/`` are executed end to end (nbclient), and they are committed
without outputs.

Each notebook runs in a fresh kernel in a temporary directory (so it cannot rely on files
next to it) with a per-cell timeout; any error in any cell fails the test.  ``PYTHONPATH``
points the kernel at this checkout.  The notebooks that read ``../shared`` run once with the
shared folder (when it is present, as the other tests find it) and once, up to the end of
the part that reads it, with ``TRIM_POMDP_SHARED`` set to an empty folder, to prove that they
skip that part cleanly.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = ["01_pomdp_engine.ipynb", "02_fit_models.ipynb", "03_route_on_a_budget.ipynb"]
# notebooks that read ../shared (pomdp problems, ProcessBench) -> the markdown heading after
# which nothing depends on it (None: the whole notebook); the "absent" run stops there
USES_SHARED = {"01_pomdp_engine.ipynb": None, "02_fit_models.ipynb": "## Part 2"}
CELL_TIMEOUT_S = 180  # per cell; every notebook takes well under a minute in total
SHARED = Path(os.environ.get("TRIM_POMDP_SHARED", REPO.parent / "shared"))


def _read(name: str):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def test_the_three_notebooks_exist() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_committed_without_outputs(name: str) -> None:
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code cells"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{name}: cell {i} has stored outputs; strip them"
        assert cell.execution_count is None, f"{name}: cell {i} has an execution count"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_uses_only_the_public_api(name: str) -> None:
    """No private names of the library (``_core``, ``_kernels``, ``tp._x``, ``obj._x``)."""
    import re

    nb = _read(name)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert not re.search(r"trim_pomdp\._(?!_)|\btp\._(?!_)|from trim_pomdp\.\w+ import _", source)
    assert not re.search(r"\.\_(?!_)\w+", source), re.findall(r"\.\_(?!_)\w+", source)


def _execute(name: str, workdir: Path, env: dict[str, str | None],
             monkeypatch: pytest.MonkeyPatch, stop_at: str | None = None):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = _read(name)
    if stop_at is not None:
        cut = next(i for i, c in enumerate(nb.cells)
                   if c.cell_type == "markdown" and c.source.startswith(stop_at))
        nb.cells = nb.cells[:cut]
    shutil.copy(NOTEBOOKS / name, workdir / name)
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    monkeypatch.setenv("PYTHONPATH", pythonpath)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError (with the cell and traceback) on any error
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                 for o in c.outputs)
    assert images >= 1 or stop_at is not None, f"{name} drew no figure"
    # the suite turns warnings into errors; a kernel only prints them, so catch them here
    stderr = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs if o.get("name") == "stderr")
    assert "Warning" not in stderr, f"{name} emitted a warning:\n{stderr}"
    return nb


def _stdout(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"TRIM_POMDP_SHARED": str(SHARED) if SHARED.is_dir() else str(tmp_path / "absent")}
    nb = _execute(name, tmp_path, env, monkeypatch)
    out = _stdout(nb)
    if name == "01_pomdp_engine.ipynb" and (SHARED / "pomdp" / "README.md").is_file():
        # every problem's bounds overlap SARSOP's reference interval
        assert out.count("intervals overlap") == 7, out
        assert "DISAGREE" not in out
    if name == "03_route_on_a_budget.ipynb":
        assert "online router agrees with the simulator: True" in out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(USES_SHARED))
def test_notebook_runs_without_shared(name: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "no_shared"
    empty.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    nb = _execute(name, work, {"TRIM_POMDP_SHARED": str(empty)}, monkeypatch,
                  stop_at=USES_SHARED[name])
    out = _stdout(nb)
    assert "shared data: not found" in out
    assert "skip" in out  # the part that needs ../shared said it was skipped
