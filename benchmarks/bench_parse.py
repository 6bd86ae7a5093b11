"""Parse-time benchmarks of the C++ `.pomdp` parser (pytest-benchmark).

Target (issue 2): parse ``RockSample_4_4.pomdp`` (257 states, 9 actions, 263 KB) in under
0.1 s.  Run from the repository root::

    python -m pytest benchmarks/bench_parse.py --benchmark-only \
        --benchmark-json=bench_parse.json

``test_parse_*`` time the parser on text already in memory (``_core.parse_pomdp``, which
includes the row-sum validation and the reward reduction); ``test_from_file_*`` time the
public path ``POMDP.from_file`` (read + parse + NumPy arrays + constructor validation);
``test_write_*`` the writer.  The problems are read from ``../shared/pomdp`` (set
``TRIM_POMDP_SHARED`` to point elsewhere) and skipped when absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trim_pomdp import POMDP, _core

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRIM_POMDP_SHARED", REPO.parent / "shared"))
PROBLEMS = ["tiger.95.POMDP", "hallway.POMDP", "RockSample_4_4.pomdp"]
TARGET_S = {"RockSample_4_4.pomdp": 0.1}


def problem(name: str) -> Path:
    path = SHARED / "pomdp" / "problems" / name
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is optional)")
    return path


def check_target(benchmark, name: str) -> None:
    median = benchmark.stats.stats.median
    benchmark.extra_info["median_s"] = median
    if name in TARGET_S:
        benchmark.extra_info["target_s"] = TARGET_S[name]
        assert median < TARGET_S[name], f"{name}: median {median:.4f} s >= {TARGET_S[name]} s"


@pytest.mark.parametrize("name", PROBLEMS)
def test_parse_text(benchmark, name):
    path = problem(name)
    text = path.read_bytes()
    benchmark.extra_info["bytes"] = len(text)
    d = benchmark(_core.parse_pomdp, text, name, tol=1e-5)
    assert d["T"].shape[1] == {"tiger.95.POMDP": 2, "hallway.POMDP": 60,
                               "RockSample_4_4.pomdp": 257}[name]
    check_target(benchmark, name)


@pytest.mark.parametrize("name", PROBLEMS)
def test_from_file(benchmark, name):
    path = problem(name)
    m = benchmark(POMDP.from_file, path)
    assert m.n_states > 0
    check_target(benchmark, name)


@pytest.mark.parametrize("name", PROBLEMS)
def test_write(benchmark, name):
    m = POMDP.from_file(problem(name))
    text = benchmark(m.to_string)
    benchmark.extra_info["bytes"] = len(text)
    check_target(benchmark, name)


# Issue 19: the 116-byte file declaring 16,383 states (2 GiB of dense T) must be refused
# from its header, in well under a second, by `solve --max-memory-mb 500`'s parse.
HUGE_HEADER = (
    "discount: 0.95\nvalues: reward\nstates: 16383\nactions: 1\nobservations: 1\n"
    "T: * uniform\nO: * uniform\nR: * : * : * : * 1\n"
)


def test_refuse_huge_header(benchmark, tmp_path):
    from trim_pomdp.errors import MemoryLimitError

    path = tmp_path / "huge.pomdp"
    path.write_text(HUGE_HEADER)

    def refuse() -> None:
        try:
            POMDP.from_file(path, max_memory_mb=500)
        except MemoryLimitError:
            return
        raise AssertionError("not refused")

    benchmark(refuse)
    median = benchmark.stats.stats.median
    benchmark.extra_info["median_s"] = median
    assert median < 1.0, f"refusal took {median:.3g} s (target < 1 s)"
