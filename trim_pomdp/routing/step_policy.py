"""The base class of step-level routers that decide from the current step's features:
the Router bookkeeping (step counter, final flag, ``min_prev``, argument checks) and the
BatchPolicy defaults, so that a router only writes its decision rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.errors import RouterStateError
from trim_pomdp.steps import ACTION_NAMES as _ACTION_NAMES
from trim_pomdp.steps import MAX_STEPS

__all__ = ["StepPolicy"]


class StepPolicy:
    """Base of a router that decides from the step's features alone: it is a
    :class:`~trim_pomdp.routing.protocols.BatchPolicy` and a Router at once.

    It keeps the Router bookkeeping -- the step counter ``t`` (1-based), the final flag,
    and ``min_prev``, the minimum PRM score of the drafts kept so far (a draft's score
    enters it once the draft was continued, see :meth:`executed`) -- and checks every
    ``step()`` (a score in [0, 1], tokens >= 0, no step after a final one or past
    :data:`~trim_pomdp.steps.MAX_STEPS`, where the step is final whatever ``is_final``
    says).  A subclass sets ``name`` (and ``needs_truth`` if it reads hidden states) and
    implements the two decisions, 0 = continue, 1 = regenerate:

    ``_act_batch(t, score, min_prev, tokens, is_final, active, truth) -> int8 array``
        for a batch of episodes (the arguments of ``BatchPolicy.act``);
    ``_act_one(t, score, min_prev, tokens, is_final, **kwargs) -> int``
        for one query, ``kwargs`` being what the caller passed to ``step()``.

    A subclass with state of its own extends ``reset_batch`` / ``reset`` /
    ``executed`` and calls ``super()``.  The baselines of
    :mod:`trim_pomdp.routing.baselines` and the learned routers of :mod:`trim_pomdp.rl`
    are built on it.
    """

    name = "policy"
    needs_truth = False

    _n: int
    _t: int
    _done: bool
    _min_prev: float
    _last_score: float | None
    _last_action: str | None

    def __init__(self) -> None:
        self.reset()

    # ---------------------------------------------------------------- BatchPolicy
    def reset_batch(self, n: int) -> None:
        self._n = int(n)

    def act(self, t: int, score: NDArray[np.float64], min_prev: NDArray[np.float64],
            tokens: NDArray[np.int64], is_final: NDArray[np.bool_], active: NDArray[np.bool_],
            truth: NDArray[np.int8] | None = None) -> NDArray[np.int8]:
        return self._act_batch(t, score, min_prev, tokens, is_final, active, truth)

    def executed(self, actions: Any) -> None:
        """BatchPolicy: actions executed for the whole batch; Router: one action name.

        A step policy keeps no belief, so the batch form does nothing; the Router form records
        which action was executed (it decides whether the draft's score enters ``min_prev``).
        """
        if isinstance(actions, str):
            if actions not in _ACTION_NAMES:
                raise ValueError(f"action must be 'continue' or 'regenerate'; got {actions!r}")
            if self._last_score is None:
                raise RouterStateError("executed() called before any step()")
            self._last_action = actions

    # ---------------------------------------------------------------- Router
    @property
    def belief(self) -> None:
        """A step policy keeps no belief over hidden states."""
        return None

    @property
    def min_prev(self) -> float:
        """Minimum PRM score of the kept (continued) earlier drafts; 1.0 if none."""
        return self._min_prev

    def reset(self) -> None:
        """Start a new query."""
        self._t = 0
        self._done = False
        self._min_prev = 1.0
        self._last_score = None
        self._last_action = None

    def step(self, prm_score: float, tokens: int, is_final: bool, **kwargs: Any) -> str:
        """Decide for the current cheap draft: ``"continue"`` or ``"regenerate"``."""
        score = float(prm_score)
        if not 0.0 <= score <= 1.0:  # also rejects NaN
            raise ValueError(f"prm_score must be in [0, 1]; got {prm_score!r}")
        if int(tokens) < 0:
            raise ValueError(f"tokens must be >= 0; got {tokens!r}")
        if self._done:
            raise RouterStateError("step() called after a final step; call reset() first")
        if self._t >= MAX_STEPS:
            raise RouterStateError(f"step() called past step {MAX_STEPS}; traces are capped "
                                   f"at {MAX_STEPS} steps (call reset() for a new query)")
        if self._last_score is not None and self._last_action == "continue":
            self._min_prev = min(self._min_prev, self._last_score)
        self._t += 1
        final = bool(is_final) or self._t == MAX_STEPS
        a = self._act_one(self._t, score, self._min_prev, int(tokens), final, **kwargs)
        self._last_score = score
        self._last_action = _ACTION_NAMES[a]
        self._done = final
        return _ACTION_NAMES[a]

    # ---------------------------------------------------------------- to implement
    def _act_batch(self, t: int, score: NDArray[np.float64], min_prev: NDArray[np.float64],
                   tokens: NDArray[np.int64], is_final: NDArray[np.bool_],
                   active: NDArray[np.bool_], truth: NDArray[np.int8] | None
                   ) -> NDArray[np.int8]:
        raise NotImplementedError

    def _act_one(self, t: int, score: float, min_prev: float, tokens: int, is_final: bool,
                 **kwargs: Any) -> int:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
