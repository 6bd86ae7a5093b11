"""``trim-pomdp solve-grid``: solve the TRIM POMDP for a grid of budget multipliers."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "solve-grid",
        help="solve the TRIM POMDP for a grid of budgets (lambda) -> PolicyBank",
        description=(
            "Build the TRIM POMDP from fitted models (trim-pomdp fit) or from a scenario's "
            "means, solve it for every lambda in parallel, and write the PolicyBank "
            "(.npz + .json)."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--transition", metavar="PATH", help="fitted TransitionModel (.npz)")
    src.add_argument("--scenario", metavar="NAME|PATH",
                     help="build the model from a scenario's means (built-in name or JSON path)")
    p.add_argument("--observation", metavar="PATH",
                   help="fitted ObservationModel (.npz); required with --transition")
    p.add_argument("--n-score-bins", type=int, default=None,
                   help="PRM score bins (default: the bins `trim-pomdp fit` recorded in the "
                        "observation file, else 10 for a file that records none; with "
                        "--scenario, chosen by solved value, trim_pomdp.routing.binning)")
    p.add_argument("--n-min-bins", type=int, default=None,
                   help="bins of the min-previous-score feature (observation model "
                        "'score+min'; default: the bins the observation file records)")
    p.add_argument("--n-token-bins", type=int, default=4)
    p.add_argument("--target-cost", type=float, default=0.10, metavar="F",
                   help="record as the bank's default budget the lambda whose expected "
                        "strong-token cost is nearest F x always-strong's in the fitted model "
                        "(what `route --policy` uses without --budget; default 0.10)")
    p.add_argument("--lambdas", type=int, default=32, metavar="N",
                   help="number of lambdas on the default geometric grid (default 32)")
    p.add_argument("--lambda-values", metavar="L1,L2,...",
                   help="explicit comma-separated lambdas (overrides --lambdas)")
    p.add_argument("--n-samples", type=int, default=None, help="solver default if omitted")
    p.add_argument("--n-refine", type=int, default=None, help="solver default if omitted")
    p.add_argument("--grid-resolution", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="BANK.npz")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def build_model(args: argparse.Namespace):
    from trim_pomdp.routing.model import TrimModel

    if args.scenario is not None:
        from trim_pomdp.simulation.scenario import (
            BUILTIN_SCENARIOS,
            builtin_scenario,
            load_scenario,
        )

        sc = (builtin_scenario(args.scenario) if args.scenario in BUILTIN_SCENARIOS
              else load_scenario(args.scenario))
        n = args.n_score_bins
        if n is None:
            from trim_pomdp.routing.binning import choose_n_bins

            n = choose_n_bins(lambda k: TrimModel.from_scenario(
                sc, n_score_bins=k, n_token_bins=args.n_token_bins)).n_bins
        return TrimModel.from_scenario(sc, n_score_bins=n, n_token_bins=args.n_token_bins)
    if args.observation is None:
        raise SystemExit(
            "trim-pomdp solve-grid: error: --observation is required with --transition"
        )
    from trim_pomdp.fit.observation import ObservationModel
    from trim_pomdp.fit.transition import TransitionModel

    om = ObservationModel.load(args.observation)
    n_score, n_min = resolve_binning(om, args.observation, args.n_score_bins, args.n_min_bins)
    return TrimModel(TransitionModel.load(args.transition), om, n_score_bins=n_score,
                     n_min_bins=n_min, n_token_bins=args.n_token_bins)


def resolve_binning(om: Any, path: str, n_score_bins: int | None,
                    n_min_bins: int | None) -> tuple[int, int | None]:
    """The observation bins for ``om`` (loaded from ``path``): what the file records
    (``ObservationModel.binning``, written by ``trim-pomdp fit``), an explicit option only
    where the file records nothing; an explicit option that disagrees with the file is a
    :class:`~trim_pomdp.errors.ModelValidationError` naming both values."""
    from trim_pomdp.errors import ModelValidationError

    rec = om.binning
    if om.features == "score" and n_min_bins is not None:
        raise ModelValidationError(
            f"--n-min-bins {n_min_bins}: {path} models the PRM score alone (features "
            "'score'), so there are no min-score bins; drop --n-min-bins")
    if rec is None:  # a file written before the bins were recorded: the options decide
        if om.features == "score+min" and n_min_bins is None:
            raise ModelValidationError(
                f"{path} (features 'score+min') records no min-score bins (written by an "
                "older trim-pomdp fit); give --n-min-bins N (fit's default was 4), or refit")
        return (10 if n_score_bins is None else n_score_bins), n_min_bins
    for opt, given, key in (("--n-score-bins", n_score_bins, "n_score_bins"),
                            ("--n-min-bins", n_min_bins, "n_min_bins")):
        if given is not None and given != rec[key]:
            raise ModelValidationError(
                f"{opt} {given} disagrees with {path}, which was fitted for {key}="
                f"{rec[key]}; drop {opt} or refit with the bins you want")
    return int(rec["n_score_bins"]), rec["n_min_bins"]


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from trim_pomdp._io import check_output_path
    from trim_pomdp.errors import ModelValidationError
    from trim_pomdp.routing.bank import (
        default_budget,
        default_lambdas,
        expected_cost_fractions,
        solve_grid,
    )

    # before the solve (PolicyBank.save creates a missing folder, so create it now): an
    # unwritable output must not cost the solve
    check_output_path(args.out, what="--out", create=True)
    model = build_model(args)
    if args.lambda_values:
        try:
            lams = np.array([float(v) for v in args.lambda_values.split(",")])
        except ValueError as exc:
            raise SystemExit(f"trim-pomdp solve-grid: error: --lambda-values: {exc}") from exc
    else:
        lams = default_lambdas(model, args.lambdas)
    log = sys.stderr if args.json else sys.stdout
    print(f"model: {model!r}", file=log)
    print(f"solving {len(lams)} lambdas (X={model.n_observed}, O={model.n_observations}, "
          f"H={model.horizon}) ...", file=log, flush=True)
    t0 = time.perf_counter()
    opts = {"grid_resolution": args.grid_resolution, "n_threads": args.threads,
            "seed": args.seed}
    if args.n_samples is not None:
        opts["n_samples"] = args.n_samples
    if args.n_refine is not None:
        opts["n_refine"] = args.n_refine
    if not 0.0 <= args.target_cost <= 1.0:
        raise ModelValidationError(f"--target-cost must be in [0, 1]; got {args.target_cost}")
    bank = solve_grid(model, lams, **opts)
    elapsed = time.perf_counter() - t0
    fractions = expected_cost_fractions(bank)
    bank.default_lambda = default_budget(bank, args.target_cost)
    bank.target_cost_fraction = args.target_cost
    path = bank.save(args.out)
    rows = [{"lambda": p.lam, "value_b0": p.value_b0, "upper_bound": p.upper_bound,
             "gap": p.upper_bound - p.value_b0, "n_alpha": int(p.alphas.shape[0]),
             "cost_fraction_est": None if np.isnan(f) else float(f)}
            for p, f in zip(bank, fractions, strict=True)]
    if args.json:
        print(json.dumps({"out": str(path), "time_s": elapsed, "policies": rows,
                          "default_lambda": bank.default_lambda,
                          "target_cost_fraction": bank.target_cost_fraction}))
    else:
        print(f"{'lambda':>10} {'value(b0)':>10} {'upper':>10} {'gap':>9} {'alphas':>7} "
              f"{'cost est':>8}")
        for r in rows:
            cf = r["cost_fraction_est"]
            print(f"{r['lambda']:10.3e} {r['value_b0']:10.5f} {r['upper_bound']:10.5f} "
                  f"{r['gap']:9.2e} {r['n_alpha']:7d} {'-' if cf is None else f'{cf:.3f}':>8}"
                  + ("  <- default budget" if r["lambda"] == bank.default_lambda else ""))
        print(f"solved in {elapsed:.2f} s; wrote {path} and {path.with_suffix('.json')}")
        i = int(np.flatnonzero(bank.lambdas == bank.default_lambda)[0])
        est = "" if np.isnan(fractions[i]) else f", estimated cost {fractions[i]:.3f}"
        print(f"default budget (route --policy without --budget): lambda "
              f"{bank.default_lambda:.4g}, nearest --target-cost {args.target_cost:g}{est} "
              "(cost est: strong tokens / always-strong's in the fitted model, from the "
              "solved values)")
    return 0
