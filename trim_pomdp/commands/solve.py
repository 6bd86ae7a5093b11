"""``trim-pomdp solve PROBLEM.pomdp``: solve a POMDP with the point-based solver.

Prints a progress table (time, lower bound, upper bound, gap, alpha vectors, iteration)
while solving, then a summary; ``--json`` prints one JSON object instead.  Ctrl-C stops the
solver, which returns its best policy so far: it is still reported and saved, and the exit
code is 130.  ``--out`` saves
the policy as ``.npz`` (+ JSON metadata), ``--sarsop-policy`` as SARSOP ``.policy`` XML.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

_HEADER = f"{'time_s':>9} {'lower':>14} {'upper':>14} {'gap':>12} {'alphas':>8} {'iteration':>10}"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "solve",
        help="solve a .pomdp file (point-based, anytime bounds)",
        description="Solve a POMDP in Cassandra's .pomdp format; report lower/upper bounds at b0.",
    )
    p.add_argument("problem", metavar="PROBLEM.pomdp", help="problem file (Cassandra format)")
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="S",
        help="wall-clock limit in seconds (default: SolverConfig's, 30)",
    )
    p.add_argument(
        "--gap",
        type=float,
        default=None,
        metavar="G",
        help="stop when upper - lower at b0 <= G (default: SolverConfig's, 1e-3)",
    )
    p.add_argument(
        "--max-iterations",
        type=int,
        default=None,
        metavar="N",
        help="stop after N iterations (default: no limit)",
    )
    p.add_argument(
        "--threads", type=int, default=None, metavar="N", help="solver threads (default: all cores)"
    )
    p.add_argument(
        "--max-memory-mb",
        type=float,
        default=None,
        metavar="MB",
        help="refuse a problem whose arrays (read from its header, before allocating) or "
        "whose solver copy exceed MB, and fail with MemoryLimitError before the solver's "
        "storage exceeds MB (default: SolverConfig's, 4096)",
    )
    p.add_argument("--out", default=None, metavar="POLICY.npz", help="save the policy (.npz)")
    p.add_argument(
        "--sarsop-policy",
        default=None,
        metavar="OUT.policy",
        help="also write the policy in SARSOP's .policy XML",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object, no table")
    return p  # type: ignore[no-any-return]


def _fmt_row(t: float, lb: float, ub: float, n_alpha: float, it: float) -> str:
    return f"{t:9.3f} {lb:14.6f} {ub:14.6f} {ub - lb:12.6g} {int(n_alpha):8d} {int(it):10d}"


def _config(args: argparse.Namespace) -> Any:
    from trim_pomdp.engine.solver import SolverConfig

    kwargs: dict[str, Any] = {}
    if args.time_limit is not None:
        kwargs["time_limit"] = args.time_limit
    if args.gap is not None:
        kwargs["target_gap"] = args.gap
    if args.max_iterations is not None:
        kwargs["max_iterations"] = args.max_iterations
    if args.threads is not None:
        kwargs["n_threads"] = args.threads
    if args.max_memory_mb is not None:
        kwargs["max_memory_mb"] = args.max_memory_mb
    return SolverConfig(**kwargs)


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _rows_if_smaller(model: Any) -> Any:
    """The model as compressed rows when they take at most half its dense ``T`` and ``Z``.

    The solver holds its own compressed rows whatever it is given, so dense arrays kept
    beside it only add to the peak (TagAvoid: 30 MB of dense ``T``, 98 % zeros; the peak of a
    30 s ``solve`` fell from 133 MB to 77 MB).  A model with few zeros stays dense: its rows
    would take more memory than the arrays (12 bytes a non-zero against 8 an entry), and the
    parse of a dense file into rows is the larger of the two.
    """
    import numpy as np

    if model.storage != "dense":
        return model
    A, S, O = model.n_actions, model.n_states, model.n_observations  # noqa: E741
    nnz = int(np.count_nonzero(model.T)) + int(np.count_nonzero(model.Z))
    rows = 12.0 * nnz + 16.0 * A * S
    return model.to_sparse() if rows <= 0.5 * 8.0 * A * S * (S + O) else model


def run(args: argparse.Namespace) -> int:
    from trim_pomdp.engine.model import POMDP
    from trim_pomdp.engine.solver import solve_info

    path = Path(args.problem)
    try:
        config = _config(args)
    except (TypeError, ValueError) as exc:  # a bad option value: say which, no traceback
        print(f"trim-pomdp solve: error: {exc}", file=sys.stderr)
        return 2
    from trim_pomdp._io import check_output_path

    # before the solve: a missing or read-only output folder must not cost the solve
    if args.out is not None:
        check_output_path(args.out, what="--out")
    if args.sarsop_policy is not None:
        check_output_path(args.sarsop_policy, what="--sarsop-policy")
    from trim_pomdp.errors import MemoryLimitError, ModelValidationError, PomdpFormatError

    def bad_input(exc: Exception) -> int:
        print(f"trim-pomdp solve: error: {exc}", file=sys.stderr)
        return 2

    try:
        # The same limit bounds the parse: a short file can declare a huge model, refused
        # from its header before anything is allocated.
        model = _rows_if_smaller(POMDP.from_file(path, max_memory_mb=config.max_memory_mb))
    except (PomdpFormatError, ModelValidationError, MemoryLimitError) as exc:
        return bad_input(exc)
    out = sys.stdout
    progress: Callable[[float, float, float, int, int], None] | None = None
    if not args.json:
        print(
            f"solving {path.name}: {model.n_states} states, {model.n_actions} actions, "
            f"{model.n_observations} observations, discount {model.discount:g}",
            file=out,
        )
        print(_HEADER, file=out, flush=True)

        def print_row(t: float, lb: float, ub: float, n_alpha: int, it: int) -> None:
            # called by the solver about every 0.5 s, with the GIL held
            print(_fmt_row(t, lb, ub, n_alpha, it), file=out, flush=True)

        progress = print_row

    try:
        policy, info = solve_info(model, config, progress=progress)
    except MemoryLimitError as exc:  # the problem does not fit the limit given
        return bad_input(exc)
    if not args.json:
        print(
            _fmt_row(
                info.time_s, info.lower_bound, info.upper_bound, info.n_alpha, info.iterations
            ),
            file=out,
        )
    summary = {
        "problem": str(path),
        "n_states": model.n_states,
        "n_actions": model.n_actions,
        "n_observations": model.n_observations,
        "discount": float(model.discount),
        "lower_bound": float(info.lower_bound),
        "upper_bound": _finite_or_none(info.upper_bound),
        "gap": _finite_or_none(info.gap),
        "time_s": float(info.time_s),
        "n_alpha": int(info.n_alpha),
        "iterations": int(info.iterations),
        "n_beliefs": int(info.n_beliefs),
        "interrupted": bool(info.interrupted),
        "policy": None,
        "sarsop_policy": None,
    }
    policy.metadata.update(
        {
            k: summary[k]
            for k in (
                "problem",
                "lower_bound",
                "upper_bound",
                "gap",
                "time_s",
                "iterations",
                "interrupted",
            )
        }
    )
    if args.out is not None:
        summary["policy"] = str(policy.save(args.out))
    if args.sarsop_policy is not None:
        summary["sarsop_policy"] = str(policy.to_sarsop_policy(args.sarsop_policy, model=path.name))
    # An interrupted solve still reports and saves what it found, then exits with 130
    # (the shell's code for SIGINT) so scripts can tell it apart from a finished one.
    rc = 130 if info.interrupted else 0
    if args.json:
        print(json.dumps(summary, allow_nan=False), file=out)
        return rc
    if info.interrupted:
        print("interrupted: returning the best policy found so far", file=out)
    print(
        f"value at b0 in [{info.lower_bound:.6f}, {info.upper_bound:.6f}] (gap {info.gap:.3g}) "
        f"after {info.time_s:.3f} s, {info.iterations} iterations, {info.n_alpha} alpha "
        f"vectors, {info.n_beliefs} belief points",
        file=out,
    )
    if summary["policy"]:
        print(f"policy written to {summary['policy']}", file=out)
    if summary["sarsop_policy"]:
        print(f"SARSOP policy written to {summary['sarsop_policy']}", file=out)
    return rc
