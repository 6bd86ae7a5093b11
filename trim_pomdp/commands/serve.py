"""``trim-pomdp serve``: an OpenAI-compatible server that routes each request step by step.

Example::

    trim-pomdp serve \\
        --cheap http://127.0.0.1:8001/v1/Qwen/Qwen2.5-1.5B-Instruct \\
        --strong http://127.0.0.1:8002/v1/Qwen/Qwen2.5-72B-Instruct \\
        --prm http://127.0.0.1:8003/v1/Qwen/Qwen2.5-Math-PRM-7B \\
        --policy bank.npz --budget 0.002 --port 8000

then point any OpenAI client at ``http://127.0.0.1:8000/v1`` with model ``trim`` (or
``trim:<lambda>`` / ``extra_body={"trim": {"budget": lambda}}`` for a per-request budget).
"""

from __future__ import annotations

import argparse
from typing import Any

from trim_pomdp.commands.endpoint_options import add_endpoint_arguments, build_endpoints
from trim_pomdp.errors import TrimPomdpError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve",
        help="OpenAI-compatible server routing each request step by step (cheap/strong + PRM)",
        description=(
            "Serve POST /v1/chat/completions and /v1/completions (streaming or not): each "
            "request is one TRIM episode (cheap draft, PRM score, route, maybe regenerate "
            "with the strong model) against the given endpoints. Also GET /v1/models, "
            "/health and /metrics (Prometheus). Needs the serve extra."
        ),
    )
    add_endpoint_arguments(p)
    pol = p.add_mutually_exclusive_group(required=True)
    pol.add_argument("--policy", metavar="BANK.npz",
                     help="a saved router bank (TRIM-POMDP, TRIM-POMDP+, TRIM-Agg/Seq)")
    pol.add_argument("--threshold", type=float, metavar="K",
                     help="TRIM-Thr: regenerate when the PRM score is below K "
                          "(no per-request budget)")
    cost = p.add_mutually_exclusive_group()
    cost.add_argument("--budget", type=float, metavar="LAMBDA",
                      help="with --policy: the default lambda (requests may pick another "
                           "within the bank's range; default: the one the bank records)")
    cost.add_argument("--target-cost", type=float, metavar="F",
                      help="with --policy (a PolicyBank): the default lambda is the one whose "
                           "strong-token cost fraction on --calibration-traces is nearest F")
    p.add_argument("--calibration-traces", metavar="TRACES.jsonl",
                   help="traces for --target-cost (e.g. a --log of served traffic)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    p.add_argument("--served-model-name", default="trim",
                   help="the model name clients send (default 'trim')")
    p.add_argument("--max-concurrency", type=int, default=64,
                   help="episodes in flight (default 64); further requests wait")
    p.add_argument("--max-waiting", type=int, default=1024,
                   help="requests allowed to wait for a slot (default 1024); beyond: 429")
    p.add_argument("--max-steps", type=int, default=30, help="steps per episode (default 30)")
    p.add_argument("--log", metavar="TRACES.jsonl",
                   help="append every served episode to this trace file (trim-pomdp fit "
                        "reads it); failures go to <file>.errors.jsonl")
    p.add_argument("--no-metrics", action="store_true", help="no /metrics")
    return p


def _routers(args: argparse.Namespace) -> Any:
    from trim_pomdp.serving.server.service import RouterFactory

    if args.threshold is not None:
        if args.budget is not None or args.target_cost is not None:
            raise TrimPomdpError("--threshold takes no --budget or --target-cost")
        return RouterFactory.threshold(args.threshold)
    from trim_pomdp.banks import load_bank

    bank = load_bank(args.policy)
    if args.target_cost is not None:
        if args.calibration_traces is None:
            raise TrimPomdpError("--target-cost needs --calibration-traces TRACES.jsonl")
        if not hasattr(bank, "model"):
            raise TrimPomdpError("--target-cost needs a PolicyBank (TRIM-POMDP/POMDP+); "
                                 "give an RL bank --budget instead")
        from trim_pomdp import calibrate, load_traces

        lam, achieved = calibrate(bank, target_cost_fraction=args.target_cost,
                                  traces=load_traces(args.calibration_traces))
        print(f"trim-pomdp serve: --target-cost {args.target_cost:g}: lambda {lam:g} "
              f"(cost fraction {achieved:.4f} on {args.calibration_traces})", flush=True)
        budget = lam
    elif args.budget is not None:
        budget = args.budget
    else:
        # As in `route`: a bank written by solve-grid records the budget it was solved for.
        budget = getattr(bank, "default_lambda", None)
        if budget is None:
            raise TrimPomdpError(
                f"--policy {args.policy} records no default budget (RL banks, and banks written "
                "before solve-grid recorded one); give --budget LAMBDA or --target-cost F")
        print(f"trim-pomdp serve: default lambda {budget:g} (recorded in {args.policy})",
              flush=True)
    try:
        return RouterFactory.from_bank(bank, budget)
    except ValueError as exc:
        raise TrimPomdpError(f"--budget: {exc}") from None


def run(args: argparse.Namespace) -> int:
    import asyncio

    try:
        import aiohttp  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise TrimPomdpError(f"trim-pomdp serve needs the serve extra ({exc.name} is missing): "
                             "pip install 'trim_pomdp[serve]'") from None
    from trim_pomdp.serving.server.app import serve_forever
    from trim_pomdp.serving.server.service import RoutingService

    if not 1 <= args.max_steps <= 30:
        raise TrimPomdpError(f"--max-steps must be in [1, 30]; got {args.max_steps}")
    if args.max_concurrency < 1:
        raise TrimPomdpError(f"--max-concurrency must be >= 1; got {args.max_concurrency}")
    if args.max_waiting < 0:
        raise TrimPomdpError(f"--max-waiting must be >= 0; got {args.max_waiting}")
    if not 0 <= args.port <= 65535:
        raise TrimPomdpError(f"--port must be in [0, 65535]; got {args.port}")
    routers = _routers(args)
    cheap, strong, prm = build_endpoints(args, args.max_concurrency * 2)
    service = RoutingService(
        cheap, strong, prm, routers,
        served_model=args.served_model_name,
        max_steps=args.max_steps,
        fallback=args.fallback.replace("-", "_"),
        max_concurrency=args.max_concurrency,
        max_waiting=args.max_waiting,
        log_path=args.log,
        metrics=not args.no_metrics,
    )
    try:
        asyncio.run(serve_forever(service, args.host, args.port))
    except OSError as exc:  # the port is taken, the address cannot be bound
        raise TrimPomdpError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    return 0
