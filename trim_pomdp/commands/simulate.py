"""``trim-pomdp simulate PROBLEM.pomdp POLICY``: Monte Carlo value of a saved policy.

``POLICY`` is a ``.npz`` written by ``trim-pomdp solve --out`` / ``AlphaVectorPolicy.save``,
or a SARSOP ``.policy`` XML file.  Prints the mean discounted return and its standard
error (``--json``: one JSON object).

A problem too large for dense arrays is read as compressed rows (``POMDP.from_file``'s
``storage="auto"``) and simulated from them, never building its ``A x S x S`` transitions
(only ``Z``, ``A x S x O``, is made dense; if even that would exceed ``DENSE_VIEW_MAX_MB``
the run stops with one line, exit 2).

Any ``--episodes`` runs in bounded memory (running moments, no array of returns); a run
longer than a few seconds prints a progress line to stderr every 10 s, and Ctrl-C reports
the estimate from the episodes done so far and exits with 130.
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
        "simulate",
        help="Monte Carlo mean discounted return of a policy",
        description="Simulate a policy (.npz or SARSOP .policy) on a .pomdp problem.",
    )
    p.add_argument("problem", metavar="PROBLEM.pomdp")
    p.add_argument("policy", metavar="POLICY", help="policy .npz, or SARSOP .policy XML")
    p.add_argument("--episodes", type=int, default=1000, metavar="N", help="default 1000")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="default 0")
    p.add_argument(
        "--horizon",
        type=int,
        default=None,
        metavar="H",
        help="steps per episode (default: tail of the discounted sum <= 1e-3)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p  # type: ignore[no-any-return]


def run(args: argparse.Namespace) -> int:
    from trim_pomdp.engine.model import POMDP
    from trim_pomdp.engine.montecarlo import simulate
    from trim_pomdp.engine.policy import AlphaVectorPolicy

    problems = []
    if args.episodes < 2:
        problems.append(f"--episodes must be >= 2; got {args.episodes}")
    if args.horizon is not None and args.horizon < 1:
        problems.append(f"--horizon must be >= 1; got {args.horizon}")
    if not 0 <= args.seed < 2**32:
        problems.append(f"--seed must be in 0..2**32-1; got {args.seed}")
    if problems:
        print(f"trim-pomdp simulate: error: {'; '.join(problems)}", file=sys.stderr)
        return 2
    from trim_pomdp.errors import (
        MemoryLimitError,
        ModelValidationError,
        PolicyFormatError,
        PomdpFormatError,
    )

    policy_path = Path(args.policy)
    try:
        model = POMDP.from_file(args.problem)
        if policy_path.suffix == ".policy":
            policy = AlphaVectorPolicy.from_sarsop_policy(policy_path)
        else:
            policy = AlphaVectorPolicy.load(policy_path)
        policy.check_model(model)
    except (PomdpFormatError, ModelValidationError, PolicyFormatError, MemoryLimitError) as exc:
        print(f"trim-pomdp simulate: error: {exc}", file=sys.stderr)  # bad input: one line
        return 2
    t0 = time.monotonic()
    last = [t0]

    def show_progress(done: int, total: int, mean: float, stderr: float) -> None:
        # quiet for short runs; then one line every 10 s, with a rough time left
        now = time.monotonic()
        if now - t0 < 2.0 or (now - last[0] < 10.0 and last[0] != t0):
            return
        last[0] = now
        left = (now - t0) * (total - done) / done
        print(f"simulated {done} of {total} episodes ({100 * done / total:.3g} %), mean "
              f"{mean:.6f} ± {stderr:.6f}, {now - t0:.0f} s, about {_duration(left)} left "
              "(Ctrl-C stops and reports)", file=sys.stderr, flush=True)

    res = simulate(model, policy, args.episodes, args.horizon, args.seed, keep_returns=False,
                   progress=show_progress)
    lb = policy.metadata.get("lower_bound")
    out = {
        "problem": str(args.problem),
        "policy": str(policy_path),
        "episodes": res.episodes,
        "episodes_requested": args.episodes,
        "interrupted": res.interrupted,
        "horizon": res.horizon,
        "seed": res.seed,
        "mean": res.mean,
        "stderr": res.stderr,
        "truncation_bound": res.truncation_bound if math.isfinite(res.truncation_bound) else None,
        "policy_value_at_b0": policy.value(model.b0),
        "solver_lower_bound": lb,
    }
    rc = 130 if res.interrupted else 0
    if args.json:
        print(json.dumps(out, allow_nan=False))
        return rc
    if res.interrupted:
        print(f"interrupted after {res.episodes} of {args.episodes} episodes: the estimate "
              "below uses those")
    print(
        f"mean discounted return {res.mean:.6f} ± {res.stderr:.6f} (standard error) over "
        f"{res.episodes} episodes of {res.horizon} steps, seed {res.seed}"
    )
    if math.isfinite(res.truncation_bound):
        print(f"truncation: steps after {res.horizon} add at most {res.truncation_bound:.3g}")
    print(f"policy's own value at b0 (max_k alpha_k . b0): {out['policy_value_at_b0']:.6f}")
    if lb is not None:
        print(f"solver's lower bound at b0 when the policy was saved: {lb:.6f}")
    if res.stderr > 0:
        z = (res.mean - out["policy_value_at_b0"]) / res.stderr
        print(
            f"mean - policy value: {z:+.2f} standard errors (for a solver's lower-bound "
            "vectors the true value is at least max_k alpha_k . b0, so a positive difference "
            "is expected while the gap is open)"
        )
    return rc


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
