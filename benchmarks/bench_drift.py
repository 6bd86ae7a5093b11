"""Routing that survives deployment (issue 15): drift detection and budget pacing figures.

    nice python benchmarks/bench_drift.py --json drift.json            # everything
    nice python benchmarks/bench_drift.py --quick                      # smaller, ~1 min

What it measures (every router is fitted on the *training* world of the default scenario,
labelled traces with seed 1, 32-lambda grid, as ``trim-pomdp evaluate`` does):

* **detector false alarms** on in-distribution traffic (the default scenario, fresh seeds):
  the monitor is calibrated on 4,000 held-out cheap traces of the training world
  (``DriftMonitor.from_traces``, 0.1 % per 1,000 episodes by bootstrap), then runs over
  ``--far-episodes`` routed episodes per budget, restarting after each alarm; reported as
  alarms per 1,000 episodes with a 95 % Poisson interval, for the budgets calibrated to
  5 / 10 / 25 % cost;
* **detection delay** on every drift scenario (and noisy_prm as a fourth kind of drift):
  ``--streams`` independent streams of deployment traffic, each starting with a fresh
  monitor at the drift onset; episodes to alarm (median, 90th percentile, fraction of
  streams detected within ``--max-delay`` episodes);
* ``Router.step`` median / p90 µs with and without a monitor attached;
* **budget pacing** (:mod:`trim_pomdp.pacing`): realized strong-token fraction of a paced
  router against a 10 % target, after convergence, per scenario, and the overshoot;
* **refit after an alarm** (:mod:`trim_pomdp.refit`): 2,000 deployment episodes routed at
  the budget calibrated to 10 %, served-format traces (no step labels), outcome EM with
  the transition model held, re-solve; the refitted bank's ΔIBC as % of the POMDP fitted on
  the deployment world's labelled traces (``trim-pomdp-deploy``) on 20,000 deployment
  problems, CPT(95 %) against TRIM-Thr's, best accuracy, and the realized cost of the
  refitted bank paced to 10 %.  The default scenario is the no-drift control (a refit there
  is what an un-gated refit would do).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trim_pomdp.drift import DriftBatchPolicy, DriftMonitor  # noqa: E402
from trim_pomdp.scenario import DRIFT_SCENARIOS, load_scenario  # noqa: E402
from trim_pomdp.simulator import sample_world, simulate_routing, simulate_traces  # noqa: E402
from trim_pomdp.trim import (  # noqa: E402
    FitConfig,
    calibrate,
    default_lambdas,
    fit_from_scenario,
    solve_grid,
)


def poisson_ci(k: int, exposure: float) -> tuple[float, float]:
    """Exact 95 % interval of a Poisson rate (k events over ``exposure`` units)."""
    from scipy.stats import chi2

    lo = 0.0 if k == 0 else chi2.ppf(0.025, 2 * k) / 2
    hi = chi2.ppf(0.975, 2 * k + 2) / 2
    return lo / exposure, hi / exposure


def count_alarms(mon: DriftMonitor, feats: np.ndarray) -> int:
    """Alarms in a stream, restarting the monitor after each one."""
    n = 0
    i = 0
    while i < len(feats):
        mon.reset()
        hit = mon.run(feats[i:])
        if hit is None:
            break
        n += 1
        i += hit
    return n


def routed_features(policy, scenario, n: int, seed: int, chunk: int = 50_000) -> np.ndarray:
    out = []
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        bp = DriftBatchPolicy(policy)
        simulate_routing(sample_world(scenario, n_problems=m, seed=seed + lo), bp)
        out.append(bp.features)
    return np.concatenate(out)


def scenario_auroc(n: int = 3000, seed: int = 5) -> dict[str, float]:
    """AUROC of correct vs first-wrong cheap steps on labelled traces of each world
    (the deployment world of the drift scenarios), by the Mann-Whitney statistic."""
    from scipy.stats import rankdata

    out = {}
    for name in ("default", *DRIFT_SCENARIOS):
        tr = simulate_traces(load_scenario(name), n_problems=n, seed=seed)
        pos = np.array([s.prm_score for t in tr for s in t.steps if s.label == "correct"])
        neg = np.array([s.prm_score for t in tr for s in t.steps if s.label == "incorrect"])
        r = rankdata(np.concatenate([pos, neg]))[: len(pos)]
        out[name] = float((r.sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
    return out


def bench_step_us(bank) -> dict[str, float]:
    from bench_router import step_times_ns, trace_inputs

    from trim_pomdp.router import Router

    traces = trace_inputs()
    pol = bank.nearest(1e-3)
    plain = Router(pol)
    mon = DriftMonitor([0.0, 0.0], [1.0, 1.0], 1e9)
    mon_r = Router(pol, drift=mon)
    out = {}
    for name, r in (("plain", plain), ("drift", mon_r)):
        step_times_ns(r, traces)
        t = np.concatenate([step_times_ns(r, traces) for _ in range(5)])
        out[f"{name}_median_us"] = float(np.median(t)) / 1e3
        out[f"{name}_p90_us"] = float(np.percentile(t, 90)) / 1e3
    return out


def refit_figures(bank, lam: float, *, quick: bool = False) -> dict:
    from trim_pomdp.evaluate import evaluate
    from trim_pomdp.pacing import BudgetPacer, simulate_paced
    from trim_pomdp.refit import refit_bank, served_format
    from trim_pomdp.router import TrimBatchPolicy
    from trim_pomdp.simulator import routed_traces

    n_eval = 6000 if quick else 20000
    res_all = {}
    for name in (*DRIFT_SCENARIOS, "default"):
        sc = load_scenario(name)
        w = sample_world(sc, n_problems=2000, seed=999)
        t1 = time.perf_counter()
        res = simulate_routing(w, TrimBatchPolicy(bank.nearest(lam)), record=True)
        new_bank, info = refit_bank(bank, served_format(routed_traces(w, res)))
        dt = time.perf_counter() - t1
        ev = evaluate(sc, ["trim-pomdp", "trim-pomdp-deploy",
                           new_bank.family("trim-pomdp-refit"), "trim-thr"],
                      n_problems=n_eval, seed=31337)
        kept = ev.gain_kept()
        paced = simulate_paced(sample_world(sc, n_problems=8000, seed=4343),
                               BudgetPacer(new_bank, 0.10, start_lambda=lam))
        s, a = paced["strong_tokens"], paced["always_strong_tokens"]
        row = {"refit_s": dt, "em_iterations": info.em["n_iter"],
               "tv_distance": info.tv_distance,
               "kept": {k: float(v) for k, v in kept.items()},
               "cpt_95": {k: c.metrics["cpt_95"] for k, c in ev.curves.items()},
               "delta_ibc": {k: c.metrics["delta_ibc"] for k, c in ev.curves.items()},
               "max_accuracy": {k: c.metrics["max_accuracy"] for k, c in ev.curves.items()},
               "paced_refit_cost_after_3000": float(s[3000:].sum() / a[3000:].sum())}
        if name == "drift_noisy":  # the case that motivated tying S1 and S2
            untied, _ = refit_bank(bank, served_format(routed_traces(w, res)), tie_wrong=False)
            ev_u = evaluate(sc, ["trim-pomdp-deploy", untied.family("trim-pomdp-refit-untied")],
                            n_problems=n_eval, seed=31337)
            row["kept_untied"] = float(ev_u.gain_kept()["trim-pomdp-refit-untied"])
            print(f"refit {name} untied: kept {100 * row['kept_untied']:.1f}%", flush=True)
        res_all[name] = row
        print(f"refit {name}: {dt:.1f} s, {row['em_iterations']} EM iterations; kept "
              + ", ".join(f"{k} {100 * v:.1f}%" for k, v in row["kept"].items())
              + "; CPT95 " + ", ".join(f"{k} {v:.3f}" for k, v in row["cpt_95"].items())
              + "; max acc " + ", ".join(f"{k} {v:.4f}" for k, v in row["max_accuracy"].items())
              + f"; paced refit cost {row['paced_refit_cost_after_3000']:.4f}", flush=True)
    return res_all


def _strict(x):
    """NaN/inf -> None, so the file is strict JSON (e.g. a CPT level never reached)."""
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--far-episodes", type=int, default=500_000)
    ap.add_argument("--streams", type=int, default=40)
    ap.add_argument("--max-delay", type=int, default=1000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-pacing", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.quick:
        args.far_episodes, args.streams = 50_000, 10
    t0 = time.perf_counter()
    base = load_scenario("default")
    model, _, _ = fit_from_scenario(base, FitConfig(seed=1))
    bank = solve_grid(model, default_lambdas(model, 32))
    out: dict = {"command": " ".join(sys.argv), "far_episodes": args.far_episodes,
                 "streams": args.streams, "max_delay": args.max_delay}
    out["auroc"] = scenario_auroc()
    print(f"AUROC of correct vs first-wrong cheap steps: {out['auroc']}", flush=True)
    out["router_step"] = bench_step_us(bank)
    print(f"Router.step: {out['router_step']}", flush=True)

    heldout = simulate_traces(base, n_problems=4000, seed=77)
    budgets = {}
    for target in (0.05, 0.10, 0.25):
        lam, got = calibrate(bank, target_cost_fraction=target, scenario=base,
                             n_problems=4000, seed=78)
        budgets[target] = (lam, got)
    out["detector"] = {}
    for target, (lam, got) in budgets.items():
        pol = bank.nearest(lam)
        mon = DriftMonitor.from_traces(pol, heldout)
        feats = routed_features(pol, base, args.far_episodes, seed=10_000)
        k = count_alarms(mon, feats)
        lo, hi = poisson_ci(k, args.far_episodes / 1000)
        row = {"lambda": lam, "training_cost": got, "threshold": mon.threshold,
               "far_alarms": k, "far_per_1000": k / (args.far_episodes / 1000),
               "far_ci95": [lo, hi], "delay": {}}
        n_str = args.streams
        for name in (*DRIFT_SCENARIOS, "noisy_prm"):
            f = routed_features(pol, load_scenario(name), n_str * args.max_delay, seed=20_000)
            delays = []
            for s in range(n_str):
                mon.reset()
                hit = mon.run(f[s * args.max_delay:(s + 1) * args.max_delay])
                delays.append(math.inf if hit is None else hit)
            d = np.array(delays, dtype=float)
            fin = d[np.isfinite(d)]
            row["delay"][name] = {
                "median": float(np.median(d)) if np.isfinite(np.median(d)) else None,
                "p90": float(np.percentile(d, 90)) if np.isfinite(np.percentile(d, 90))
                else None,
                "detected": float(len(fin) / len(d))}
        out["detector"][f"{target:.2f}"] = row
        print(f"budget {target:.2f} (lambda {lam:.3g}, training cost {got:.3f}): "
              f"h={mon.threshold:.2f} FAR {row['far_per_1000']:.4f}/1000 "
              f"[{lo:.4f}, {hi:.4f}] ({k} alarms in {args.far_episodes}); delays "
              + ", ".join(f"{n}: {v['median']} (p90 {v['p90']}, {100 * v['detected']:.0f}%)"
                          for n, v in row["delay"].items()), flush=True)

    out["refit"] = refit_figures(bank, budgets[0.10][0], quick=args.quick)
    if not args.no_pacing:
        try:
            from bench_pacing import pacing_figures
        except ImportError:
            pacing_figures = None
        if pacing_figures is not None:
            out["pacing"] = pacing_figures(bank, quick=args.quick)
    out["time_s"] = time.perf_counter() - t0
    text = json.dumps(_strict(out), indent=2, allow_nan=False)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(f"done in {out['time_s']:.0f} s")


if __name__ == "__main__":
    main()
