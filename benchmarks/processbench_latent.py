"""Fit TRIM-POMDP+'s difficulty classes on ProcessBench's human step labels (issue 7).

    TRIM_POMDP_SHARED=../shared python benchmarks/processbench_latent.py [--max-d 4]

ProcessBench has no PRM scores and no paired strong-model runs, so only the cheap-side
difficulty mixture is identified: per solution, the number of correct steps before the
first wrong one (k) and whether a wrong step was reached (m = 0/1) give the class likelihood
``p_w(d)^k (1 - p_w(d))^m``.  D is chosen by BIC, pooled and per generator.
ProcessBench was assembled to hold about 50% correct final answers per subset: the fitted
accuracies are not population accuracies of these models.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trim_pomdp.fit.latent import LatentFitter
from trim_pomdp.traces.processbench import read_processbench


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-d", type=int, default=4)
    ap.add_argument("--out", default="benchmarks/results/latent_processbench.json")
    args = ap.parse_args(argv)
    root = Path(os.environ.get("TRIM_POMDP_SHARED", "../shared")) / "data" / "processbench"
    traces = []
    for name in ("gsm8k", "math", "olympiadbench", "omnimath"):
        traces += read_processbench(root / f"{name}.json")
    by_gen = defaultdict(list)
    for tr in traces:
        by_gen[tr.model].append(tr)
    groups = {"pooled": traces} | dict(sorted(by_gen.items()))
    cands = tuple(range(1, args.max_d + 1))
    out = {}
    head = f"{'group':<28} {'n':>5} {'D':>2}  classes (prior: p_w)   BIC(D=1..{args.max_d})"
    print(head)
    print("-" * len(head))
    for name, trs in groups.items():
        f = LatentFitter(n_difficulty=cands, n_bias=1).fit(trs)
        s = f.summary()
        cls = ", ".join(f"{p:.2f}: {w:.3f}"
                        for p, w in zip(s["difficulty_prior"], s["p_w"], strict=True))
        bics = " ".join(f"{s['bic_difficulty'][str(d)]:.0f}" for d in cands)
        print(f"{name:<28} {len(trs):>5} {s['D']:>2}  {cls:<36} {bics}")
        out[name] = {"n": len(trs), **{k: s[k] for k in ("D", "difficulty_prior", "p_w",
                                                          "bic_difficulty",
                                                          "loglik_difficulty")}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
