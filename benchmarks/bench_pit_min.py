"""Why a min-feature bank's drift monitor runs on a shadow filter of the score marginal.

On routed in-distribution traffic (4,000 problems of the scenario, routed at the bank's
10 % budget) the per-episode PIT statistics (g1 location, g2 spread) are standardised by
those of 4,000 held-out always-cheap traces (the monitor's reference).  Printed per bank:
the mean shift in reference standard deviations.  ``own`` is what the monitor computes
(for a min bank: the shadow), ``joint`` the filter of the min bank's own joint model.

    nice python benchmarks/bench_pit_min.py [SCENARIO]    # then Router.step timings
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trim_pomdp.evaluation.from_scenario import FitConfig, fit_from_scenario
from trim_pomdp.fit.refit import served_format
from trim_pomdp.routing.bank import default_budget, default_lambdas, solve_grid
from trim_pomdp.routing.drift import _replay_routed, pit_reference, pit_routed
from trim_pomdp.routing.router import Router, TrimBatchPolicy
from trim_pomdp.simulation.scenario import load_scenario
from trim_pomdp.simulation.synth_traces import routed_traces, simulate_traces
from trim_pomdp.simulation.world import sample_world, simulate_routing


def joint_pit(pol, traces):
    """PIT statistics of the joint (score, min) model's own filter, replaying traces."""
    return _replay_routed(Router(pol), traces)


sc = load_scenario(sys.argv[1] if len(sys.argv) > 1 else "default")
for feat in ("score", "score+min"):
    m, _, _ = fit_from_scenario(sc, FitConfig(features=feat))
    bank = solve_grid(m, default_lambdas(m, 32))
    lam = default_budget(bank, 0.10)
    pol = bank.nearest(lam)
    held = simulate_traces(sc, n_problems=4000, seed=77)
    w = sample_world(sc, n_problems=4000, seed=99)
    tr = served_format(routed_traces(w, simulate_routing(w, TrimBatchPolicy(pol), record=True)))
    rows = [("own", pit_reference(pol, held), pit_routed(pol, tr))]
    if m.uses_min:
        rows.append(("joint", joint_pit(pol, held), joint_pit(pol, tr)))
    for tag, ref, live in rows:
        mu, sd = np.nanmean(ref, 0), np.nanstd(ref, 0)
        z = (np.nanmean(live, 0) - mu) / sd
        print(f"{feat:10s} {tag:6s} reference mean {np.round(mu, 3)} sd {np.round(sd, 3)}; "
              f"routed mean {np.round(np.nanmean(live, 0), 3)}; shift (g1, g2) {np.round(z, 3)} "
              "reference sd per episode")

# Router.step with and without the monitor (median / p90 microseconds; bench_drift's timer):
# for a min bank the monitored step runs the shadow filter too
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_drift import bench_step_us  # noqa: E402

for feat in ("score", "score+min"):
    m, _, _ = fit_from_scenario(sc, FitConfig(features=feat))
    t = bench_step_us(solve_grid(m, default_lambdas(m, 8)))
    print(f"{feat:10s} Router.step median {t['plain_median_us']:.2f} us plain, "
          f"{t['drift_median_us']:.2f} us with the monitor (p90 {t['plain_p90_us']:.2f} / "
          f"{t['drift_p90_us']:.2f})")
