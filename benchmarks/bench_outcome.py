"""Outcome EM (trim_pomdp.outcome): fit time and recovery of known parameters on simulated
routed traces labelled only by their answers (the traces trim-pomdp route writes).

Run:  python benchmarks/bench_outcome.py [--n 10000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from test_outcome import simulate  # noqa: E402

from trim_pomdp.fit.outcome import OutcomeEM


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="episodes (default 10000)")
    ap.add_argument("--bootstrap", type=int, default=100)
    args = ap.parse_args(argv)
    traces = simulate(args.n, seed=0)
    t0 = time.perf_counter()
    em = OutcomeEM(n_bins=10).fit(traces)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = OutcomeEM(n_bins=10, n_bootstrap=args.bootstrap).fit(traces)
    t_boot = time.perf_counter() - t0
    res = {"episodes": args.n, "steps": sum(len(t.steps) for t in traces),
           "wrong_answers": em.n_wrong_, "fit_s": t_fit, "iterations": em.n_iter_,
           f"fit_with_{args.bootstrap}_bootstraps_s": t_boot,
           "p_w": em.p_w_, "p_w_ci": emb.p_w_ci_.tolist(), "p_w_true": 0.85,
           "p_s": em.p_s_, "p_s_ci": emb.p_s_ci_.tolist(), "p_s_true": 0.95}
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
