"""TRIM-POMDP+ vs TRIM-POMDP vs TRIM-Thr on scenarios with difficulty spread, per-trace PRM
bias, both, and the default scenario (issue 7).  Not a pytest benchmark: a script.

    TRIM_POMDP_SHARED=../shared python benchmarks/eval_latent.py [--n-problems 20000]
        [--out benchmarks/results/latent_eval.json] [--scenarios spread bias both default]

Every family sees the same evaluation world (common random numbers).  "trim-pomdp" and
"trim-pomdp+" fit their models on traces simulated with other seeds (never the
evaluation world); the "-exact" families are built from the scenario's own parameters
(TrimModel.from_scenario / LatentTrimModel.from_scenario, D = B = 3) as an ablation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from trim_pomdp.evaluation.from_scenario import fit_latent_model
from trim_pomdp.evaluation.registry import FamilyOptions
from trim_pomdp.evaluation.sweep import compare, evaluate, paired_bootstrap
from trim_pomdp.simulation.scenario import load_scenario

FAMILIES = ["trim-pomdp+", "trim-pomdp", "trim-thr",
            "trim_pomdp.evaluation.families:pomdp_plus_exact_family",
            "trim_pomdp.evaluation.families:pomdp_mean_exact_family"]


def scenarios() -> dict:
    d = load_scenario("default")
    base = dataclasses.replace(d, prm_bias_sd=0.0, prm_correlation=0.0)
    return {
        # issue 7: per-problem p_w and p_s with Beta concentration 5, PRM without bias
        "spread": dataclasses.replace(base, name="spread", p_w_concentration=5.0,
                                      p_s_concentration=5.0),
        # no difficulty spread, strong per-trace PRM bias (sd 1 on the logit scale)
        "bias": dataclasses.replace(base, name="bias", p_w_concentration=None,
                                    p_s_concentration=None, prm_bias_sd=1.0),
        "both": dataclasses.replace(base, name="both", p_w_concentration=5.0,
                                    p_s_concentration=5.0, prm_bias_sd=1.0),
        "default": d,
        "noisy_prm": load_scenario("noisy_prm"),
    }


METRICS = (("cpt_50", False), ("cpt_80", False), ("cpt_95", False), ("delta_ibc", True),
           ("max_accuracy", True))


def paired_comparisons(ev, n_boot: int) -> dict:
    """TRIM-POMDP+ minus each other family, paired bootstrap over problems (95% CI)."""
    import dataclasses as dc

    keep = {k: v for k, v in ev.curves.items() if k in ("trim-pomdp+", "trim-pomdp", "trim-thr")}
    samples = paired_bootstrap(dc.replace(ev, curves=keep), n_boot=n_boot, seed=0)
    res = {}
    for other in ("trim-pomdp", "trim-thr"):
        res[other] = {}
        for metric, hib in METRICS:
            c = compare(samples, "trim-pomdp+", other, metric, higher_is_better=hib)
            res[other][metric] = c
            print(f"  trim-pomdp+ - {other:<10} {metric:<12} diff {c['diff']:+.4f} "
                  f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]  P(better) {c['p_better']:.2f}",
                  flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-problems", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--scenarios", nargs="*", default=["spread", "bias", "both", "default"])
    ap.add_argument("--families", nargs="*", default=FAMILIES)
    ap.add_argument("--out", default="benchmarks/results/latent_eval.json")
    ap.add_argument("--n-boot", type=int, default=200,
                    help="paired bootstrap replicates over problems (0: none)")
    args = ap.parse_args(argv)
    out = {}
    outp = Path(args.out)
    if outp.exists():
        out = json.loads(outp.read_text())
    scs = scenarios()
    for name in args.scenarios:
        sc = scs[name]
        t0 = time.perf_counter()
        ev = evaluate(sc, args.families, n_problems=args.n_problems, seed=args.seed,
                      family_options=FamilyOptions(scenario=sc, seed=0),
                      keep_outcomes=args.n_boot > 0,
                      progress=lambda m: print("  ", m, file=sys.stderr, flush=True))
        print(ev.table(), flush=True)
        print(f"({time.perf_counter() - t0:.0f} s)\n", flush=True)
        # the classes trim-pomdp+ fitted (same call and seed as inside its family)
        model, fitter = fit_latent_model(sc, seed=1)
        fit = fitter.summary()
        print(f"trim-pomdp+ fit: D={fit['D']} p_w={np.round(fit['p_w'], 3).tolist()} "
              f"p_s={np.round(fit['p_s'], 3).tolist()} "
              f"prior={np.round(fit['difficulty_prior'], 3).tolist()}; "
              f"B={fit['B']} shifts={np.round(fit['bias_shift'], 2).tolist()} "
              f"prior={np.round(fit['bias_prior'], 3).tolist()}\n", flush=True)
        out[name] = {"scenario": sc.to_dict(), "evaluation": ev.to_dict(), "fit": fit}
        if args.n_boot > 0:
            out[name]["paired"] = paired_comparisons(ev, args.n_boot)
        outp.parent.mkdir(parents=True, exist_ok=True)
        outp.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
