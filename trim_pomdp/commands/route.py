"""``trim-pomdp route``: run the router against real model endpoints and write traces.

Example::

    trim-pomdp route --problems math500.jsonl \\
        --cheap http://127.0.0.1:8001/v1/Qwen/Qwen2.5-1.5B-Instruct \\
        --strong http://127.0.0.1:8002/v1/Qwen/Qwen2.5-72B-Instruct \\
        --prm http://127.0.0.1:8003/v1/Qwen/Qwen2.5-Math-PRM-7B \\
        --policy bank.npz --budget 0.002 --out traces.jsonl

``--threshold K`` routes with TRIM-Thr instead of a POMDP policy bank.

Closed loop (opt-in): ``--adapt`` with ``--drift-reference HELD_OUT.jsonl`` refits the
bank's observation model from the episodes routed so far in this run when the drift monitor
alarms (``--adapt-every N``: every N episodes instead), re-solves the bank and swaps it into
the workers' routers between episodes (:class:`trim_pomdp.fit.adapt.Adapter`).  Every
refit is one JSON line of ``<out>.adapt.jsonl`` (what changed: EM iterations and
convergence, log-likelihood before/after, per-bin changes, old/new default budget) and one
line on stderr; each swapped-in bank is saved as ``<out>.bank-v<k>.npz``; the summary has
``"adapt"``.  ``--target-cost F`` paces: one controller for the run moves lambda along the
bank to hold the realized strong-token fraction at F (with or without ``--adapt``).
Every record names the bank that routed it (``"router"``: bank keys, lambda, version), which
``trim-pomdp fit --refit-from`` checks.  A resumed ``--adapt`` run starts again from
``--policy`` (give it the last ``<out>.bank-v<k>.npz`` to go on from the latest refit).

Re-running the same command resumes: problems already in ``--out`` are skipped (each record
carries a hash of its problem's text and answer; an output written for another problem file
is refused, exit 2).
A second run on the same ``--out`` while one is running is refused too (exit 2): the run holds
an ``fcntl`` lock on ``<out>.lock``, released when it ends, however it ends.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from trim_pomdp.commands.endpoint_options import add_endpoint_arguments, build_endpoints
from trim_pomdp.errors import TrimPomdpError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "route",
        help="route problems through cheap/strong model endpoints with a PRM; write traces",
        description=(
            "Run the TRIM loop (cheap draft, PRM score, route, maybe regenerate with the strong "
            "model) on every problem of a JSONL file against OpenAI-compatible endpoints and a "
            "vLLM PRM; append one trace per problem to --out (resumable)."
        ),
    )
    p.add_argument("--problems", required=True, help="JSONL: {id?, problem, answer?} per line")
    add_endpoint_arguments(p)
    pol = p.add_mutually_exclusive_group(required=True)
    pol.add_argument("--policy", metavar="BANK.npz",
                     help="a saved router bank: TRIM-POMDP or TRIM-POMDP+ (solve-grid, demo) "
                     "or TRIM-Agg/TRIM-Seq (trim-pomdp train)")
    pol.add_argument("--threshold", type=float, metavar="K",
                     help="TRIM-Thr: regenerate when the PRM score is below K")
    p.add_argument("--budget", type=float, metavar="LAMBDA",
                   help="with --policy: the bank's lambda to use (nearest solved one); "
                        "default: the budget the bank records (solve-grid --target-cost)")
    p.add_argument("--out", required=True, help="trace file (JSONL, appended)")
    p.add_argument("--concurrency", type=int, default=16, help="episodes in flight (default 16)")
    p.add_argument("--max-steps", type=int, default=30, help="steps per episode (default 30)")
    p.add_argument("--labels", choices=["outcome", "none"], default="outcome",
                   help="step labels from the answer check (default outcome)")
    p.add_argument("--no-resume", action="store_true",
                   help="refuse to append to an existing --out instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--drift-reference", metavar="TRACES.jsonl",
                   help="watch for PRM drift (POMDP banks): calibrate a label-free drift "
                   "monitor on these held-out in-distribution cheap-model traces, feed it "
                   "every routed episode, warn when it alarms and put its state in the "
                   "summary (\"drift\")")
    p.add_argument("--adapt", action="store_true",
                   help="closed loop (POMDP banks): on a drift alarm (--drift-reference) or "
                   "every --adapt-every episodes, refit the observation model from this "
                   "run's routed episodes, re-solve and swap the bank in between episodes; "
                   "each refit is a line of <out>.adapt.jsonl")
    p.add_argument("--adapt-every", type=int, metavar="N",
                   help="with --adapt: refit every N episodes instead of on drift alarms")
    p.add_argument("--adapt-min-episodes", type=int, default=200, metavar="N",
                   help="with --adapt: episodes before the first refit after an alarm "
                   "(default 200; later refits when they double)")
    p.add_argument("--adapt-max-episodes", type=int, default=3200, metavar="N",
                   help="with --adapt: most episodes one refit uses (default 3200)")
    p.add_argument("--target-cost", type=float, metavar="F",
                   help="POMDP banks: pace the run to strong tokens = F x always-strong's "
                   "(a controller moves lambda along the bank after every episode, "
                   "starting at --budget or the bank's default)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return p


def _require_http_client(name: str) -> None:
    """Fail before any episode starts when the chosen HTTP client library is missing (one
    line naming the extra), instead of failing every request of every episode."""
    import importlib.util

    if importlib.util.find_spec(name) is None or sys.modules.get(name, ...) is None:
        # cli.main reports a missing extra as one line naming it, exit 1 (not bad input)
        raise ModuleNotFoundError(f"No module named {name!r} (--http-client {name})", name=name)


def _bank_router_factory(path: str, budget: float | None,
                         drift_reference: str | None = None
                         ) -> tuple[Any, str, Any, float, Any]:
    """Router factory, display name, drift monitor (or None), the budget used and the bank
    (None for an RL bank) for a saved bank (any kind :func:`load_bank` reads); without
    ``budget``, the bank's recorded default."""
    from trim_pomdp.banks import load_bank

    bank = load_bank(path)
    if budget is None:
        budget = getattr(bank, "default_lambda", None)
        if budget is None:
            raise TrimPomdpError(
                f"--policy {path} records no default budget (RL banks, and banks written "
                "before solve-grid recorded one); give --budget LAMBDA (one of the bank's "
                "lambdas)")
    if hasattr(bank, "router"):  # an RL bank (TRIM-Agg / TRIM-Seq)
        from trim_pomdp.rl.agents import RLRouter

        r = bank.router(budget)

        def make_rl() -> RLRouter:
            # one per worker: a router keeps its episode's state; the weights are shared
            return RLRouter(r.kind, r.params, lam=r.lam, token_scale=r.token_scale,
                            metadata=r.metadata)

        if drift_reference:
            raise TrimPomdpError("--drift-reference needs a POMDP policy bank (the monitor "
                                 "predicts scores from the bank's model)")
        return make_rl, f"trim-{r.kind}", None, float(budget), None
    from trim_pomdp.routing.router import Router

    policy = _select_policy(bank, budget)
    monitor = None
    if drift_reference:
        from trim_pomdp.routing.drift import DriftMonitor
        from trim_pomdp.traces.records import load_traces

        if getattr(bank.model, "n_hidden", 3) != 3:
            raise TrimPomdpError("--drift-reference supports TRIM-POMDP banks (3 hidden "
                                 "states), not TRIM-POMDP+ banks")
        try:
            monitor = DriftMonitor.from_traces(policy, load_traces(drift_reference))
        except ValueError as exc:
            raise TrimPomdpError(f"--drift-reference {drift_reference}: {exc}") from None
    return ((lambda: Router(policy, drift=monitor)), bank.family().name, monitor, float(budget),
            bank)


def _make_adapter(args: argparse.Namespace, bank: Any, budget: float | None,
                  monitor: Any) -> Any:
    """The run's :class:`~trim_pomdp.fit.adapt.Adapter` for ``--adapt`` / ``--target-cost``
    (None without either); its swaps go to ``<out>.adapt.jsonl``, stderr and
    ``<out>.bank-v<k>.npz``."""
    import os

    if not args.adapt and args.target_cost is None:
        return None
    if bank is None or not hasattr(bank, "model") or getattr(bank.model, "n_hidden", 3) != 3:
        raise TrimPomdpError("--adapt and --target-cost need a TRIM-POMDP policy bank "
                             "(solve-grid), not an RL or TRIM-POMDP+ bank")
    if args.adapt and monitor is None and args.adapt_every is None:
        raise TrimPomdpError("--adapt needs --drift-reference TRACES.jsonl (refit on drift "
                             "alarms) or --adapt-every N (refit every N episodes)")
    from trim_pomdp.fit.adapt import Adapter

    log_path = args.out + ".adapt.jsonl"
    adapter: Any = None

    def on_swap(rec: dict[str, Any]) -> None:
        from trim_pomdp._io import strict_json

        if rec["swapped"]:
            p = f"{args.out}.bank-v{rec['to_version']}.npz"
            adapter.bank.save(p)
            adapter.bank_path = os.path.abspath(p)
            rec["bank_path"] = adapter.bank_path
            em = rec["em"]
            print(f"trim-pomdp route: adapt: episode {rec['episode']}: {rec['trigger']} -> "
                  f"refit on {rec['n_traces']} episodes ({em['n_iter']} EM iterations, "
                  f"log-likelihood {rec['loglik_before']:.1f} -> {rec['loglik_after']:.1f}); "
                  f"bank version {rec['to_version']} swapped in ({p})", file=sys.stderr)
        else:
            print(f"trim-pomdp route: adapt: episode {rec['episode']}: refit failed, "
                  f"version {rec['to_version']} kept: {rec['reason']}", file=sys.stderr)
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(strict_json(rec), allow_nan=False) + "\n")

    try:
        adapter = Adapter(
            bank, lam=budget, monitor=monitor, every=args.adapt_every,
            target_cost=args.target_cost, min_episodes=args.adapt_min_episodes,
            max_episodes=args.adapt_max_episodes, on_swap=on_swap,
            bank_path=os.path.abspath(args.policy), refit=args.adapt)
    except ValueError as exc:
        raise TrimPomdpError(f"--adapt: {exc}") from None
    return adapter


def _select_policy(bank: Any, budget: float) -> Any:
    """The bank's policy for the solved lambda nearest to ``budget``."""
    import numpy as np

    if hasattr(bank, "nearest"):
        return bank.nearest(budget)
    lambdas = np.asarray(bank.lambdas, dtype=float)
    if lambdas.size == 0:
        raise TrimPomdpError("the policy bank holds no policies")
    i = int(np.argmin(np.abs(lambdas - budget)))
    if hasattr(bank, "policies"):
        return bank.policies[i]
    return bank[i]


def run(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from trim_pomdp.routing.baselines import ThresholdPolicy
    from trim_pomdp.serving import (
        MathAnswerChecker,
        OutputLockedError,
        ResumeMismatchError,
        load_problems,
        read_finished,
        run_batch,
    )

    _require_http_client(args.http_client)
    if not 1 <= args.max_steps <= 30:
        raise TrimPomdpError(f"--max-steps must be in [1, 30]; got {args.max_steps}")
    if args.concurrency < 1:
        raise TrimPomdpError(f"--concurrency must be >= 1; got {args.concurrency}")
    problems = load_problems(args.problems)
    monitor = None
    bank = None
    budget = None
    if args.adapt_every is not None and not args.adapt:
        raise TrimPomdpError("--adapt-every needs --adapt")
    if args.target_cost is not None and not 0.0 < args.target_cost < 1.0:
        raise TrimPomdpError(f"--target-cost must be a cost fraction in (0, 1); got "
                             f"{args.target_cost}")
    if args.threshold is not None:
        if args.drift_reference:
            raise TrimPomdpError("--drift-reference needs --policy (a POMDP bank)")
        if args.adapt or args.target_cost is not None:
            raise TrimPomdpError("--adapt and --target-cost need --policy (a POMDP bank)")
        k = args.threshold
        factory = lambda: ThresholdPolicy(k)  # noqa: E731
        policy_name = f"threshold(k={k:g})"
    else:
        factory, family, monitor, budget, bank = _bank_router_factory(
            args.policy, args.budget, args.drift_reference)
        policy_name = f"{family}({os.path.basename(args.policy)}, lambda~{budget:g}" + (
            ", the bank's default)" if args.budget is None else ")")
    if args.no_resume and os.path.exists(args.out) and os.path.getsize(args.out) > 0:
        raise TrimPomdpError(f"{args.out} exists and --no-resume was given")
    adapter = _make_adapter(args, bank, budget, monitor)
    tag = None
    if bank is not None and adapter is None and getattr(bank.model, "n_hidden", 3) == 3:
        from trim_pomdp.fit.refit import router_tag

        tag = router_tag(bank, budget, path=os.path.abspath(args.policy))

    cheap, strong, prm = build_endpoints(args, max(args.concurrency, 1) * 2)
    try:
        summary = asyncio.run(
            run_batch(
                problems,
                factory,
                cheap,
                strong,
                prm,
                out=args.out,
                concurrency=args.concurrency,
                max_steps=args.max_steps,
                checker=MathAnswerChecker(),
                fallback=args.fallback.replace("-", "_"),
                label_steps=args.labels,
                progress=not args.no_progress,
                adapter=adapter,
                tag=tag,
            )
        )
    except (OutputLockedError, ResumeMismatchError) as exc:
        # refused before anything ran: the output belongs to another run or problem file
        print(f"trim-pomdp route: error: {exc}", file=sys.stderr)
        return 2
    report = summary.to_dict()
    report["policy"] = policy_name
    report["out"] = args.out
    # accuracy over every finished problem in the file, including earlier (resumed) runs
    finished = read_finished(args.out, repair=False)
    total = [r for r in finished.values() if r.get("id") in {p.id for p in problems}]
    labelled = [
        r for r in total if r.get("final_correct") is not None or r.get("status") == "aborted"
    ]
    report["file_episodes"] = len(total)
    report["file_accuracy"] = (
        sum(r.get("final_correct") is True for r in labelled) / len(labelled) if labelled else None
    )
    n = max(len(total), 1)
    report["file_strong_tokens_per_query"] = sum(r.get("strong_tokens", 0) for r in total) / n
    if adapter is not None:
        report["adapt"] = adapter.summary()
        monitor = adapter.monitor if adapter.monitor is not None else monitor
    if monitor is not None:
        report["drift"] = monitor.summary()
        if monitor.alarm and not (adapter is not None and adapter.refit):
            z = report["drift"]["mean_z"]
            print(f"trim-pomdp route: warning: PRM drift detected at episode "
                  f"{monitor.alarm_episode} of this run: live scores do not follow the "
                  f"bank's observation model (mean standardised location {z['location']:+.2f}"
                  f", spread {z['spread']:+.2f}); consider refitting: trim-pomdp fit "
                  f"--refit-from {args.out} --out DIR (or route with --adapt)",
                  file=sys.stderr)
    if args.json:
        from trim_pomdp._io import strict_json

        print(json.dumps(strict_json(report), allow_nan=False))
    else:
        acc = report["file_accuracy"]
        print(
            f"{policy_name}: {report['episodes']} episodes this run "
            f"({report['done']} done, {report['aborted']} aborted, {report['errors']} failed, "
            f"{report['skipped']} already in {args.out}) in {report['wall_s']:.1f} s"
        )
        print(
            f"file: {len(total)} problems, accuracy "
            f"{'n/a' if acc is None else f'{acc:.3f}'}, strong tokens/query "
            f"{report['file_strong_tokens_per_query']:.1f}, "
            f"regenerations {report['regenerations']}, fallbacks {report['fallbacks']}"
        )
        if report["retries"]:
            print(
                f"requests retried {report['retries']} times "
                f"({report['bad_responses']} unusable 200 answers)"
            )
        if summary.errors:
            print(
                f"{len(summary.errors)} problems failed (see {args.out}.errors.jsonl); "
                "re-run the same command to retry them",
                file=sys.stderr,
            )
    return 1 if summary.errors else 0
