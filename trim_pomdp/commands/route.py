"""``trim-pomdp route``: run the router against real model endpoints and write traces.

Example::

    trim-pomdp route --problems math500.jsonl \\
        --cheap http://127.0.0.1:8001/v1/Qwen/Qwen2.5-1.5B-Instruct \\
        --strong http://127.0.0.1:8002/v1/Qwen/Qwen2.5-72B-Instruct \\
        --prm http://127.0.0.1:8003/v1/Qwen/Qwen2.5-Math-PRM-7B \\
        --policy bank.npz --budget 0.002 --out traces.jsonl

``--threshold K`` routes with TRIM-Thr instead of a POMDP policy bank.  Re-running the same
command resumes: problems already in ``--out`` are skipped (each record carries a hash of its
problem's text and answer; an output written for another problem file is refused, exit 2).
A second run on the same ``--out`` while one is running is refused too (exit 2): the run holds
an ``fcntl`` lock on ``<out>.lock``, released when it ends, however it ends.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

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
    p.add_argument("--cheap", required=True, metavar="URL/MODEL", help="cheap model endpoint")
    p.add_argument("--strong", required=True, metavar="URL/MODEL", help="strong model endpoint")
    p.add_argument("--prm", required=True, metavar="URL/MODEL", help="vLLM PRM endpoint")
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
    p.add_argument("--max-tokens", type=int, default=1024, help="per step (default 1024)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--retries", type=int, default=3, help="retries per request (default 3)")
    p.add_argument("--backoff", type=float, default=0.5, help="first backoff in s (default 0.5)")
    p.add_argument("--circuit-breaker", type=int, metavar="N",
                   help="after N consecutive failed calls to an endpoint, fail fast for "
                        "--circuit-cooldown seconds (default: off)")
    p.add_argument("--circuit-cooldown", type=float, default=30.0, metavar="S")
    p.add_argument("--max-response-mb", type=float, default=16.0, metavar="MB",
                   help="largest response body read, in MiB (default 16); a larger one fails "
                        "that call")
    p.add_argument("--api-key-env", metavar="VAR", help="env var with the API key (all endpoints)")
    for who in ("cheap", "strong", "prm"):
        p.add_argument(f"--{who}-api-key-env", metavar="VAR", help=f"API-key env var for {who}")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="extra HTTP header for every endpoint (repeatable)")
    p.add_argument("--http-client", choices=["aiohttp", "httpx"], default="aiohttp",
                   help="HTTP library (default aiohttp: ~6x less client CPU per request)")
    p.add_argument("--cheap-chat", action="store_true", help="cheap model via /chat/completions")
    p.add_argument("--strong-chat", action="store_true",
                   help="strong model via /chat/completions")
    p.add_argument("--fallback", choices=["keep-cheap", "abort"], default="keep-cheap",
                   help="when the strong model keeps failing (default keep-cheap)")
    p.add_argument("--labels", choices=["outcome", "none"], default="outcome",
                   help="step labels from the answer check (default outcome)")
    p.add_argument("--no-resume", action="store_true",
                   help="refuse to append to an existing --out instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return p


def _require_http_client(name: str) -> None:
    """Fail before any episode starts when the chosen HTTP client library is missing (one
    line naming the extra), instead of failing every request of every episode."""
    import importlib.util

    if importlib.util.find_spec(name) is None or sys.modules.get(name, ...) is None:
        from trim_pomdp.cli import extra_hint

        other = "httpx" if name == "aiohttp" else "aiohttp"
        raise TrimPomdpError(
            f"the HTTP client {name} (--http-client {name}) is not installed, so nothing was "
            f"routed; {extra_hint(name)} brings it (or use --http-client {other})")


def _headers(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if ":" not in item:
            raise TrimPomdpError(f"--header must look like 'Name: value'; got {item!r}")
        k, v = item.split(":", 1)
        out[k.strip()] = v.strip()
    return out


def _bank_router_factory(path: str, budget: float | None) -> tuple[Any, str, float]:
    """Router factory, display name and the budget used for a saved bank (any kind
    :func:`load_bank` reads); without ``budget``, the bank's recorded default."""
    from trim_pomdp.trim import load_bank

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

        return make_rl, f"trim-{r.kind}", float(budget)
    from trim_pomdp.router import Router

    policy = _select_policy(bank, budget)
    return (lambda: Router(policy)), bank.family().name, float(budget)


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

    from trim_pomdp.baselines import ThresholdPolicy
    from trim_pomdp.serving import (
        ChatModel,
        CompletionModel,
        EndpointConfig,
        MathAnswerChecker,
        OutputLockedError,
        ResumeMismatchError,
        VLLMPRMScorer,
        load_problems,
        read_finished,
        run_batch,
    )

    _require_http_client(args.http_client)
    if not 1 <= args.max_steps <= 30:
        raise TrimPomdpError(f"--max-steps must be in [1, 30]; got {args.max_steps}")
    if args.concurrency < 1:
        raise TrimPomdpError(f"--concurrency must be >= 1; got {args.concurrency}")
    if not args.max_response_mb > 0:
        raise TrimPomdpError(f"--max-response-mb must be > 0; got {args.max_response_mb}")
    problems = load_problems(args.problems)
    if args.threshold is not None:
        k = args.threshold
        factory = lambda: ThresholdPolicy(k)  # noqa: E731
        policy_name = f"threshold(k={k:g})"
    else:
        factory, family, budget = _bank_router_factory(args.policy, args.budget)
        policy_name = f"{family}({os.path.basename(args.policy)}, lambda~{budget:g}" + (
            ", the bank's default)" if args.budget is None else ")")
    if args.no_resume and os.path.exists(args.out) and os.path.getsize(args.out) > 0:
        raise TrimPomdpError(f"{args.out} exists and --no-resume was given")

    headers = _headers(args.header)

    def config(spec: str, who: str) -> EndpointConfig:
        key_env = getattr(args, f"{who}_api_key_env") or args.api_key_env
        return EndpointConfig.from_url(
            spec,
            api_key_env=key_env,
            timeout=args.timeout,
            max_retries=args.retries,
            backoff_base=args.backoff,
            headers=headers,
            max_connections=max(args.concurrency, 1) * 2,
            circuit_breaker=args.circuit_breaker,
            circuit_cooldown=args.circuit_cooldown,
            name=who,
            http_client=args.http_client,
            max_response_bytes=max(1, int(args.max_response_mb * 1024 * 1024)),
        )

    gen = dict(max_tokens=args.max_tokens, temperature=args.temperature)
    cheap_cfg, strong_cfg = config(args.cheap, "cheap"), config(args.strong, "strong")
    cheap = ChatModel(cheap_cfg, **gen) if args.cheap_chat else CompletionModel(cheap_cfg, **gen)
    strong = (
        ChatModel(strong_cfg, **gen) if args.strong_chat else CompletionModel(strong_cfg, **gen)
    )
    prm = VLLMPRMScorer(config(args.prm, "prm"))
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
    if args.json:
        print(json.dumps(report))
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
