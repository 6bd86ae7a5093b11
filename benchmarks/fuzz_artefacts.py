"""Long property run of issue 18: >= 2,000 mutated banks and >= 2,000 mutated trace files,
each loaded and checked (a typed error or a valid result, never another exception, never
NaN out).  The test suite runs the same checks with 100 examples each
(``tests/test_fuzz_artefacts.py``).

    nice python benchmarks/fuzz_artefacts.py --banks 2000 --traces 2000 [--json]

Exits 1 (with hypothesis' minimal failing example) if any check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from artefact_mutants import (  # noqa: E402
    OUTCOMES,
    bank_mutation,
    check_bank,
    check_traces,
    trace_mutation,
    write_mutated_bank,
)
from hypothesis import HealthCheck, given, settings  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--banks", type=int, default=2000)
    ap.add_argument("--traces", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    def cfg(n: int) -> settings:
        return settings(max_examples=n, deadline=None, database=None,
                        suppress_health_check=list(HealthCheck))

    @cfg(args.banks)
    @given(bank_mutation())
    def banks(mutation):
        with tempfile.TemporaryDirectory() as d:
            check_bank(write_mutated_bank(Path(d), mutation))

    @cfg(args.traces)
    @given(trace_mutation())
    def traces(data):
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "t.jsonl"
            p.write_bytes(data)
            check_traces(p)

    t0 = time.perf_counter()
    ok = True
    for name, fn in (("banks", banks), ("traces", traces)):
        try:
            fn()
        except Exception as exc:  # report the falsifying example, keep the counts
            ok = False
            print(f"{name}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
    out = {"counts": dict(sorted(OUTCOMES.items())),
           "banks": OUTCOMES["bank: typed error"] + OUTCOMES["bank: valid"],
           "trace_files": OUTCOMES["traces: typed error"] + OUTCOMES["traces: valid"],
           "untyped_exceptions": 0 if ok else "see stderr",
           "time_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
