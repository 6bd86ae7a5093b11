"""A paced run of a simulated world: the world's problems routed in order, a batch at a
time, with a :class:`~trim_pomdp.routing.pacing.BudgetPacer` moving along the bank's lambda
grid after every episode (as a server with ``batch`` episodes in flight would)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from trim_pomdp.routing.pacing import BudgetPacer
from trim_pomdp.routing.router import TrimBatchPolicy
from trim_pomdp.simulation.world import simulate_routing

__all__ = ["simulate_paced"]


def _subworld(world: Any, lo: int, hi: int) -> Any:
    def cut(a: Any) -> Any:
        return np.asfortranarray(a[lo:hi]) if a.ndim == 2 else np.ascontiguousarray(a[lo:hi])

    fields = {f: cut(getattr(world, f)) for f in (
        "p_w", "p_s", "length", "u_w", "u_s", "z_draft", "z_strong", "bias", "cheap_tokens",
        "strong_tokens")}
    return dataclasses.replace(world, **fields)


def simulate_paced(world: Any, pacer: BudgetPacer, *, batch: int = 50) -> dict[str, Any]:
    """Route a world's problems in order, ``batch`` at a time in lockstep (as a server with
    ``batch`` episodes in flight), the pacer updating after every episode of a batch with
    the batch's actual strong tokens and estimated always-strong cost.

    Returns per-episode arrays ``strong_tokens``, ``always_strong_tokens`` (actual),
    ``correct``, ``lambda`` (used) and the pacer's summary."""
    n = world.n_problems
    spent = np.zeros(n, np.int64)
    correct = np.zeros(n, bool)
    lam = np.zeros(n)
    ast = world.always_strong_tokens()
    cheap = np.asarray(world.cheap_tokens)
    length = np.asarray(world.length)
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        sub = _subworld(world, lo, hi)
        lam[lo:hi] = pacer.lam
        res = simulate_routing(sub, TrimBatchPolicy(pacer.policy))
        spent[lo:hi] = res.strong_tokens
        correct[lo:hi] = res.correct
        for i in range(lo, hi):
            pacer.update(float(spent[i]), pacer.always_strong_estimate(cheap[i, :length[i]]))
    return {"strong_tokens": spent, "always_strong_tokens": ast, "correct": correct,
            "lambda": lam, "summary": pacer.summary()}
