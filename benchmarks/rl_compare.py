"""Issue 5's evidence: TRIM-Agg and TRIM-Seq against TRIM-Thr (and TRIM-POMDP when
available) on the default scenario, plus transfer to a harder scenario.

    python benchmarks/rl_compare.py --out rl_out            # full run (~15-25 min, 2 cores)
    python benchmarks/rl_compare.py --out rl_out --quick    # smoke run

Trains one bank per kind over a lambda grid (``train_grid``), saves banks and learning
curves, evaluates every family on fresh problems of the training scenario and of the
harder one (no retraining), and writes ``rl_compare.json`` with CPT/ΔIBC/APGR per policy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    from trim_pomdp.evaluation.sweep import evaluate
    from trim_pomdp.rl.grid import RLRouterBank, train_grid
    from trim_pomdp.rl.ppo import PPOConfig
    from trim_pomdp.simulation.scenario import default_scenario

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="rl_out")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n-problems", type=int, default=20000)
    ap.add_argument("--kinds", default="agg,seq")
    ap.add_argument("--n-lambdas", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=40)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scen = default_scenario()
    # harder transfer target: a weaker cheap model and a noisier, more biased PRM
    hard = scen.replace(name="harder", p_w_mean=0.90, prm_bias_sd=0.6)
    lambdas = list(np.geomspace(1e-4, 3e-3, 3 if args.quick else args.n_lambdas))
    cfg = PPOConfig(iterations=6 if args.quick else args.iterations, seed=0)
    banks = {}
    for kind in args.kinds.split(","):
        path = out / f"trim-{kind}.npz"
        if path.exists():
            banks[kind] = RLRouterBank.load(path)
            continue
        t0 = time.perf_counter()
        bank = train_grid(scen, lambdas, kind=kind, config=cfg)
        print(f"{kind}: {len(lambdas)} lambdas trained in {time.perf_counter() - t0:.0f}s",
              file=sys.stderr)
        bank.save(path)
        bank.plot_learning_curves(out / f"learning_curves_{kind}.png")
        banks[kind] = bank
    results = {}
    for name, sc in (("default", scen), ("harder", hard)):
        fams: list = ["trim-thr", "oracle", "query-oracle", "automix"]
        fams.insert(0, "trim-pomdp")
        fams += [b.family() for b in banks.values()]
        ev = evaluate(sc, fams, n_problems=args.n_problems, seed=777, keep_outcomes=True,
                      progress=lambda m: print(m, file=sys.stderr))
        print(ev.table())
        res = ev.to_dict()
        # paired bootstrap over problems: 95 % intervals of each metric and of the
        # TRIM-Seq minus TRIM-Agg and TRIM-Agg minus TRIM-Thr differences
        from trim_pomdp.evaluation.sweep import paired_bootstrap

        boot = paired_bootstrap(ev, n_boot=200, seed=1)
        ci = {}
        for fam, mets in boot.items():
            ci[fam] = {m: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))]
                       for m, v in mets.items()}
        diffs = {}
        for a, b in (("TRIM-Seq", "TRIM-Agg"), ("TRIM-Agg", "trim-thr")):
            if a in boot and b in boot:
                for m in ("delta_ibc", "cpt_95", "cpt_50"):
                    d = boot[a][m] - boot[b][m]
                    diffs[f"{a} - {b}: {m}"] = [float(np.nanpercentile(d, 2.5)),
                                                float(np.nanpercentile(d, 97.5))]
        for k, v in diffs.items():
            print(f"95% CI {k}: [{v[0]:.3f}, {v[1]:.3f}]")
        res["bootstrap_ci95"] = ci
        res["bootstrap_diff_ci95"] = diffs
        results[name] = res
    (out / "rl_compare.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
