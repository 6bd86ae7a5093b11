"""Defaults that hold (issue 15, item 4): the library's default fit and lambda grid against
the previous ones, on every built-in scenario.

* old: 10 equal-width score bins and ``legacy_lambdas`` (32 geometric values of
  ``lambda * c_bar`` from 1e-3 to 1);
* new (today's defaults): the score-bin count chosen by solved value
  (:mod:`trim_pomdp.routing.binning`) and ``default_lambdas`` (``lambda = 0`` then 31
  geometric values).

Both are fitted exactly as ``trim-pomdp evaluate`` fits its ``trim-pomdp`` family
(:func:`~trim_pomdp.evaluation.from_scenario.fit_from_scenario`, 4,000 training problems,
seed 1), on the training world ("train") and, for the drift scenarios, also on the
deployment world ("deploy": no drift, the same PRM in training and deployment).  All
families of one scenario are simulated on the same 20,000 problems (common random
numbers), with TRIM-Thr's 52 thresholds as the reference of best accuracy.

The no-drift check: on ``default`` and ``noisy_prm`` a paired bootstrap over problems
(``--bootstrap`` replicates, the same resampled problems for old and new) of
new - old for ΔIBC, CPT(50 %) and CPT(95 %) and best accuracy, with 95 % percentile
intervals; on every scenario the same bootstrap of (best accuracy - TRIM-Thr's best).

``--cli`` measures instead what a user of the command line gets: on each scenario's
deployment world (the world itself when it has no drift) 4,000 labelled cheap and 4,000
strong traces are written as JSONL, ``trim-pomdp fit CHEAP --strong STRONG --out DIR`` and
``trim-pomdp solve-grid --transition ... --observation ... --out bank.npz`` run with paths
only (so the fit's defaults: ``score+min`` features, bins chosen by solved value, the
default grid), and the bank is evaluated beside TRIM-Thr on 20,000 problems of that world;
each family's most accurate parameter there is also read on 20,000 fresh problems (out of
sample: the in-sample maximum over 52 thresholds against 32 lambdas favours the thresholds).

Run (``--sweep-bins 10,16,24,32,40,48``: best accuracy of fixed counts on the overconfident
deployment world instead):
    nice python benchmarks/bench_defaults.py [--bootstrap 500] \
        [--out benchmarks/results/defaults.json]
    nice python benchmarks/bench_defaults.py --cli [--out benchmarks/results/defaults_cli.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trim_pomdp.cli import main as cli_main
from trim_pomdp.evaluation.from_scenario import FitConfig, fit_from_scenario
from trim_pomdp.evaluation.registry import threshold_family
from trim_pomdp.evaluation.sweep import compare, evaluate, paired_bootstrap
from trim_pomdp.routing.bank import PolicyBank, default_lambdas, legacy_lambdas, solve_grid
from trim_pomdp.simulation.scenario import BUILTIN_SCENARIOS, load_scenario
from trim_pomdp.simulation.synth_traces import simulate_traces
from trim_pomdp.traces.records import save_traces

NO_DRIFT_CHECK = ("default", "noisy_prm")


def _family(scenario, world: str, new: bool, name: str, info: dict):
    cfg = FitConfig() if new else FitConfig(n_score_bins=10)
    t0 = time.perf_counter()
    model, _, _ = fit_from_scenario(scenario, cfg, world=world)
    t_fit = time.perf_counter() - t0
    lams = default_lambdas(model, 32) if new else legacy_lambdas(model, 32)
    t0 = time.perf_counter()
    bank = solve_grid(model, lams)
    info[name] = {"n_score_bins": model.n_score_bins, "fit_s": round(t_fit, 2),
                  "solve_32_s": round(time.perf_counter() - t0, 3)}
    return bank.family(name)


def _sweep_bins(args: argparse.Namespace) -> int:
    sc = load_scenario(args.sweep_scenario)
    fams = [threshold_family()]
    for n in (int(v) for v in args.sweep_bins.split(",")):
        model, _, _ = fit_from_scenario(sc, FitConfig(n_score_bins=n), world="deployment")
        fams.append(solve_grid(model, default_lambdas(model, 32)).family(f"bins-{n}"))
    ev = evaluate(sc, fams)
    thr = float(ev.curves["trim-thr"].accuracy.max())
    for fam, c in ev.curves.items():
        i = int(c.accuracy.argmax())
        print(f"{args.sweep_scenario} (deployment fit) {fam:10s} best accuracy "
              f"{c.accuracy[i]:.4f} (TRIM-Thr {thr:.4f}) at {c.param_name} {c.params[i]:.3g}, "
              f"cost {c.cost_fraction[i]:.3f}; dIBC {c.metrics['delta_ibc']:.1f}")
    return 0


def _cli(args: argparse.Namespace) -> int:
    import tempfile

    results: dict = {"bootstrap": args.bootstrap, "how": "trim-pomdp fit + solve-grid, paths "
                     "only, on 4,000 + 4,000 labelled traces of the deployment world",
                     "scenarios": {}}
    for name in args.scenarios.split(","):
        sc = load_scenario(name)  # traces of a drift scenario carry its deployment PRM
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            save_traces(simulate_traces(sc, model="cheap", n_problems=4000, seed=1),
                        d / "cheap.jsonl")
            save_traces(simulate_traces(sc, model="strong", n_problems=4000, seed=2),
                        d / "strong.jsonl")
            t0 = time.perf_counter()
            assert cli_main(["fit", str(d / "cheap.jsonl"), "--strong", str(d / "strong.jsonl"),
                             "--out", str(d / "fit"), "--no-plots", "--json"]) == 0
            t_fit = time.perf_counter() - t0
            assert cli_main(["solve-grid", "--transition", str(d / "fit" / "transition.npz"),
                             "--observation", str(d / "fit" / "observation.npz"),
                             "--out", str(d / "bank.npz")]) == 0
            bank = PolicyBank.load(d / "bank.npz")
        m = bank.model
        ev = evaluate(sc, [threshold_family(), bank.family("cli-default")],
                      keep_outcomes=args.bootstrap > 0)
        thr = float(ev.curves["trim-thr"].accuracy.max())
        c = ev.curves["cli-default"]
        i = int(c.accuracy.argmax())
        row = {"n_problems": ev.n_problems, "features": "score+min" if m.uses_min else "score",
               "n_score_bins": m.n_score_bins, "n_min_bins": m.n_min_bins, "fit_s": round(t_fit, 1),
               "trim_thr_max_accuracy": thr, "max_accuracy": float(c.accuracy[i]),
               "at_lambda": float(c.params[i]), "cost_there": float(c.cost_fraction[i]),
               "delta_ibc": c.metrics["delta_ibc"], "cpt_95": c.metrics["cpt_95"],
               "trim_thr_delta_ibc": ev.curves["trim-thr"].metrics["delta_ibc"]}
        line = (f"{name:20s} cli-default ({row['features']}, {m.n_score_bins} bins) best accuracy "
                f"{c.accuracy[i]:.4f} vs TRIM-Thr {thr:.4f} ({c.accuracy[i] - thr:+.4f}) at lambda "
                f"{c.params[i]:.3g}, cost {c.cost_fraction[i]:.3f}; "
                f"dIBC {c.metrics['delta_ibc']:.0f} vs {row['trim_thr_delta_ibc']:.0f}")
        if args.bootstrap > 0:
            samples = paired_bootstrap(ev, n_boot=args.bootstrap, seed=0)
            row["paired_bootstrap_best_accuracy_minus_thr"] = b = compare(
                samples, "cli-default", "trim-thr", "max_accuracy")
            line += f"; paired bootstrap {b['diff']:+.4f} [{b['ci_low']:+.4f}, {b['ci_high']:+.4f}]"
        # out of sample: each family's most accurate parameter chosen on these problems, its
        # accuracy read on 20,000 fresh ones (the in-sample maximum favours the finer family)
        ev2 = evaluate(sc, [threshold_family(), bank.family("cli-default")],
                       seed=int(sc.seed) + 1000003)
        oos = {}
        for fam in ("trim-thr", "cli-default"):
            j = int(ev.curves[fam].accuracy.argmax())
            oos[fam] = float(ev2.curves[fam].accuracy[j])
        row["out_of_sample_best_accuracy"] = oos
        line += (f"; out of sample {oos['cli-default']:.4f} vs TRIM-Thr {oos['trim-thr']:.4f} "
                 f"({oos['cli-default'] - oos['trim-thr']:+.4f})")
        print(line, flush=True)
        results["scenarios"][name] = row
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", type=int, default=500)
    ap.add_argument("--scenarios", default=",".join(BUILTIN_SCENARIOS))
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--sweep-bins", default=None, metavar="N1,N2,...",
                    help="instead: best accuracy of fixed score-bin counts (default grid), "
                         "fitted on --sweep-scenario's deployment world, against TRIM-Thr")
    ap.add_argument("--sweep-scenario", default="drift_overconfident")
    ap.add_argument("--cli", action="store_true",
                    help="instead: the command line's default fit and grid on each scenario's "
                         "deployment world against TRIM-Thr")
    args = ap.parse_args(argv)
    if args.cli:
        return _cli(args)
    if args.sweep_bins:
        return _sweep_bins(args)
    results: dict = {"bootstrap": args.bootstrap, "scenarios": {}}
    print(f"{'scenario':20s} {'family':14s} {'bins':>4s} {'maxAcc':>7s} {'thr':>7s} "
          f"{'diff':>7s} {'dIBC':>8s} {'CPT50':>6s} {'CPT95':>6s}")
    for name in args.scenarios.split(","):
        sc = load_scenario(name)
        info: dict = {}
        worlds = ["training"] + (["deployment"] if sc.has_drift else [])
        fams = [threshold_family()]
        for world in worlds:
            tag = "train" if world == "training" else "deploy"
            for new in (False, True):
                fams.append(_family(sc, world, new, f"{'new' if new else 'old'}-{tag}", info))
        keep = args.bootstrap > 0
        ev = evaluate(sc, fams, keep_outcomes=keep)
        thr = float(ev.curves["trim-thr"].accuracy.max())
        rows = {}
        for fam, c in ev.curves.items():
            m = c.metrics
            acc = float(c.accuracy.max())
            rows[fam] = {"max_accuracy": acc, "delta_ibc": m["delta_ibc"],
                         "cpt_50": m["cpt_50"], "cpt_95": m["cpt_95"],
                         "max_accuracy_minus_thr": acc - thr, **info.get(fam, {})}
            nb = info.get(fam, {}).get("n_score_bins", "")
            print(f"{name:20s} {fam:14s} {nb!s:>4s} {acc:7.4f} {thr:7.4f} {acc - thr:+7.4f} "
                  f"{m['delta_ibc']:8.2f} {m['cpt_50']:6.3f} {m['cpt_95']:6.3f}")
        out = {"n_problems": ev.n_problems, "acc_cheap": ev.acc_cheap,
               "acc_strong": ev.acc_strong, "families": rows}
        if keep:
            samples = paired_bootstrap(ev, n_boot=args.bootstrap, seed=0)
            vs_thr = {}
            for fam in rows:
                if fam == "trim-thr":
                    continue
                d = compare(samples, fam, "trim-thr", "max_accuracy")
                vs_thr[fam] = d
                print(f"  paired bootstrap {fam} - trim-thr best accuracy {d['diff']:+.4f}  "
                      f"95% CI [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]")
            out["paired_bootstrap_best_accuracy_minus_thr"] = vs_thr
            if name in NO_DRIFT_CHECK:
                diffs = {}
                for metric, hib in (("delta_ibc", True), ("cpt_50", False),
                                    ("cpt_95", False), ("max_accuracy", True)):
                    d = compare(samples, "new-train", "old-train", metric,
                                higher_is_better=hib)
                    diffs[metric] = d
                    print(f"  paired bootstrap new - old {metric:13s} {d['diff']:+9.4f}  "
                          f"95% CI [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]  "
                          f"({int(d['n'])} replicates)")
                out["paired_bootstrap_new_minus_old"] = diffs
        results["scenarios"][name] = out
        sys.stdout.flush()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
