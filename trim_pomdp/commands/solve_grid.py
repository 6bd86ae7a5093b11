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
    p.add_argument("--n-score-bins", type=int, default=10)
    p.add_argument("--n-min-bins", type=int, default=None,
                   help="bins of the min-previous-score feature (observation model 'score+min')")
    p.add_argument("--n-token-bins", type=int, default=4)
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
    from trim_pomdp.trim import TrimModel

    if args.scenario is not None:
        from trim_pomdp.scenario import BUILTIN_SCENARIOS, builtin_scenario, load_scenario

        sc = (builtin_scenario(args.scenario) if args.scenario in BUILTIN_SCENARIOS
              else load_scenario(args.scenario))
        return TrimModel.from_scenario(sc, n_score_bins=args.n_score_bins,
                                       n_token_bins=args.n_token_bins)
    if args.observation is None:
        raise SystemExit(
            "trim-pomdp solve-grid: error: --observation is required with --transition"
        )
    from trim_pomdp.observation import ObservationModel
    from trim_pomdp.transition import TransitionModel

    return TrimModel(TransitionModel.load(args.transition), ObservationModel.load(args.observation),
                     n_score_bins=args.n_score_bins, n_min_bins=args.n_min_bins,
                     n_token_bins=args.n_token_bins)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from trim_pomdp._io import check_output_path
    from trim_pomdp.trim import default_lambdas, solve_grid

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
    bank = solve_grid(model, lams, **opts)
    elapsed = time.perf_counter() - t0
    path = bank.save(args.out)
    rows = [{"lambda": p.lam, "value_b0": p.value_b0, "upper_bound": p.upper_bound,
             "gap": p.upper_bound - p.value_b0, "n_alpha": int(p.alphas.shape[0])} for p in bank]
    if args.json:
        print(json.dumps({"out": str(path), "time_s": elapsed, "policies": rows}))
    else:
        print(f"{'lambda':>10} {'value(b0)':>10} {'upper':>10} {'gap':>9} {'alphas':>7}")
        for r in rows:
            print(f"{r['lambda']:10.3e} {r['value_b0']:10.5f} {r['upper_bound']:10.5f} "
                  f"{r['gap']:9.2e} {r['n_alpha']:7d}")
        print(f"solved in {elapsed:.2f} s; wrote {path} and {path.with_suffix('.json')}")
    return 0
