"""``trim-pomdp demo``: the whole TRIM pipeline on a built-in scenario.

scenario -> simulated labelled traces -> fitted TransitionModel + ObservationModel ->
TrimModel -> policy bank over a lambda grid -> every router evaluated on fresh problems ->
table (CPT 50/80/95, ΔIBC, APGR) + Pareto plot.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="end-to-end TRIM demo on a built-in scenario (fit, solve, evaluate, plot)",
        description=(
            "Simulate labelled traces from a scenario, fit the transition and observation "
            "models, solve the TRIM POMDP for a lambda grid, evaluate every router on fresh "
            "problems and print CPT(50/80/95%), ΔIBC and APGR per policy."
        ),
    )
    p.add_argument("--scenario", default="default", metavar="NAME|PATH",
                   help="built-in scenario name (default, noisy_prm) or a scenario JSON file")
    p.add_argument("--n-problems", type=int, default=20000,
                   help="fresh evaluation problems (default 20000)")
    p.add_argument("--n-fit", type=int, default=4000,
                   help="problems simulated for the training traces (default 4000)")
    p.add_argument("--seed", type=int, default=2026,
                   help="evaluation world seed; training uses seed+1 and seed+2 (default 2026)")
    p.add_argument("--observation", choices=("kde", "beta", "hist"), default="kde")
    p.add_argument("--features", choices=("score", "score+min"), default="score")
    p.add_argument("--n-score-bins", type=int, default=10)
    p.add_argument("--n-min-bins", type=int, default=4)
    p.add_argument("--n-token-bins", type=int, default=4)
    p.add_argument("--lambdas", type=int, default=32, help="size of the lambda grid")
    p.add_argument("--rl", action="store_true",
                   help="also train and evaluate TRIM-Agg and TRIM-Seq (6 lambdas each; "
                        "about 10 minutes on 2 cores)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object keyed by policy (progress goes to stderr)")
    p.add_argument("--out", metavar="DIR", default="trim-pomdp-demo",
                   help="write the Pareto plot, the policy bank and JSON here "
                        "(default: %(default)s)")
    return p


def _load_scenario(name: str):
    from trim_pomdp.simulation.scenario import BUILTIN_SCENARIOS, builtin_scenario, load_scenario

    return builtin_scenario(name) if name in BUILTIN_SCENARIOS else load_scenario(name)


def checks(ev: Any) -> dict[str, Any]:
    """The claims the demo is meant to show, evaluated on its own numbers."""
    m = ev.metrics
    out: dict[str, Any] = {}
    if "trim-pomdp" in m and "trim-thr" in m:
        p, t = m["trim-pomdp"], m["trim-thr"]
        out["pomdp_higher_delta_ibc_than_thr"] = bool(p["delta_ibc"] > t["delta_ibc"])
        out["pomdp_lower_cpt50_than_thr"] = bool(p["cpt_50"] < t["cpt_50"])
    step = [n for n, c in ev.curves.items() if c.kind == "step" and n not in
            ("always-cheap", "always-strong", "oracle")]
    query = [n for n, c in ev.curves.items() if c.kind == "query"]
    if step and query:
        out["step_beats_query_delta_ibc"] = {
            s: bool(all(_gt(m[s]["delta_ibc"], m[q]["delta_ibc"]) for q in query)) for s in step
        }
    if "oracle" in m:
        others = [n for n in m if n not in ("oracle", "always-cheap", "always-strong")]
        out["oracle_bounds_all_apgr"] = bool(all(m["oracle"]["apgr"] >= m[n]["apgr"]
                                                 for n in others))
        out["oracle_bounds_all_delta_ibc"] = bool(all(_gt(m["oracle"]["delta_ibc"],
                                                          m[n]["delta_ibc"]) for n in others))
    return out


def _gt(a: float, b: float) -> bool:
    if math.isnan(b):
        return not math.isnan(a)
    return not math.isnan(a) and a > b


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from trim_pomdp.evaluation.from_scenario import FitConfig, fit_from_scenario
    from trim_pomdp.evaluation.sweep import evaluate
    from trim_pomdp.routing.bank import default_lambdas, solve_grid
    from trim_pomdp.simulation.world import sample_world

    log = sys.stderr if args.json else sys.stdout
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", file=log, flush=True)

    scenario = _load_scenario(args.scenario)
    say(f"scenario {scenario.name!r}: p_w {scenario.p_w_mean:.4f}, p_s {scenario.p_s_mean:.4f}, "
        f"PRM bias sd {scenario.prm_bias_sd}, correlation {scenario.prm_correlation}")
    cfg = FitConfig(n_fit_problems=args.n_fit, seed=args.seed + 1, estimator=args.observation,
                    features=args.features, n_score_bins=args.n_score_bins,
                    n_min_bins=args.n_min_bins, n_token_bins=args.n_token_bins,
                    n_lambdas=args.lambdas)
    say(f"1/4 simulating {args.n_fit} cheap + {args.n_fit} strong labelled traces and fitting "
        f"the models ({args.observation}, features {args.features}) ...")
    model, tm, _ = fit_from_scenario(scenario, cfg)
    ci_w = ", ".join(f"{float(v):.4f}" for v in tm.p_w_ci_)
    ci_s = ", ".join(f"{float(v):.4f}" for v in tm.p_s_ci_)
    say(f"    p_w = {tm.p_w_:.4f} [{ci_w}], p_s = {tm.p_s_:.4f} [{ci_s}]; {model!r}")
    lams = default_lambdas(model, args.lambdas)
    say(f"2/4 solving the TRIM POMDP for {len(lams)} lambdas "
        f"({lams[0]:.2e} .. {lams[-1]:.2e}) ...")
    t0 = time.perf_counter()
    bank = solve_grid(model, lams)
    gaps = np.array([p.upper_bound - p.value_b0 for p in bank])
    say(f"    solved in {time.perf_counter() - t0:.2f} s; max gap at b0 {np.nanmax(gaps):.2e}")
    say(f"3/4 evaluating every policy on {args.n_problems} fresh problems (seed {args.seed}) ...")
    world = sample_world(scenario, n_problems=args.n_problems, seed=args.seed)
    families = [bank.family(), "trim-pomdp+", *(("trim-agg", "trim-seq") if args.rl else ()),
                "trim-thr", "random", "oracle", "query-oracle", "automix",
                "always-cheap", "always-strong"]
    ev = evaluate(world, families, progress=lambda m: say("    " + m))
    result = {name: c.to_dict()["metrics"] for name, c in ev.curves.items()}
    claims = checks(ev)
    say("4/4 results")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        bank.save(out / "policy_bank.npz")
        (out / "evaluation.json").write_text(json.dumps(ev.to_dict(), indent=1) + "\n")
        written = [out / "policy_bank.npz", out / "evaluation.json"]
        try:
            from trim_pomdp.evaluation.plots import plot_curves

            written.insert(0, plot_curves(ev, out / "pareto.png",
                                          title=f"TRIM routers on scenario {scenario.name!r}"))
        except ImportError as exc:  # the plot is optional; everything else is written
            say(f"    no plot: {exc.name or 'matplotlib'} is not installed "
                "(pip install 'trim_pomdp[plot]')")
        say("    wrote " + ", ".join(str(w) for w in written))
    if args.json:
        print(json.dumps({"scenario": scenario.name, "n_problems": ev.n_problems,
                          "acc_cheap": ev.acc_cheap, "acc_strong": ev.acc_strong,
                          "policies": result, "checks": claims}))
    else:
        print(ev.table())
        print()
        for k, v in claims.items():
            print(f"check {k}: {v}")
    say("done")
    return 0
