"""The router's speed targets (issue 4):

* ``Router.step`` median <= 5 us, called from Python (filter + alpha lookup + checks);
* the TRIM-POMDP policy in the simulator (``TrimBatchPolicy``) >= 1,000,000 steps/s;
* one lambda solved in <= 50 ms and a 32-lambda grid in <= 1 s (``solve_grid``, the
  finite-horizon engine underneath; a TRIM model with 10 score bins and 4 token bins,
  X = 10, O = 10, H = 31).

Run with

    python -m pytest benchmarks/bench_router.py --benchmark-only \
        --benchmark-json=benchmarks/results_router.json

or ``python benchmarks/bench_router.py`` for a plain printout (medians, JSON to stdout).
Fixed seeds; models and worlds are built outside the timed regions.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import pytest

from trim_pomdp.routing.bank import default_lambdas, solve_grid
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.routing.router import Router, TrimBatchPolicy
from trim_pomdp.simulation.scenario import default_scenario
from trim_pomdp.simulation.world import sample_world, simulate_routing

N_PROBLEMS = 128_000  # ~1.0M decision steps


def trim_model() -> TrimModel:
    return TrimModel.from_scenario(default_scenario(), n_score_bins=10, n_token_bins=4)


def trace_inputs(n_traces: int = 200, seed: int = 0):
    """Random (score, tokens, is_final) sequences of the scenario's length distribution."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_traces):
        n = int(min(30, 3 + rng.geometric(0.17)))
        out.append([(float(rng.uniform()), int(rng.integers(5, 150)), j == n - 1)
                    for j in range(n)])
    return out


@pytest.fixture(scope="module")
def bank():
    m = trim_model()
    return solve_grid(m, default_lambdas(m, 32))


def run_traces(router: Router, traces) -> int:
    n = 0
    for tr in traces:
        router.reset()
        for score, tokens, final in tr:
            router.step(score, tokens, final)
            n += 1
    return n


def step_times_ns(router: Router, traces) -> np.ndarray:
    """Per-call wall time of Router.step (perf_counter_ns around each call)."""
    ts = []
    pc = time.perf_counter_ns
    for tr in traces:
        router.reset()
        for score, tokens, final in tr:
            t0 = pc()
            router.step(score, tokens, final)
            ts.append(pc() - t0)
    return np.array(ts)


def test_router_step(benchmark, bank):
    router = Router(bank.nearest(1e-3))
    traces = trace_inputs()
    n = run_traces(router, traces)
    benchmark(run_traces, router, traces)
    per_step = step_times_ns(router, traces)
    benchmark.extra_info.update({
        "steps_per_round": n,
        "step_median_us": float(np.median(per_step)) / 1e3,
        "step_mean_us_from_rounds": benchmark.stats.stats.median / n * 1e6,
    })


def test_batch_policy_steps_per_second(benchmark, bank):
    world = sample_world(default_scenario(), n_problems=N_PROBLEMS, seed=0)
    pol = TrimBatchPolicy(bank.nearest(1e-3))
    simulate_routing(world, pol)  # warm-up
    res = benchmark(lambda: simulate_routing(world, TrimBatchPolicy(bank.nearest(1e-3))))
    benchmark.extra_info.update({"n_steps": res.n_steps,
                                 "steps_per_s": res.n_steps / benchmark.stats.stats.median})


def test_solve_one_lambda(benchmark):
    m = trim_model()
    solve_grid(m, [1e-3])  # warm-up
    benchmark(solve_grid, m, [1e-3])


def test_solve_grid_32(benchmark):
    m = trim_model()
    lams = default_lambdas(m, 32)
    benchmark.pedantic(solve_grid, args=(m, lams), rounds=3, iterations=1)


def main() -> None:
    out: dict[str, float] = {}
    m = trim_model()
    lams = default_lambdas(m, 32)
    solve_grid(m, [1e-3])
    t1 = []
    for _ in range(5):
        t0 = time.perf_counter()
        solve_grid(m, [1e-3])
        t1.append(time.perf_counter() - t0)
    out["solve_one_lambda_s"] = statistics.median(t1)
    tg = []
    for _ in range(3):
        t0 = time.perf_counter()
        bank = solve_grid(m, lams)
        tg.append(time.perf_counter() - t0)
    out["solve_grid_32_s"] = statistics.median(tg)
    router = Router(bank.nearest(1e-3))
    traces = trace_inputs()
    run_traces(router, traces)
    per_step = np.concatenate([step_times_ns(router, traces) for _ in range(5)])
    out["router_step_median_us"] = float(np.median(per_step)) / 1e3
    out["router_step_p90_us"] = float(np.percentile(per_step, 90)) / 1e3
    world = sample_world(default_scenario(), n_problems=N_PROBLEMS, seed=0)
    simulate_routing(world, TrimBatchPolicy(bank.nearest(1e-3)))
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        res = simulate_routing(world, TrimBatchPolicy(bank.nearest(1e-3)))
        ts.append(time.perf_counter() - t0)
    out["simulator_trim_pomdp_steps_per_s"] = res.n_steps / statistics.median(ts)
    out["simulator_n_steps"] = res.n_steps
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
