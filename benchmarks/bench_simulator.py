"""Simulator throughput: decision steps per second of the lockstep Numba simulator.

Target (issue 4): >= 1,000,000 steps/s.  Run with

    python -m pytest benchmarks/bench_simulator.py --benchmark-only \
        --benchmark-json=benchmarks/results_simulator.json

or ``python benchmarks/bench_simulator.py`` for a plain printout (median of 7 runs).
Fixed seed; the world (~1M steps) is sampled once outside the timed region.
"""

from __future__ import annotations

import statistics
import time

import pytest

from trim_pomdp.routing.baselines import AlwaysCheap, OraclePolicy, RandomPolicy, ThresholdPolicy
from trim_pomdp.simulation.scenario import default_scenario
from trim_pomdp.simulation.world import sample_world, simulate_routing

N_PROBLEMS = 128_000  # ~1.0M decision steps on the default scenario
POLICIES = {
    "threshold": lambda: ThresholdPolicy(0.5),
    "always-cheap": AlwaysCheap,
    "random": lambda: RandomPolicy(0.2, seed=0),
    "oracle": OraclePolicy,
}


@pytest.fixture(scope="module")
def world():
    w = sample_world(default_scenario(), n_problems=N_PROBLEMS, seed=0)
    simulate_routing(w, ThresholdPolicy(0.5))  # JIT warm-up outside the timing
    return w


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_simulator_steps_per_second(benchmark, world, name):
    res = benchmark(lambda: simulate_routing(world, POLICIES[name]()))
    steps_per_s = res.n_steps / benchmark.stats.stats.median
    benchmark.extra_info.update({"n_problems": world.n_problems, "n_steps": res.n_steps,
                                 "steps_per_s": steps_per_s})


def main() -> None:
    w = sample_world(default_scenario(), n_problems=N_PROBLEMS, seed=0)
    simulate_routing(w, ThresholdPolicy(0.5))
    for name, make in POLICIES.items():
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            res = simulate_routing(w, make())
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"{name:<13} {res.n_steps} steps in {med * 1e3:7.1f} ms (median of 7) "
              f"-> {res.n_steps / med / 1e6:5.2f} M steps/s")


if __name__ == "__main__":
    main()
