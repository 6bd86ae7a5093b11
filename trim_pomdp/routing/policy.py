"""A solved TRIM policy at one budget multiplier lambda (finite-horizon alpha vectors).

Epoch ``t`` and observed value ``x`` of :class:`~trim_pomdp.routing.model.TrimModel` own
the alpha vectors ``alphas[offsets[t*X+x]:offsets[t*X+x+1]]``; the action at hidden belief
``b`` is that of the vector maximising ``alpha . b``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp.errors import PolicyFormatError
from trim_pomdp.routing.model import TrimModel

__all__ = ["TrimPolicy", "pit_policy"]


@dataclass(frozen=True, eq=False)
class TrimPolicy:
    """A solved TRIM policy at one budget multiplier: the finite-horizon alpha vectors of
    epoch ``t`` and observed value ``x`` are ``alphas[offsets[t*X+x]:offsets[t*X+x+1]]``.

    ``value_b0`` is the lower bound at the start (``P(success) - lam * E[strong tokens]``
    for the policy the alpha vectors encode).
    """

    model: TrimModel
    lam: float
    alphas: NDArray[np.float64]
    actions: NDArray[np.int64]
    offsets: NDArray[np.int64]
    value_b0: float = float("nan")
    upper_bound: float = float("nan")

    def __post_init__(self) -> None:
        m = self.model
        H, X = m.horizon, m.n_observed
        alphas = np.ascontiguousarray(self.alphas, dtype=np.float64)
        actions = np.ascontiguousarray(self.actions, dtype=np.int64)
        offsets = np.ascontiguousarray(self.offsets, dtype=np.int64)
        if alphas.ndim != 2 or alphas.shape[1] != m.n_hidden:
            raise PolicyFormatError(
                f"alphas must have shape (n_vectors, n_hidden) = (K, {m.n_hidden}); "
                f"got {alphas.shape}"
            )
        if actions.shape != (alphas.shape[0],):
            raise PolicyFormatError(
                f"actions must have shape (n_vectors,) = ({alphas.shape[0]},); got {actions.shape}"
            )
        if offsets.shape != (H * X + 1,):
            raise PolicyFormatError(
                "policy does not fit the model: offsets must have shape (horizon * n_observed + 1,)"
                f" = ({H * X + 1},) for horizon {H} and n_observed {X}; got {offsets.shape}"
            )
        if offsets[0] != 0 or offsets[-1] != alphas.shape[0] or np.any(np.diff(offsets) < 0):
            raise PolicyFormatError("offsets must be non-decreasing from 0 to n_vectors")
        if actions.size and (actions.min() < 0 or actions.max() >= m.n_actions):
            raise PolicyFormatError(f"actions must lie in 0..{m.n_actions - 1}")
        # every reachable decision (epochs 1..H-1, draft states) needs at least one vector
        counts = np.diff(offsets).reshape(H, X)
        missing = np.argwhere(counts[1:, 1 : X - 1] == 0)
        if missing.size:
            t, x = missing[0]
            raise PolicyFormatError(f"policy has no alpha vector at epoch t={t + 1}, x={x + 1}")
        for name, arr in (("alphas", alphas), ("actions", actions), ("offsets", offsets)):
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)

    @classmethod
    def from_finite(cls, model: TrimModel, lam: float, policy: Any) -> TrimPolicy:
        """Wrap a :class:`~trim_pomdp.engine.finite.FiniteHorizonPolicy` solved for ``model``."""
        for attr, want in (("horizon", model.horizon), ("n_observed", model.n_observed),
                           ("n_hidden", model.n_hidden)):
            got = getattr(policy, attr, want)
            if got != want:
                raise PolicyFormatError(
                    f"policy does not fit the model: {attr} is {got}, model has {want}"
                )
        return cls(
            model=model,
            lam=float(lam),
            alphas=policy.alphas,
            actions=policy.actions,
            offsets=policy.offsets,
            value_b0=float(getattr(policy, "lower_bound", float("nan"))),
            upper_bound=float(getattr(policy, "upper_bound", float("nan"))),
        )

    def action(self, t: int, x: int, b: ArrayLike) -> int:
        """Greedy action of the alpha vectors of ``(t, x)`` at hidden belief ``b``."""
        X = self.model.n_observed
        lo, hi = self.offsets[t * X + x], self.offsets[t * X + x + 1]
        vals = self.alphas[lo:hi] @ np.asarray(b, np.float64)
        return int(self.actions[lo + int(np.argmax(vals))])

    def value(self, t: int, x: int, b: ArrayLike) -> float:
        X = self.model.n_observed
        lo, hi = self.offsets[t * X + x], self.offsets[t * X + x + 1]
        return float(np.max(self.alphas[lo:hi] @ np.asarray(b, np.float64)))


#: per model with the min feature: its score marginal and the filter-only policies by lambda
_SHADOWS: weakref.WeakKeyDictionary[TrimModel, tuple[TrimModel, dict[float, TrimPolicy]]] = (
    weakref.WeakKeyDictionary())


def pit_policy(policy: Any) -> Any:
    """The policy whose filter the PIT runs on: ``policy`` itself, or for a model with the
    min-previous-score feature a filter-only policy (same lambda; one zero vector, action
    continue, per decision) of the model's score marginal
    (:meth:`~trim_pomdp.routing.model.TrimModel.score_marginal`; the
    :mod:`trim_pomdp.routing.drift` docstring says why).  Only its filter is used: its
    actions are overridden by the ones executed."""
    m = policy.model
    if not getattr(m, "uses_min", False):
        return policy
    if m not in _SHADOWS:
        _SHADOWS[m] = (m.score_marginal(), {})
    marg, by_lam = _SHADOWS[m]
    lam = float(policy.lam)
    if lam not in by_lam:
        n = marg.horizon * marg.n_observed
        by_lam[lam] = TrimPolicy(model=marg, lam=lam, alphas=np.zeros((n, marg.n_hidden)),
                                 actions=np.zeros(n, dtype=np.int64),
                                 offsets=np.arange(n + 1, dtype=np.int64))
    return by_lam[lam]
