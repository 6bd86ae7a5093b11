"""Execute the notebooks and save the README's picture of each to ``docs/img/``.

The picture of a notebook is the PNG output of its cell tagged ``readme-figure`` (the file
name is the cell's ``readme_figure`` metadata).  The notebooks themselves are not modified
(they stay committed without outputs).  Run it with the package built in place and
``../shared`` beside the repository (or ``TRIM_POMDP_SHARED`` set)::

    python notebooks/export_figures.py
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "docs" / "img"


def export(path: Path, out: Path = OUT) -> list[Path]:
    nb = nbformat.read(path, as_version=4)
    # the kernel imports this checkout's trim_pomdp and runs in notebooks/ (nothing is written
    # there: the notebooks only write inside temporary directories)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE.parent), os.environ.get("PYTHONPATH")) if p)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(HERE)}}).execute()
    written = []
    for cell in nb.cells:
        name = cell.metadata.get("readme_figure")
        if cell.cell_type != "code" or not name:
            continue
        pngs = [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
        if len(pngs) != 1:
            raise RuntimeError(f"{path.name}: the readme-figure cell drew {len(pngs)} figures")
        out.mkdir(parents=True, exist_ok=True)
        target = out / name
        target.write_bytes(base64.b64decode(pngs[0]))
        written.append(target)
    return written


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted(HERE.glob("*.ipynb"))
    for p in paths:
        for target in export(p):
            print(f"{p.name}: {target} ({target.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
