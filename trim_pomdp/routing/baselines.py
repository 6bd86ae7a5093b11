"""Baseline routers: TRIM-Thr, always-cheap, always-strong, random(q) and the clairvoyant
oracle (the query-level routers are in :mod:`trim_pomdp.evaluation.query_routing`).

Every step-level baseline is both

* a :class:`~trim_pomdp.routing.protocols.BatchPolicy` (``reset_batch``, ``act``, ``executed``), run
  at speed by :func:`~trim_pomdp.simulation.world.simulate_routing`, and
* a *Router* used one step at a time, the interface shared with the POMDP router:
  ``reset()``, ``step(prm_score, tokens, is_final) -> "continue" | "regenerate"``,
  ``executed(action)`` (the action really executed, if different), ``belief`` (``None``:
  these policies keep no belief).

Both come from their base, :class:`~trim_pomdp.routing.step_policy.StepPolicy`.  Router
errors: a score outside [0, 1] or NaN, a negative token count -> ``ValueError``;
``step`` after a final step or past step 30, ``executed`` before any step -> ``RouterStateError``.

:class:`EscalationPolicy` regenerates every step of the queries it escalates.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.errors import RouterStateError
from trim_pomdp.routing.step_policy import StepPolicy
from trim_pomdp.steps import S0, S1, S2

__all__ = [
    "ThresholdPolicy",
    "AlwaysCheap",
    "AlwaysStrong",
    "RandomPolicy",
    "OraclePolicy",
    "EscalationPolicy",
]

#: the old private name of :class:`~trim_pomdp.routing.step_policy.StepPolicy`
_StepPolicy = StepPolicy


class ThresholdPolicy(StepPolicy):
    """TRIM-Thr: regenerate a draft iff its PRM score is below ``k``.

    ``a_t = 1[r_t < k]``; ``k = 0`` is always-cheap, ``k > 1`` always-strong.
    """

    def __init__(self, k: float, *, name: str | None = None) -> None:
        k = float(k)
        if math.isnan(k):
            raise ValueError("threshold k must be a number; got nan")
        self.k = k
        self.name = name or f"threshold(k={k:g})"
        super().__init__()

    def _act_batch(self, t, score, min_prev, tokens, is_final, active, truth):
        return (score < self.k).view(np.int8)

    def _act_one(self, t, score, min_prev, tokens, is_final, **kwargs):
        return int(score < self.k)


class AlwaysCheap(StepPolicy):
    """Never regenerate (the cheap model alone)."""

    name = "always-cheap"

    def reset_batch(self, n: int) -> None:
        self._zeros = np.zeros(int(n), np.int8)

    def _act_batch(self, t, score, min_prev, tokens, is_final, active, truth):
        return self._zeros

    def _act_one(self, t, score, min_prev, tokens, is_final, **kwargs):
        return 0


class AlwaysStrong(StepPolicy):
    """Regenerate every step (the strong model alone; cheap drafts are discarded)."""

    name = "always-strong"

    def reset_batch(self, n: int) -> None:
        self._ones = np.ones(int(n), np.int8)

    def _act_batch(self, t, score, min_prev, tokens, is_final, active, truth):
        return self._ones

    def _act_one(self, t, score, min_prev, tokens, is_final, **kwargs):
        return 1


class RandomPolicy(StepPolicy):
    """Regenerate each step independently with probability ``q``.

    The draws come from ``numpy.random.default_rng(seed)``, re-created by ``reset_batch``
    so that a batch run is reproducible.
    """

    def __init__(self, q: float, *, seed: int = 0, name: str | None = None) -> None:
        q = float(q)
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1]; got {q!r}")
        self.q = q
        self.seed = int(seed)
        self.name = name or f"random(q={q:g})"
        self._rng = np.random.default_rng(self.seed)
        super().__init__()

    def reset_batch(self, n: int) -> None:
        self._rng = np.random.default_rng(self.seed)

    def _act_batch(self, t, score, min_prev, tokens, is_final, active, truth):
        return (self._rng.random(score.shape[0]) < self.q).view(np.int8)

    def _act_one(self, t, score, min_prev, tokens, is_final, **kwargs):
        return int(self._rng.random() < self.q)


class OraclePolicy(StepPolicy):
    """Clairvoyant oracle: regenerates exactly the wrong drafts that can still be fixed
    (hidden state S2), simulation only.

    With ``q < 1`` each such draft is regenerated with probability ``q`` (seeded), tracing
    a curve from always-cheap (q = 0) to the full oracle (q = 1).  Through the Router
    protocol ``step`` needs ``truth=<hidden state>``.
    """

    needs_truth = True

    def __init__(self, q: float = 1.0, *, seed: int = 0, name: str | None = None) -> None:
        q = float(q)
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1]; got {q!r}")
        self.q = q
        self.seed = int(seed)
        self.name = name or ("oracle" if q == 1.0 else f"oracle(q={q:g})")
        self._rng = np.random.default_rng(self.seed)
        super().__init__()

    def reset_batch(self, n: int) -> None:
        self._rng = np.random.default_rng(self.seed)

    def _act_batch(self, t, score, min_prev, tokens, is_final, active, truth):
        if truth is None:
            raise RouterStateError("the clairvoyant oracle needs the hidden states (truth=)")
        wrong = truth == S2
        if self.q < 1.0:
            wrong &= self._rng.random(truth.shape[0]) < self.q
        return wrong.view(np.int8)

    def _act_one(self, t, score, min_prev, tokens, is_final, truth: int | None = None,
                 **kwargs):
        if truth is None:
            raise RouterStateError("the clairvoyant oracle exists in simulation only: "
                                   "step() needs truth=<hidden state 0/1/2>")
        if int(truth) not in (S0, S1, S2):
            raise ValueError(f"truth must be a hidden state 0, 1 or 2; got {truth!r}")
        if int(truth) != S2:
            return 0
        return int(self.q >= 1.0 or self._rng.random() < self.q)


class EscalationPolicy(StepPolicy):
    """Query-level routing as a BatchPolicy: regenerate every step of the escalated
    queries (``mask[i]`` True) and none of the others.

    Running it in the simulator gives, per problem, exactly the always-strong outcome for
    escalated queries and the always-cheap one otherwise (common random numbers).
    """

    def __init__(self, mask: NDArray[np.bool_], *, name: str = "query-router") -> None:
        self.mask = np.asarray(mask, dtype=bool)
        self.name = name
        super().__init__()

    def reset_batch(self, n: int) -> None:
        if self.mask.shape != (n,):
            raise ValueError(f"escalation mask has shape {self.mask.shape}; expected ({n},)")
        self._acts = self.mask.view(np.int8)

    def _act_batch(self, t, score, min_prev, tokens, is_final, active, truth):
        return self._acts

    def _act_one(self, t, score, min_prev, tokens, is_final, **kwargs):
        raise TypeError("EscalationPolicy routes whole queries by problem index; it has no "
                        "step-by-step Router interface")
