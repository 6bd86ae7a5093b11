"""Benchmark of TRIM-POMDP+ (latent classes) next to the plain TRIM-POMDP (issue 7):
solve time per lambda and ``Router.step`` time for D = B = 1 (3 hidden states) and
D = 3, B = 3 (27 hidden states), on the "both" scenario of ``eval_latent.py`` (difficulty
spread, concentration 5, and per-trace PRM bias sd 1) built by ``from_scenario``.

Run:
    python -m pytest benchmarks/bench_latent.py --benchmark-only -q
    python benchmarks/bench_latent.py         # JSON summary (medians) on stdout
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trim_pomdp.routing.bank import default_lambdas, solve_latent_grid
from trim_pomdp.routing.latent_model import LatentTrimModel
from trim_pomdp.routing.router import Router
from trim_pomdp.simulation.scenario import load_scenario

SIZES = {"D1B1": (1, 1), "D3B1": (3, 1), "D1B3": (1, 3), "D3B3": (3, 3)}


def scenario():
    return dataclasses.replace(load_scenario("default"), p_w_concentration=5.0,
                               p_s_concentration=5.0, prm_bias_sd=1.0, prm_correlation=0.0)


def model(D: int, B: int) -> LatentTrimModel:
    m = LatentTrimModel.from_scenario(scenario(), n_difficulty=D, n_bias=B)
    if D == 1 and B == 1:  # from_scenario only drops classes without spread; force 1 x 1
        m = LatentTrimModel(m.base)
    elif D == 1 or B == 1:
        m = LatentTrimModel(m.base, p_w=m.p_w if D > 1 else None, p_s=m.p_s if D > 1 else None,
                            obs_matrices=m.obs_matrices if B > 1 else None)
    return m


def lambdas(m: LatentTrimModel, n: int = 32):
    return default_lambdas(m.base, n)


def step_times(pol, n_traces: int = 300, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    r = Router(pol)
    out = []
    for _ in range(n_traces):
        r.reset()
        n = int(rng.integers(3, 12))
        for j in range(n):
            s, tok = float(rng.random()), float(rng.integers(10, 120))
            t0 = time.perf_counter()
            r.step(s, tok, j == n - 1)
            out.append(time.perf_counter() - t0)
    return out


@pytest.mark.parametrize("size", list(SIZES))
def test_solve_one_lambda(benchmark, size):
    m = model(*SIZES[size])
    lam = float(lambdas(m)[16])
    m.arrays(0.0)  # build the arrays outside the timing
    benchmark.pedantic(lambda: solve_latent_grid(m, [lam]), rounds=3, iterations=1)


@pytest.mark.parametrize("size", ["D1B1", "D3B3"])
def test_router_step(benchmark, size):
    m = model(*SIZES[size])
    pol = solve_latent_grid(m, [float(lambdas(m)[16])])[0]
    r = Router(pol)
    r.reset()

    def one():
        if r.done or r.t >= 29:
            r.reset()
        r.step(0.6, 40.0, False)

    benchmark(one)


def main() -> int:
    res = {}
    for name, (D, B) in SIZES.items():
        m = model(D, B)
        t0 = time.perf_counter()
        m.arrays(0.0)
        build = time.perf_counter() - t0
        lams = lambdas(m)
        one = []
        for lam in (lams[8], lams[16], lams[24]):
            t0 = time.perf_counter()
            solve_latent_grid(m, [float(lam)])
            one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        bank = solve_latent_grid(m, lams)
        grid = time.perf_counter() - t0
        st = step_times(bank[16])
        res[name] = {"n_hidden": m.n_hidden, "build_arrays_s": build,
                     "solve_one_lambda_median_s": statistics.median(one),
                     "solve_32_lambdas_s": grid,
                     "n_alpha_median": int(np.median([p.alphas.shape[0] for p in bank])),
                     "router_step_median_us": 1e6 * statistics.median(st),
                     "router_step_p90_us": 1e6 * float(np.quantile(st, 0.9))}
        print(name, json.dumps(res[name]), file=sys.stderr, flush=True)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
