"""``trim-pomdp evaluate``: sweep router families on a scenario and report CPT/ΔIBC/APGR."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

#: default families that are fitted and solved from the scenario (seconds to minutes); with
#: --bank and no --policies they are not rebuilt
_FITTED_FAMILIES = ("trim-pomdp", "trim-pomdp+")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate router families on a simulation scenario",
        description="Simulate every policy family over its budget sweep on the same "
        "problems (common random numbers) and print CPT(50/80/95%%), delta-IBC and APGR.",
    )
    p.add_argument("--scenario", default="default",
                   help="scenario JSON file or built-in name (default, noisy_prm, "
                   "drift_noisy, drift_overconfident, drift_shifted); "
                   "default: %(default)s")
    p.add_argument("--policies", default=None,
                   help="comma-separated families (trim-pomdp, trim-thr, random, oracle, "
                   "query-oracle, automix, always-cheap, always-strong, trim-pomdp-deploy "
                   "= the POMDP fitted on the deployment world, the reference of kept%%, or "
                   "module:function); "
                   "default: all available")
    p.add_argument("--bank", action="append", default=[], metavar="[NAME=]PATH",
                   help="also evaluate a saved router bank (PolicyBank .npz+.json from "
                   "solve-grid/demo, TRIM-POMDP+ banks, RL banks from `trim-pomdp train`), "
                   "without rebuilding or retraining it; it stands in for the family it "
                   "would be built as (trim-pomdp, trim-pomdp+, trim-agg, trim-seq). "
                   "Without --policies, the banks are compared with the baselines that need "
                   "no fitting (trim-pomdp/trim-pomdp+ are not rebuilt from the scenario). "
                   "NAME= names it in the report instead. Repeatable")
    p.add_argument("--n-problems", type=int, default=None, help="override the scenario's")
    p.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    p.add_argument("--n-params", type=int, default=None,
                   help="budget values per family (default: per family)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="B",
                   help="also report 95%% paired-bootstrap intervals (B replicates, "
                   "resampling problems) for CPT50, delta-IBC and APGR")
    p.add_argument("--target-cost", type=float, default=None, metavar="F",
                   help="also calibrate each family's budget to cost fraction F on the "
                   "training world and report the cost and accuracy it realizes on the "
                   "evaluated (deployment) world")
    p.add_argument("--calibration-problems", type=int, default=4000, metavar="N",
                   help="problems of the calibration world for --target-cost "
                   "(default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None,
                   help="directory for evaluation.json and curves.png")
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from trim_pomdp.evaluation.registry import FamilyOptions
    from trim_pomdp.evaluation.sweep import FamilyUnavailableError, evaluate
    from trim_pomdp.simulation.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    families = None
    if args.policies:
        families = [s.strip() for s in args.policies.split(",") if s.strip()]
    if args.bank:
        import dataclasses

        from trim_pomdp.banks import load_bank
        from trim_pomdp.errors import PolicyFormatError
        from trim_pomdp.evaluation.registry import DEFAULT_FAMILIES

        loaded, replaces = [], set()
        for spec in args.bank:
            name, sep, path = spec.partition("=")
            if not sep:
                name, path = "", spec
            try:
                bank = load_bank(path)
            except (FileNotFoundError, PolicyFormatError) as exc:
                print(f"trim-pomdp evaluate: error: --bank {spec}: {exc}", file=sys.stderr)
                return 2
            fam = bank.family()
            # the registry name this bank would have been built under (RL banks report
            # themselves as "TRIM-Agg"/"TRIM-Seq" but are registered as trim-agg/trim-seq)
            kind = getattr(bank, "kind", None)
            replaces.add(f"trim-{kind}" if isinstance(kind, str) else fam.name)
            replaces.add(fam.name)
            if name:
                fam = dataclasses.replace(fam, name=name)
            loaded.append(fam)
        names = [f.name for f in loaded]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            print(f"trim-pomdp evaluate: error: two --bank families are named {dup}; "
                  "give them names with NAME=PATH", file=sys.stderr)
            return 2
        # a saved bank stands in for the family it would be built as (no rebuild/retraining)
        if families is None:
            # banks alone: compare them with the baselines that need no fitting; the
            # families that would be fitted and solved from the scenario are not rebuilt
            fitted = [f for f in _FITTED_FAMILIES if f not in replaces]
            families = [f for f in DEFAULT_FAMILIES if f not in replaces and f not in fitted]
            if fitted:
                print(f"[evaluate] saved banks against the baselines; not rebuilt from the "
                      f"scenario: {', '.join(fitted)} (name it in --policies to include it)",
                      file=sys.stderr, flush=True)
        families = [f for f in families if f not in replaces]
        families += loaded
    if args.bootstrap < 0:
        print(f"trim-pomdp evaluate: error: --bootstrap must be >= 0; got {args.bootstrap}",
              file=sys.stderr)
        return 2
    if args.n_problems is not None and args.n_problems < 1:
        print(f"trim-pomdp evaluate: error: --n-problems must be >= 1; got {args.n_problems}",
              file=sys.stderr)
        return 2
    if args.target_cost is not None and not 0.0 <= args.target_cost <= 1.0:
        print(f"trim-pomdp evaluate: error: --target-cost must be in [0, 1]; got "
              f"{args.target_cost}", file=sys.stderr)
        return 2
    if args.calibration_problems < 1:
        print(f"trim-pomdp evaluate: error: --calibration-problems must be >= 1; got "
              f"{args.calibration_problems}", file=sys.stderr)
        return 2
    opts = FamilyOptions(scenario=scenario, n_params=args.n_params,
                         seed=0 if args.seed is None else args.seed)

    def progress(msg: str) -> None:
        print(f"[evaluate] {msg}", file=sys.stderr, flush=True)

    try:
        ev = evaluate(scenario, families, n_problems=args.n_problems, seed=args.seed,
                      family_options=opts, progress=progress,
                      keep_outcomes=args.bootstrap > 0,
                      target_cost_fraction=args.target_cost,
                      calibration_problems=args.calibration_problems)
    except (KeyError, FamilyUnavailableError) as exc:
        print(f"trim-pomdp evaluate: error: {exc.args[0]}", file=sys.stderr)
        return 2
    out = ev.to_dict()
    ci: dict[str, dict[str, list[float | None]]] = {}
    if args.bootstrap > 0:
        import numpy as np

        from trim_pomdp.evaluation.sweep import paired_bootstrap

        progress(f"paired bootstrap, {args.bootstrap} replicates")
        samples = paired_bootstrap(ev, n_boot=args.bootstrap, seed=opts.seed)
        for name, met in samples.items():
            ci[name] = {}
            for key in ("cpt_50", "delta_ibc", "apgr"):
                v = met.get(key, np.array([]))
                v = v[~np.isnan(v)]
                ci[name][key] = ([float(x) for x in np.percentile(v, [2.5, 97.5])]
                                 if len(v) == len(met.get(key, [])) and len(v) else [None, None])
        out["bootstrap_ci95"] = ci
    if args.out:
        d = Path(args.out)
        d.mkdir(parents=True, exist_ok=True)
        (d / "evaluation.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        scenario.to_json(d / "scenario.json")
        try:
            from trim_pomdp.evaluation.plots import plot_curves

            png = plot_curves(ev, d / "curves.png")
            progress(f"wrote {d / 'evaluation.json'} and {png}")
        except ImportError as exc:  # the plot is optional; the JSON is written
            progress(f"wrote {d / 'evaluation.json'}; no plot: {exc.name or 'matplotlib'} "
                     "is not installed (pip install 'trim_pomdp[plot]')")
    if args.json:
        print(json.dumps({"scenario": out["scenario"], "n_problems": out["n_problems"],
                          "acc_cheap": out["acc_cheap"], "acc_strong": out["acc_strong"],
                          "strong_tokens_always_strong": out["strong_tokens_always_strong"],
                          "policies": {n: c["metrics"] for n, c in out["curves"].items()},
                          "skipped": out["skipped"],
                          "gain_kept": out["gain_kept"], "reference": out["reference"],
                          "target_cost_fraction": out["target_cost_fraction"],
                          "targets": out["targets"],
                          **({"bootstrap_ci95": ci} if ci else {})}))
    else:
        print(ev.table())
        if ci:
            print(f"\n95% paired-bootstrap intervals ({args.bootstrap} replicates over problems;"
                  " '-' = level not reached in some replicate)")

            def fmt(iv: list[float | None], spec: str) -> str:
                return ("-" if iv[0] is None else
                        f"[{format(iv[0], spec)}, {format(iv[1], spec)}]")

            for name, c in ci.items():
                print(f"{name:<16} CPT50 {fmt(c['cpt_50'], '.3f'):<17} "
                      f"dIBC% {fmt(c['delta_ibc'], '.1f'):<19} APGR {fmt(c['apgr'], '.3f')}")
    return 0
