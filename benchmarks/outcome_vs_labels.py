"""A router fitted from answer outcomes alone vs one fitted from step labels, in the
simulator (the question behind route -> fit: how much do missing step labels cost?).

Training data, from the default scenario (seed 1, never the evaluation world):

* labels:   the demo's pipeline (fit_from_scenario): always-cheap and always-strong traces
            with first-error step labels (ProcessBench-style), 4,000 problems each;
* outcomes: one routed run of TRIM-Thr (k = 0.5) on 4,000 problems, as trim-pomdp route
            records it (strong-written steps, the regenerated drafts' scores), keeping only
            each answer's correctness: no step labels.  Fitted by OutcomeEM.

Both models are solved on the same 32-lambda grid and evaluated with TRIM-Thr on 20,000
fresh problems (common random numbers).

Run:  python benchmarks/outcome_vs_labels.py [--n-fit 4000] [--n-eval 20000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def outcome_only(traces):
    """What trim-pomdp route writes, without step labels: a strong-written step's score is
    the draft's (kept as draft_prm_score); the strong step itself is unscored here."""
    from trim_pomdp.traces.records import Step, Trace

    out = []
    for t in traces:
        steps = []
        for s in t.steps:
            extra = {"writer": s.extra["writer"]}
            if s.extra["writer"] == "strong":
                extra["draft_prm_score"] = s.prm_score
                steps.append(Step(prm_score=None, tokens=s.tokens, extra=extra))
            else:
                steps.append(Step(prm_score=s.prm_score, tokens=s.tokens, extra=extra))
        out.append(Trace(id=t.id, problem=t.problem, model=t.model, steps=steps,
                         final_correct=t.final_correct))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-fit", type=int, default=4000)
    ap.add_argument("--n-eval", type=int, default=20000)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    from trim_pomdp.evaluation.from_scenario import FitConfig, fit_from_scenario
    from trim_pomdp.evaluation.sweep import evaluate
    from trim_pomdp.fit.outcome import OutcomeEM
    from trim_pomdp.fit.transition import TransitionModel
    from trim_pomdp.routing.bank import default_lambdas, solve_grid
    from trim_pomdp.routing.baselines import ThresholdPolicy
    from trim_pomdp.routing.model import TrimModel
    from trim_pomdp.simulation.scenario import default_scenario
    from trim_pomdp.simulation.synth_traces import routed_traces
    from trim_pomdp.simulation.world import sample_world, simulate_routing
    from trim_pomdp.traces.table import traces_to_table

    sc = default_scenario()
    t0 = time.perf_counter()
    labels_model, tm_lab, _ = fit_from_scenario(
        sc, FitConfig(n_fit_problems=args.n_fit, seed=1, features="score"))
    t_lab = time.perf_counter() - t0

    world = sample_world(sc, n_problems=args.n_fit, seed=1)
    run = simulate_routing(world, ThresholdPolicy(0.5), record=True)
    traces = outcome_only(routed_traces(world, run))
    t0 = time.perf_counter()
    em = OutcomeEM(n_bins=20, n_bootstrap=100, seed=0).fit(traces)
    tm = TransitionModel(p_w=em.p_w_, p_s=em.p_s_).fit(traces_to_table(traces))
    outcome_model = TrimModel(tm, em.observation_model(), n_score_bins=10)
    t_em = time.perf_counter() - t0

    fams = []
    for name, model in (("trim-pomdp (step labels)", labels_model),
                        ("trim-pomdp (outcomes only)", outcome_model)):
        bank = solve_grid(model, default_lambdas(model, 32))
        fams.append(dataclasses.replace(bank.family(), name=name))
    ev = evaluate(sc, [*fams, "trim-thr"], n_problems=args.n_eval, seed=2026)
    d = ev.to_dict()
    res = {
        "world_p_w_mean": float(np.mean(world.p_w)), "world_p_s_mean": float(np.mean(world.p_s)),
        "labels": {"p_w": tm_lab.p_w_, "p_w_ci": tm_lab.p_w_ci_.tolist(), "p_s": tm_lab.p_s_,
                   "fit_s": t_lab},
        "outcomes": {"p_w": em.p_w_, "p_w_ci": em.p_w_ci_.tolist(), "p_s": em.p_s_,
                     "p_s_ci": em.p_s_ci_.tolist(), "n_wrong": em.n_wrong_,
                     "n_correct": em.n_correct_, "fit_s": t_em,
                     "routed_strong_fraction": float(np.mean(
                         [s.extra["writer"] == "strong" for t in traces for s in t.steps]))},
        "evaluation": {k: {m: c["metrics"][m] for m in ("delta_ibc", "cpt_50", "cpt_80",
                                                        "cpt_95", "apgr", "max_accuracy")}
                       for k, c in d["curves"].items()},
    }
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
