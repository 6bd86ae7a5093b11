"""Budget calibration: the lambda of a policy bank whose measured cost fraction is closest
to a target (the cost fraction is mean strong tokens per query over always-strong's).

Not to be confused with :mod:`trim_pomdp.fit.prm_calibration`, which measures how well the
PRM's scores are calibrated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.routing.bank import PolicyBank
from trim_pomdp.routing.baselines import AlwaysStrong
from trim_pomdp.routing.router import Router, TrimBatchPolicy
from trim_pomdp.simulation.world import simulate_routing

__all__ = ["calibrate"]


def calibrate(
    bank: PolicyBank,
    *,
    target_cost_fraction: float,
    scenario: Any = None,
    traces: Sequence[Any] | None = None,
    n_problems: int | None = None,
    seed: int | None = None,
) -> tuple[float, float]:
    """Pick the lambda whose cost fraction is closest to ``target_cost_fraction``.

    Returns ``(lambda, achieved_cost_fraction)`` -- the fraction actually measured for that
    lambda, never the target.  The cost fraction is mean strong tokens per query divided by
    that of always-strong.

    With ``scenario`` each policy runs in the simulator
    (:func:`~trim_pomdp.simulation.world.simulate_routing`) on the scenario's
    problems (``n_problems``/``seed`` override the scenario's); always-strong runs on the
    same problems (common random numbers).  With ``traces`` (labelled or not, cheap model)
    each trace is replayed through the router: a regenerated step costs ``c_k`` of its
    token bin and the trace continues as written.  This replay is an approximation (after a
    regeneration the real trace would differ) and is documented as such; always-strong
    costs ``c_k`` on every step.
    """
    tcf = float(target_cost_fraction)
    if not (0.0 <= tcf <= 1.0):
        raise ValueError(f"target_cost_fraction must be in [0, 1]; got {target_cost_fraction!r}")
    if (scenario is None) == (traces is None):
        raise ValueError("calibrate needs exactly one of scenario= or traces=")
    if scenario is not None:
        fractions = _cost_fractions_scenario(bank, scenario, n_problems, seed)
    else:
        fractions = _cost_fractions_traces(bank, traces)
    i = int(np.argmin(np.abs(fractions - tcf)))
    return float(bank.lambdas[i]), float(fractions[i])


def _cost_fractions_scenario(bank: PolicyBank, scenario: Any, n_problems, seed) -> NDArray:
    kw: dict[str, Any] = {}
    if n_problems is not None:
        kw["n_problems"] = n_problems
    if seed is not None:
        kw["seed"] = seed
    strong = simulate_routing(scenario, AlwaysStrong(), **kw)
    denom = float(np.mean(strong.strong_tokens))
    out = np.empty(len(bank))
    for i, p in enumerate(bank):
        res = simulate_routing(scenario, TrimBatchPolicy(p), **kw)
        out[i] = float(np.mean(res.strong_tokens)) / denom
    return out


def _cost_fractions_traces(bank: PolicyBank, traces: Sequence[Any]) -> NDArray:
    m = bank.model
    seqs = []
    for tr in traces:
        steps = tr.steps[: m.max_steps]
        if not steps:
            continue
        for j, st in enumerate(steps):
            if st.prm_score is None or st.tokens is None:
                raise ValueError(
                    f"trace {getattr(tr, 'id', '?')!r} step {j + 1}: calibration needs "
                    "prm_score and tokens on every step"
                )
        seqs.append([(float(st.prm_score), float(st.tokens)) for st in steps])
    if not seqs:
        raise ValueError("calibrate: no non-empty traces")
    denom = sum(float(np.sum(m.strong_tokens[m.token_bin([c for _, c in s])])) for s in seqs)
    out = np.empty(len(bank))
    for i, p in enumerate(bank):
        r = Router(p)
        spent = 0.0
        for s in seqs:
            r.reset()
            n = len(s)
            for j, (score, tok) in enumerate(s):
                if r.step(score, tok, j == n - 1) == "regenerate":
                    spent += float(m.strong_tokens[int(m.token_bin(tok))])
        out[i] = spent / denom
    return out


