"""Training time of one lambda of TRIM-Agg on the default scenario (goal: < 2 minutes on
this 2-core machine) and the per-step cost of a trained router.

    python -m pytest benchmarks/bench_rl.py --benchmark-json rl_bench.json
"""

import numpy as np
import pytest

from trim_pomdp.rl.ppo import PPOConfig, train_router


@pytest.mark.parametrize("kind", ["agg", "seq"])
def test_train_one_lambda(benchmark, kind):
    res = benchmark.pedantic(train_router, args=("default", 1e-3),
                             kwargs={"kind": kind, "config": PPOConfig(seed=0)},
                             rounds=1, iterations=1)
    benchmark.extra_info["best_val_objective"] = res.best_objective
    benchmark.extra_info["best_iteration"] = res.best_iteration
    assert benchmark.stats.stats.max < 120.0 or kind == "seq"


@pytest.mark.parametrize("kind", ["agg", "seq"])
def test_router_step(benchmark, kind):
    res = train_router("default", 1e-3, kind=kind,
                       config=PPOConfig(iterations=1, n_envs=32, n_val_problems=100))
    r = res.router
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=1000)

    def episode():
        r.reset()
        for i in range(29):
            r.step(scores[i], 60, False)
        r.step(scores[29], 60, True)

    benchmark(episode)
    benchmark.extra_info["per_step_us"] = benchmark.stats.stats.median / 30 * 1e6
