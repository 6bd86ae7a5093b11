"""Budget-pacing figures (used by ``benchmarks/bench_drift.py``; runnable alone):

    nice python benchmarks/bench_pacing.py [--quick]

Per scenario (default and the three drift scenarios; routers fitted on the default
scenario's training world): the lambda calibrated to 10 % on 4,000 training-world problems
(seed 78) is the unpaced router and the pacer's start; 20,000 deployment problems are
routed in order, 50 in flight, with ``BudgetPacer(gain=0.05, window=500)``.  Reported:
realized cost fraction unpaced and paced (whole run, and after the first 3,000 episodes),
the range of the rolling 500-episode fraction after 3,000 episodes, the episode after which
the rolling fraction stays within 2 points of the target, the largest deviation after it
first crosses the target (overshoot), and accuracy.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from trim_pomdp.pacing import BudgetPacer, simulate_paced
from trim_pomdp.router import TrimBatchPolicy
from trim_pomdp.scenario import DRIFT_SCENARIOS, load_scenario
from trim_pomdp.simulator import sample_world, simulate_routing
from trim_pomdp.trim import FitConfig, calibrate, default_lambdas, fit_from_scenario, solve_grid

TARGET, WINDOW, GAIN, BURN = 0.10, 500, 0.05, 3000


def pacing_figures(bank, *, quick: bool = False) -> dict:
    n = 8000 if quick else 20000
    base = load_scenario("default")
    lam, got = calibrate(bank, target_cost_fraction=TARGET, scenario=base, n_problems=4000,
                         seed=78)
    out = {"target": TARGET, "gain": GAIN, "window": WINDOW, "n_episodes": n,
           "start_lambda": lam, "training_cost": got, "scenarios": {}}
    for name in ("default", *DRIFT_SCENARIOS):
        w = sample_world(load_scenario(name), n_problems=n, seed=4242)
        un = simulate_routing(w, TrimBatchPolicy(bank.nearest(lam)))
        r = simulate_paced(w, BudgetPacer(bank, TARGET, gain=GAIN, window=WINDOW,
                                          start_lambda=lam))
        s, a = r["strong_tokens"].astype(float), r["always_strong_tokens"].astype(float)
        roll = np.convolve(s, np.ones(WINDOW), "valid") / np.convolve(a, np.ones(WINDOW),
                                                                        "valid")
        dev = roll - TARGET
        outside = np.nonzero(np.abs(dev) > 0.02)[0]
        settle = WINDOW + (int(outside[-1]) + 1 if outside.size else 0)
        cross = np.nonzero(np.sign(dev) != np.sign(dev[0]))[0]
        over = float(np.max(np.abs(dev[cross[0]:]))) if cross.size else None
        tail = roll[BURN - WINDOW:]
        out["scenarios"][name] = {
            "unpaced_cost": un.cost_fraction, "unpaced_accuracy": un.accuracy,
            "paced_cost": float(s.sum() / a.sum()),
            "paced_cost_after_burn_in": float(s[BURN:].sum() / a[BURN:].sum()),
            "paced_accuracy_after_burn_in": float(r["correct"][BURN:].mean()),
            "rolling_after_burn_in": [float(tail.min()), float(tail.max())],
            "first_window_cost": float(roll[0]),
            "settled_within_2pt_after_episode": settle,
            "overshoot_after_first_crossing": over,
            "final_lambda": r["summary"]["lambda"], "saturated": r["summary"]["saturated"]}
        row = out["scenarios"][name]
        print(f"pacing {name}: unpaced {row['unpaced_cost']:.4f} (acc "
              f"{row['unpaced_accuracy']:.4f}); paced {row['paced_cost']:.4f}, after "
              f"{BURN}: {row['paced_cost_after_burn_in']:.4f} (acc "
              f"{row['paced_accuracy_after_burn_in']:.4f}), rolling-{WINDOW} range "
              f"[{tail.min():.4f}, {tail.max():.4f}], settled within 2 pt after episode "
              f"{settle}, overshoot {over}", flush=True)
    return out


if __name__ == "__main__":
    model, _, _ = fit_from_scenario(load_scenario("default"), FitConfig(seed=1))
    bank = solve_grid(model, default_lambdas(model, 32))
    res = pacing_figures(bank, quick="--quick" in sys.argv)
    print(json.dumps(res, indent=2))
