"""The closed loop (issue 15, item 2): drift detector -> refit -> re-solve -> swap, with
budget pacing at a 10 % target, end to end in the simulator.

    nice python benchmarks/bench_adapt.py --json benchmarks/results/adapt.json
    nice python benchmarks/bench_adapt.py --quick                # smaller, a few minutes
    nice python benchmarks/bench_adapt.py --features score+min \
        --json benchmarks/results/adapt_score_min.json   # banks as `trim-pomdp fit` makes them

Every router is fitted with the library's defaults on the *training* world (labelled
traces, seed 1, 32-lambda grid), as ``benchmarks/bench_drift.py`` does; ``--features
score+min`` fits the score and the min-previous-score feature instead, as ``trim-pomdp fit``
does by default (the refit then swaps in a score-only bank:
:func:`trim_pomdp.fit.refit.refit_observation`).  The loop is
:class:`trim_pomdp.fit.adapt.Adapter`, the same object ``trim-pomdp route --adapt`` drives:

* a stream of ``--stream`` deployment episodes is routed 50 at a time in lockstep (a server
  with 50 episodes in flight), starting at the lambda calibrated to 10 % on the training
  world, paced to 10 % (``BudgetPacer``, gain 0.05, window 500);
* each episode's PIT sums feed the run's monitor (calibrated on 4,000 held-out training
  traces, 0.1 % false alarms per 1,000 episodes); each episode's served-format trace (no
  step labels) goes to the adapter, which refits on alarm (first at 200 episodes, then each
  time the cycle's episodes double, up to 3,200) and swaps between batches;
* reported per scenario and stream seed: the episode of the alarm and of every swap; the
  realized cost of the stream (all, and episodes 3,000+); the final bank's ΔIBC as a % of
  the POMDP fitted on the deployment world's labelled traces (``trim-pomdp-deploy``) on
  ``--n-eval`` fresh deployment problems, CPT(95 %) of the final bank and of TRIM-Thr, and
  best accuracy;
* **false alarms** on no-drift traffic of ``default`` and ``noisy_prm`` (each with its own
  fit, monitor and 10 % budget): ``--far-episodes`` routed episodes, the monitor restarted
  after each alarm, alarms per 1,000 episodes with a 95 % Poisson interval; and the closed
  loop itself on a no-drift stream (swaps it makes, gain kept).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_drift import _strict, count_alarms, poisson_ci, routed_features  # noqa: E402

from trim_pomdp.evaluation.budget import calibrate  # noqa: E402
from trim_pomdp.evaluation.from_scenario import FitConfig, fit_from_scenario  # noqa: E402
from trim_pomdp.evaluation.sweep import evaluate  # noqa: E402
from trim_pomdp.fit.adapt import Adapter  # noqa: E402
from trim_pomdp.fit.refit import served_format  # noqa: E402
from trim_pomdp.routing.bank import default_lambdas, solve_grid  # noqa: E402
from trim_pomdp.routing.drift import DriftBatchPolicy, DriftMonitor  # noqa: E402
from trim_pomdp.simulation.paced import _subworld  # noqa: E402
from trim_pomdp.simulation.scenario import DRIFT_SCENARIOS, load_scenario  # noqa: E402
from trim_pomdp.simulation.synth_traces import routed_traces, simulate_traces  # noqa: E402
from trim_pomdp.simulation.world import sample_world, simulate_routing  # noqa: E402

TARGET = 0.10


FEATURES = "score"


def setup(name: str) -> dict:
    """Fit, bank, 10 % lambda and monitor for the training world of scenario ``name``."""
    sc = load_scenario(name)
    model, _, _ = fit_from_scenario(sc, FitConfig(seed=1, features=FEATURES))
    bank = solve_grid(model, default_lambdas(model, 32))
    lam, got = calibrate(bank, target_cost_fraction=TARGET, scenario=sc.training()
                         if hasattr(sc, "training") else sc, n_problems=4000, seed=78)
    heldout = simulate_traces(sc.training() if hasattr(sc, "training") else sc,
                              n_problems=4000, seed=77)
    mon = DriftMonitor.from_traces(bank.nearest(lam), heldout)
    return {"scenario": sc, "bank": bank, "lam": lam, "training_cost": got, "monitor": mon}


def fresh(mon: DriftMonitor) -> DriftMonitor:
    return DriftMonitor.from_dict(mon.to_dict())


def closed_loop(sc, base: dict, *, n_stream: int, seed: int, batch: int = 50) -> dict:
    """One stream of deployment episodes through the Adapter (alarm -> refit -> swap,
    paced to 10 %)."""
    w = sample_world(sc, n_problems=n_stream, seed=seed)
    ad = Adapter(base["bank"], lam=base["lam"], monitor=fresh(base["monitor"]),
                 target_cost=TARGET, min_episodes=200, max_episodes=3200)
    spent = np.zeros(n_stream)
    version = np.zeros(n_stream, np.int64)
    correct = np.zeros(n_stream, bool)
    t_refit = 0.0
    for lo in range(0, n_stream, batch):
        hi = min(n_stream, lo + batch)
        sub = _subworld(w, lo, hi)
        v = ad.version
        bp = DriftBatchPolicy(ad.policy)
        res = simulate_routing(sub, bp, record=True)
        traces = served_format(routed_traces(sub, res))
        spent[lo:hi] = res.strong_tokens
        correct[lo:hi] = res.correct
        version[lo:hi] = v
        for i, tr in enumerate(traces):
            rec = ad.episode_done(tr, version=v, drift_sums=bp.acc[i])
            if rec is not None:
                t_refit += rec["refit_s"]
    always = w.always_strong_tokens().astype(float)
    swaps = [s for s in ad.swaps if s["swapped"]]
    return {"adapter": ad, "alarm_episode": ad.alarms[0] if ad.alarms else None,
            "alarms_at": ad.alarms, "swap_episodes": [s["episode"] for s in swaps],
            "failed_refits": [s["reason"] for s in ad.swaps if not s["swapped"]],
            "refit_s_total": t_refit,
            "cost_all": float(spent.sum() / always.sum()),
            "cost_after_3000": float(spent[3000:].sum() / always[3000:].sum())
            if n_stream > 3000 else None,
            "accuracy_all": float(correct.mean()),
            "pacer": ad.pacer.summary()}


def loop_figures(name: str, base: dict, *, n_stream: int, seeds: list[int], n_eval: int
                 ) -> dict:
    sc = load_scenario(name)
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        r = closed_loop(sc, base, n_stream=n_stream, seed=seed)
        ad = r.pop("adapter")
        fams = ["trim-pomdp-deploy", ad.bank.family("trim-pomdp-loop"), "trim-thr"]
        if seed == seeds[0]:
            fams.insert(0, "trim-pomdp")
        ev = evaluate(sc, fams, n_problems=n_eval, seed=31337)
        kept = ev.gain_kept()
        r.update(kept={k: float(v) for k, v in kept.items()},
                 cpt_95={k: c.metrics["cpt_95"] for k, c in ev.curves.items()},
                 max_accuracy={k: c.metrics["max_accuracy"] for k, c in ev.curves.items()},
                 seed=seed, wall_s=time.perf_counter() - t0)
        rows.append(r)
        print(f"loop {name} seed {seed}: alarm at {r['alarm_episode']}, swaps at "
              f"{r['swap_episodes']}, failed {len(r['failed_refits'])}; cost all "
              f"{r['cost_all']:.4f}, 3000+ {r['cost_after_3000']}; kept "
              + ", ".join(f"{k} {100 * v:.1f}%" for k, v in r["kept"].items())
              + "; CPT95 " + ", ".join(f"{k} {v:.3f}" for k, v in r["cpt_95"].items())
              + "; max acc " + ", ".join(f"{k} {v:.4f}" for k, v in r["max_accuracy"].items())
              + f" ({r['wall_s']:.0f} s)", flush=True)
    return {"streams": rows}


def far_figures(name: str, base: dict, n: int) -> dict:
    pol = base["bank"].nearest(base["lam"])
    feats = routed_features(pol, load_scenario(name), n, seed=10_000)
    k = count_alarms(fresh(base["monitor"]), feats)
    lo, hi = poisson_ci(k, n / 1000)
    row = {"lambda": base["lam"], "training_cost": base["training_cost"],
           "threshold": base["monitor"].threshold, "episodes": n, "alarms": k,
           "per_1000": k / (n / 1000), "ci95": [lo, hi]}
    print(f"FAR {name}: {k} alarms in {n} episodes = {row['per_1000']:.4f} per 1000 "
          f"[{lo:.4f}, {hi:.4f}] (h={row['threshold']:.2f})", flush=True)
    return row


def table(out: dict) -> list[str]:
    """One line per scenario: medians (min-max) over the stream seeds."""
    def rng(v, f):
        v = [x for x in v if x is not None]
        if not v:
            return "never"
        return f"{f(float(np.median(v)))} ({f(min(v))}-{f(max(v))})"

    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = ["scenario | alarm episode | kept % (loop) | kept % (no refit) | CPT95 loop / "
             "TRIM-Thr | cost % (all) | cost % (3000+) | swaps"]
    for name, d in out["loop"].items():
        rows = d["streams"]
        k0 = rows[0]["kept"].get("trim-pomdp")
        cpt = [r["cpt_95"]["trim-pomdp-loop"] for r in rows]
        thr = rows[0]["cpt_95"]["trim-thr"]
        cpt_s = rng([c for c in cpt if c == c], lambda x: f"{x:.3f}")
        if any(c != c for c in cpt):
            cpt_s += f" ({sum(c != c for c in cpt)} never)"
        lines.append(
            f"{name} | {rng([r['alarm_episode'] for r in rows], lambda x: f'{x:.0f}')} | "
            f"{rng([r['kept']['trim-pomdp-loop'] for r in rows], pct)} | "
            f"{'-' if k0 is None else pct(k0)} | {cpt_s} / "
            f"{'never' if thr != thr else format(thr, '.3f')} | "
            f"{rng([r['cost_all'] for r in rows], pct)} | "
            f"{rng([r['cost_after_3000'] for r in rows], pct)} | "
            f"{rng([len(r['swap_episodes']) for r in rows], lambda x: f'{x:.0f}')}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stream", type=int, default=6000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n-eval", type=int, default=20000)
    ap.add_argument("--far-episodes", type=int, default=2_000_000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--features", choices=("score", "score+min"), default="score",
                    help="observation features of the training fit (default score)")
    args = ap.parse_args()
    global FEATURES
    FEATURES = args.features
    if args.quick:
        args.stream, args.seeds, args.n_eval, args.far_episodes = 4000, 1, 6000, 50_000
    t0 = time.perf_counter()
    out: dict = {"command": " ".join(sys.argv), "features": FEATURES, "target": TARGET,
                 "stream": args.stream,
                 "n_eval": args.n_eval, "far_episodes": args.far_episodes}
    seeds = [4242 + 101 * i for i in range(args.seeds)]
    base = setup("default")
    out["default_setup"] = {"lambda": base["lam"], "training_cost": base["training_cost"],
                            "threshold": base["monitor"].threshold}
    out["loop"] = {}
    for name in (*DRIFT_SCENARIOS, "default"):
        out["loop"][name] = loop_figures(name, base, n_stream=args.stream, seeds=seeds,
                                         n_eval=args.n_eval)
    out["far"] = {"default": far_figures("default", base, args.far_episodes)}
    noisy = setup("noisy_prm")
    out["far"]["noisy_prm"] = far_figures("noisy_prm", noisy, args.far_episodes)
    out["loop"]["noisy_prm (own fit, no drift)"] = loop_figures(
        "noisy_prm", noisy, n_stream=args.stream, seeds=seeds[:1], n_eval=args.n_eval)
    out["table"] = table(out)
    print("\n".join(out["table"]))
    out["time_s"] = time.perf_counter() - t0
    if args.json:
        Path(args.json).write_text(json.dumps(_strict(out), indent=2, allow_nan=False) + "\n")
    print(f"done in {out['time_s']:.0f} s")


if __name__ == "__main__":
    main()
