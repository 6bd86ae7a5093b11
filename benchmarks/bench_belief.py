"""Benchmarks of the belief update and the Monte Carlo simulator (pytest-benchmark).

Run:  python -m pytest benchmarks/bench_belief.py --benchmark-only \
          --benchmark-json=bench_belief.json
or:   python benchmarks/bench_belief.py   (prints a table of medians, writes bench_belief.json)

The RockSample_4_4 simulation benchmark reads ``../shared`` (or ``$TRIM_POMDP_SHARED``) and
solves the problem first (10 s limit); it is skipped when the file is absent.

Fixed seeds; the models are random dense stochastic arrays of the given sizes (tiger-sized,
a 3-state TRIM-sized one, and a RockSample_4_4-sized one with 257 states).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO), str(_REPO / "tests")]  # in-place build + the brute-force helpers

from brute_force import random_pomdp, tiger  # noqa: E402

from trim_pomdp.engine.belief import (
    BeliefUpdater,
    belief_update_kernel,
    update_belief,
    update_belief_numpy,
    update_beliefs,
)
from trim_pomdp.engine.montecarlo import simulate
from trim_pomdp.engine.policy import AlphaVectorPolicy

SIZES = {"S=2 (tiger)": (2, 3, 2), "S=3 (TRIM)": (3, 2, 20), "S=257 (RockSample_4_4)": (257, 9, 2)}


def _model(S, A, n_obs):
    return random_pomdp(np.random.default_rng(0), S, A, n_obs)


def _args(S, A, n_obs):
    m = _model(S, A, n_obs)
    b = np.random.default_rng(1).dirichlet(np.ones(S))
    return m, b


@pytest.mark.parametrize("size", list(SIZES))
def test_update_belief_checked(benchmark, size):
    m, b = _args(*SIZES[size])
    out = np.empty_like(b)
    benchmark(update_belief, m.T, m.Z, b, 1, 1, out=out)


@pytest.mark.parametrize("size", list(SIZES))
def test_belief_updater(benchmark, size):
    m, b = _args(*SIZES[size])
    up = BeliefUpdater(m)
    out = np.empty_like(b)
    benchmark(up.update, b, 1, 1, out=out)


@pytest.mark.parametrize("size", list(SIZES))
def test_update_belief_kernel_only(benchmark, size):
    m, b = _args(*SIZES[size])
    out = np.empty_like(b)
    benchmark(belief_update_kernel, m.T, m.Z, b, 1, 1, out)


@pytest.mark.parametrize("size", list(SIZES))
def test_update_belief_numpy_reference(benchmark, size):
    m, b = _args(*SIZES[size])
    benchmark(update_belief_numpy, m.T, m.Z, b, 1, 1)


@pytest.mark.parametrize("size", ["S=3 (TRIM)", "S=257 (RockSample_4_4)"])
def test_update_beliefs_batch_10k(benchmark, size):
    S, A, n_obs = SIZES[size]
    m = _model(S, A, n_obs)
    n = 10_000 if S < 100 else 1_000
    rng = np.random.default_rng(2)
    B = rng.dirichlet(np.ones(S), size=n)
    acts = rng.integers(0, A, size=n)
    obs = rng.integers(0, n_obs, size=n)
    out = np.empty_like(B)
    benchmark(update_beliefs, m.T, m.Z, B, acts, obs, out=out)


def test_simulate_tiger_1000_episodes(benchmark):
    m = tiger()
    pol = AlphaVectorPolicy(m.R, [0, 1, 2])
    benchmark(simulate, m, pol, 1000, 100, 0)


def _rocksample():
    """RockSample_4_4 from ../shared with a solved policy, or None when unavailable."""
    import os

    path = Path(os.environ.get("TRIM_POMDP_SHARED", _REPO.parent / "shared"))
    path = path / "pomdp" / "problems" / "RockSample_4_4.pomdp"
    if not path.exists():
        return None
    from trim_pomdp.engine.model import POMDP
    from trim_pomdp.engine.solver import SolverConfig, solve

    model = POMDP.from_file(path)
    return model, solve(model, SolverConfig(time_limit=10, target_gap=1e-3))


def test_simulate_rocksample_100_episodes(benchmark):
    loaded = _rocksample()
    if loaded is None:
        pytest.skip("../shared/pomdp/problems/RockSample_4_4.pomdp not present")
    model, pol = loaded
    benchmark(simulate, model, pol, 100, 283, 0)


def _median_time(fn, *args, repeat=7, number=None, **kwargs):
    fn(*args, **kwargs)  # compile / warm up
    if number is None:
        number, t = 1, 0.0
        while t < 0.05:
            number *= 2
            t0 = time.perf_counter()
            for _ in range(number):
                fn(*args, **kwargs)
            t = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn(*args, **kwargs)
        times.append((time.perf_counter() - t0) / number)
    return float(np.median(times))


def main() -> None:
    rows = {}
    for size, (S, A, n_obs) in SIZES.items():
        m, b = _args(S, A, n_obs)
        out = np.empty_like(b)
        rows[size] = {
            "update_belief_us": 1e6 * _median_time(update_belief, m.T, m.Z, b, 1, 1, out=out),
            "updater_us": 1e6 * _median_time(BeliefUpdater(m).update, b, 1, 1, out=out),
            "kernel_us": 1e6 * _median_time(belief_update_kernel, m.T, m.Z, b, 1, 1, out),
            "numpy_reference_us": 1e6 * _median_time(update_belief_numpy, m.T, m.Z, b, 1, 1),
        }
        n = 10_000 if S < 100 else 1_000
        rng = np.random.default_rng(2)
        B = rng.dirichlet(np.ones(S), size=n)
        acts, obs = rng.integers(0, A, size=n), rng.integers(0, n_obs, size=n)
        outB = np.empty_like(B)
        t = _median_time(update_beliefs, m.T, m.Z, B, acts, obs, out=outB, repeat=5)
        rows[size]["batched_us_per_belief"] = 1e6 * t / n
    m = tiger()
    pol = AlphaVectorPolicy(m.R, [0, 1, 2])
    t = _median_time(simulate, m, pol, 10_000, 100, 0, repeat=5, number=1)
    rows["simulate tiger"] = {"steps_per_s": 10_000 * 100 / t}
    loaded = _rocksample()
    if loaded is not None:
        model, pol = loaded
        t = _median_time(simulate, model, pol, 1000, 283, 0, repeat=3, number=1)
        rows["simulate RockSample_4_4"] = {"steps_per_s": 1000 * 283 / t, "n_alpha": pol.n_vectors}
    print(
        f"{'model':<24} {'update_belief':>14} {'Updater':>10} {'kernel':>10} "
        f"{'numpy ref':>10} {'batched/row':>12}"
    )
    for size in SIZES:
        r = rows[size]
        print(
            f"{size:<24} {r['update_belief_us']:12.2f}us {r['updater_us']:8.2f}us "
            f"{r['kernel_us']:8.2f}us "
            f"{r['numpy_reference_us']:8.2f}us {r['batched_us_per_belief']:10.3f}us"
        )
    print(
        f"simulate (tiger, 10,000 episodes x 100 steps): "
        f"{rows['simulate tiger']['steps_per_s'] / 1e6:.2f} M steps/s"
    )
    if "simulate RockSample_4_4" in rows:
        r = rows["simulate RockSample_4_4"]
        print(
            f"simulate (RockSample_4_4, solved policy with {r['n_alpha']} vectors, 1,000 "
            f"episodes x 283 steps): {r['steps_per_s'] / 1e6:.2f} M steps/s"
        )
    Path("bench_belief.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
