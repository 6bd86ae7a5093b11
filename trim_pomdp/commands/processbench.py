"""``trim-pomdp traces-from-processbench FILE.json [FILE.json ...] --out traces.jsonl``."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "traces-from-processbench",
        help="convert ProcessBench JSON files to the JSONL trace format",
        description=(
            "Convert ProcessBench (Zheng et al. 2024) JSON files into labelled traces "
            "(first-error labels; tokens estimated as ceil(characters / 4)). With --table, "
            "print the next-step accuracy per generator (Wilson intervals and counts). "
            "Caution: ProcessBench holds ~50%% correct final answers by construction, so "
            "these accuracies are not population accuracies of the models."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE.json", help="ProcessBench JSON file(s)")
    p.add_argument("--out", metavar="traces.jsonl", help="write the traces here (JSONL)")
    p.add_argument("--generator", help="keep only the solutions of this model")
    p.add_argument("--chars-per-token", type=float, default=4.0,
                   help="token estimate: ceil(len(text) / this) (default 4.0)")
    p.add_argument("--table", action="store_true",
                   help="print the per-generator accuracy table (markdown)")
    p.add_argument("--ci", type=float, default=0.95, help="interval level (default 0.95)")
    return p


def run(args: argparse.Namespace) -> int:
    from trim_pomdp.processbench import accuracy_by_model, format_table, read_processbench
    from trim_pomdp.traces import save_traces

    if args.out is None and not args.table:
        print("trim-pomdp traces-from-processbench: error: give --out and/or --table",
              file=sys.stderr)
        return 2
    traces = []
    for f in args.files:
        traces.extend(read_processbench(f, generator=args.generator,
                                        chars_per_token=args.chars_per_token))
    if not traces:
        print("trim-pomdp traces-from-processbench: error: no records"
              + (f" from generator {args.generator!r}" if args.generator else ""),
              file=sys.stderr)
        return 2
    if args.out is not None:
        n = save_traces(traces, args.out)
        n_steps = sum(len(t) for t in traces)
        print(f"wrote {n} traces ({n_steps} steps) to {args.out}")
    if args.table:
        print(format_table(accuracy_by_model(traces, ci=args.ci)))
    return 0
