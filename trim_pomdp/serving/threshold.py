"""TRIM-Thr as a one-at-a-time router (the serving package's own, dependency-free policy).

Used by ``trim-pomdp route --threshold K`` and in tests; follows the Router protocol of
:class:`trim_pomdp.router.Router`: ``reset()``, ``step(prm_score, tokens, is_final)``,
``executed(action)``, ``belief``.
"""

from __future__ import annotations

import math

from trim_pomdp.errors import RouterStateError

__all__ = ["ThresholdRouter"]

MAX_STEPS = 30


class ThresholdRouter:
    """Regenerate a step exactly when its PRM score is below ``k``.

    Parameters
    ----------
    k : float
        Threshold in [0, 1]; ``k = 0`` never regenerates (always cheap), ``k > 1`` is rejected,
        ``k = 1`` regenerates every step whose score is below 1.
    max_steps : int
        Steps per episode (30, as in TRIM).
    """

    name = "threshold"
    belief = None  # not a belief-tracking policy

    def __init__(self, k: float, *, max_steps: int = MAX_STEPS) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0.0 <= k <= 1.0:
            raise ValueError(f"threshold k must be a number in [0, 1]; got {k!r}")
        self.k = float(k)
        self.max_steps = max_steps
        self.reset()

    def reset(self) -> None:
        self.t = 0
        self.done = False
        self.actions: list[str] = []

    def step(self, prm_score: float, tokens: int, is_final: bool) -> str:
        if self.done:
            raise RouterStateError("step() called after a final step; call reset() first")
        if self.t >= self.max_steps:
            raise RouterStateError(f"more than max_steps = {self.max_steps} steps")
        if not isinstance(prm_score, (int, float)) or math.isnan(prm_score) or not (
            0.0 <= prm_score <= 1.0
        ):
            raise ValueError(f"prm_score must be in [0, 1]; got {prm_score!r}")
        self.t += 1
        action = "regenerate" if prm_score < self.k else "continue"
        self.actions.append(action)
        if is_final:
            self.done = True
        return action

    def executed(self, action: str) -> None:
        """Record the action actually executed for the current step (e.g. a fallback)."""
        if action not in ("continue", "regenerate"):
            raise ValueError(f"action must be 'continue' or 'regenerate'; got {action!r}")
        if not self.actions:
            raise RouterStateError("executed() called before any step()")
        self.actions[-1] = action
