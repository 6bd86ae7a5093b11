"""The online TRIM router: a Bayes filter over the hidden step states plus an alpha-vector
lookup, called once per reasoning step.

Usage from a generation loop::

    router = Router(bank.nearest(lam))
    for each problem:
        router.reset()
        for each step t = 1, 2, ...:
            draft = cheap.generate_step(...)
            decision = router.step(prm(draft), n_tokens(draft), is_final(draft))
            if decision == "regenerate":
                ok = strong.regenerate_step(...)
                if not ok:                       # e.g. the strong model timed out
                    router.executed("continue")  # the belief follows what was executed
            if is_final(draft): break

:class:`TrimBatchPolicy` is the same policy for the simulator's ``BatchPolicy`` protocol
(:class:`~trim_pomdp.routing.protocols.BatchPolicy`), advancing a batch of episodes in lockstep.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp.errors import (
    PolicyFormatError,
    RouterStateError,
    ZeroProbabilityObservationError,
)
from trim_pomdp.routing import _kernels as K
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.routing.policy import TrimPolicy, pit_policy
from trim_pomdp.steps import ACTION_NAMES

__all__ = ["Router", "TrimBatchPolicy", "ACTION_NAMES"]

_ACTION_INDEX = {"continue": 0, "regenerate": 1, 0: 0, 1: 1}


def _policy_arrays(policy: Any, model: TrimModel | None) -> tuple[TrimModel, TrimPolicy]:
    """Accept a :class:`TrimPolicy`, or a finite-horizon policy plus its ``model``."""
    if isinstance(policy, TrimPolicy):
        if model is not None and model is not policy.model:
            raise PolicyFormatError("Router(policy, model): policy was solved for another model")
        return policy.model, policy
    if model is None:
        raise PolicyFormatError(
            "Router needs a TrimPolicy (from a PolicyBank) or a FiniteHorizonPolicy plus model="
        )
    return model, TrimPolicy.from_finite(model, float("nan"), policy)


class Router:
    """Online TRIM-POMDP router for one trace at a time.

    Parameters
    ----------
    policy : TrimPolicy
        A policy from :func:`~trim_pomdp.routing.bank.solve_grid` (``bank[i]`` or
        ``bank.nearest(lam)``); or a ``FiniteHorizonPolicy`` together with ``model``.
    model : TrimModel, optional
        Only with a bare finite-horizon policy; its shape must match the policy.
    min_prev_rule : {"kept", "all"}
        Which earlier scores enter the min-previous-score feature (used only when the model
        has it): the scores of the drafts that were kept (continued; the simulator's
        default) or of every draft.  The first step's min is 1.0 (empty minimum).
    drift : DriftMonitor, optional
        Label-free drift detection (:mod:`trim_pomdp.routing.drift`): each step also computes the
        PIT of the live score under the belief's predictive mixture, and each finished
        episode is handed to the monitor (:attr:`drift`).  ``None`` (default) leaves the
        step exactly as it was.

    Notes
    -----
    Each :meth:`step` first *predicts* the belief with the action executed at the previous
    step (the advised one unless :meth:`executed` said otherwise; epoch 0's free start
    action for the first step), then *corrects* it with the new draft's evidence: the
    observed part ``x' = (is_final, token bin)`` and the observation ``o`` (score bin,
    with the min of the earlier scores when the model uses it)::

        b'(s') = Z(o | s') sum_s T_t(x', s' | x, s, a) b(s) / P(x', o | x, b, a)

    It then returns the greedy action of the alpha vectors of ``(t, x')``.  Step
    ``max_steps`` is final whatever ``is_final`` says (the model's cap).  No array is
    allocated per step; :attr:`belief` is a read-only view of the filter's state.
    """

    def __init__(self, policy: Any, model: TrimModel | None = None, *,
                 min_prev_rule: str = "kept", drift: Any = None) -> None:
        if min_prev_rule not in ("kept", "all"):
            raise ValueError(f"min_prev_rule must be 'kept' or 'all'; got {min_prev_rule!r}")
        self.min_prev_rule = min_prev_rule
        self.model, self.policy = _policy_arrays(policy, model)
        m = self.model
        a = m.arrays(0.0)
        self._T = a["T"]
        self._Z = a["Z"]
        self._alphas = self.policy.alphas
        self._actions = self.policy.actions
        self._offsets = self.policy.offsets
        self._score_edges = np.ascontiguousarray(m.score_edges)
        self._min_edges = np.ascontiguousarray(m.min_edges)
        self._token_edges = np.ascontiguousarray(m.token_edges)
        self._uses_min = bool(m.uses_min)
        self._max_steps = int(m.max_steps)
        self._ist = np.zeros(4, dtype=np.int64)
        self._b = np.zeros(m.n_hidden)
        self._fst = np.array([1.0, 1.0, 1.0 if min_prev_rule == "all" else 0.0])
        self._tmp = np.zeros(m.n_hidden)
        self._belief_view = self._b.view()
        self._belief_view.flags.writeable = False
        self._drift: Any = None
        self._shadow: Router | None = None
        self._shadow_pending = False
        self._acc = np.zeros(3)
        self.reset()
        # compile (or load from cache) now rather than on the first real step
        self._kernel = K.router_step
        self._warm()
        if drift is not None:
            self.attach_drift(drift)

    # -- drift monitoring (trim_pomdp.routing.drift) ---------------------------------------
    @property
    def drift(self) -> Any:
        """The attached :class:`~trim_pomdp.routing.drift.DriftMonitor` (None if none)."""
        return self._drift

    def attach_drift(self, monitor: Any) -> None:
        """Attach (or with ``None`` detach) a drift monitor; takes effect at the next
        :meth:`reset` boundary for the accumulated episode."""
        if monitor is not None:
            self._drift_kernel = K.router_step_pit
            # a min-feature model's PIT runs on a shadow filter of its score marginal, fed
            # the same scores and executed actions (trim_pomdp.routing.drift says why)
            shadow = pit_policy(self.policy)
            self._shadow = None if shadow is self.policy else Router(shadow)
            # attached mid-episode, the shadow has not seen the episode's start: it joins at
            # the next reset() (this episode's PIT sums stay empty)
            self._shadow_pending = bool(self._ist[3] == K.RUNNING)
        else:
            self._shadow = None
        self._drift = monitor
        self._acc[:] = 0.0

    def _step_pit(self, score: float, tok: float, is_final: bool, acc: Any) -> int:
        code = K.router_step_pit(
            self._T, self._Z, self._alphas, self._actions, self._offsets, self._score_edges,
            self._min_edges, self._token_edges, self._uses_min, self._max_steps, self._ist,
            self._b, self._fst, self._tmp, score, tok, bool(is_final), acc)
        if code < 0:
            self._raise(code, score, tok)
        return int(code)

    def _end_episode(self) -> None:
        acc = self._acc
        if acc[2] > 0:
            self._drift.add_episode(float(acc[0]), float(acc[1]), int(acc[2]))
        acc[:] = 0.0

    def _warm(self) -> None:
        # one call on scratch state: triggers compilation/cache loading, result ignored
        self._kernel(
            self._T, self._Z, self._alphas, self._actions, self._offsets, self._score_edges,
            self._min_edges, self._token_edges, self._uses_min, self._max_steps,
            self._ist.copy(), self._b.copy(), self._fst.copy(), self._tmp, 0.5, 1.0, False,
        )

    def reset(self) -> None:
        """Start a new trace: epoch 0, belief ``b0`` (an unfinished episode's drift
        statistics are handed to the monitor first)."""
        if self._drift is not None:
            self._end_episode()
        if self._shadow is not None:
            self._shadow.reset()
            self._shadow_pending = False
        self._ist[:] = 0
        self._b[:] = self.model.b0
        self._fst[0] = 1.0
        self._fst[1] = 1.0

    @property
    def belief(self) -> NDArray[np.float64]:
        """Current hidden belief ``(P(S0), P(S1), P(S2))`` (read-only view; copy to keep)."""
        view: NDArray[np.float64] = self._belief_view
        return view

    @property
    def t(self) -> int:
        """Number of steps seen since :meth:`reset`."""
        return int(self._ist[0])

    @property
    def done(self) -> bool:
        """True once a final step has been routed."""
        return bool(self._ist[3] == K.DONE)

    def step(self, prm_score: float, tokens: float, is_final: bool) -> str:
        """Route the cheap model's current draft: ``"continue"`` or ``"regenerate"``.

        Raises
        ------
        ValueError
            ``prm_score`` NaN or outside [0, 1]; ``tokens`` negative or not finite.
        RouterStateError
            a step after the final step, or past ``max_steps`` (30).
        ZeroProbabilityObservationError
            the evidence has probability 0 under the belief.
        """
        score = float(prm_score)
        if not (0.0 <= score <= 1.0):  # also rejects NaN
            raise ValueError(f"prm_score must be a number in [0, 1]; got {prm_score!r}")
        tok = float(tokens)
        if not (0.0 <= tok < math.inf):
            raise ValueError(f"tokens must be a finite number >= 0; got {tokens!r}")
        if self._drift is not None and self._shadow is None:
            code = self._drift_kernel(
                self._T, self._Z, self._alphas, self._actions, self._offsets,
                self._score_edges, self._min_edges, self._token_edges, self._uses_min,
                self._max_steps, self._ist, self._b, self._fst, self._tmp, score, tok,
                bool(is_final), self._acc,
            )
            if code >= 0 and self._ist[3] == K.DONE:
                self._end_episode()
        else:
            code = self._kernel(
                self._T, self._Z, self._alphas, self._actions, self._offsets,
                self._score_edges, self._min_edges, self._token_edges, self._uses_min,
                self._max_steps, self._ist, self._b, self._fst, self._tmp, score, tok,
                bool(is_final),
            )
            if self._shadow is not None and code >= 0:  # a monitored min-feature router
                if not self._shadow_pending:
                    self._shadow._step_pit(score, tok, bool(is_final), self._acc)
                    self._shadow._ist[2] = code
                if self._ist[3] == K.DONE:
                    self._end_episode()
        if code >= 0:
            return ACTION_NAMES[code]
        self._raise(code, score, tok)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise(self, code: int, score: float, tok: float) -> None:
        if code == K.AFTER_FINAL:
            raise RouterStateError(
                f"step() called after the final step (step {self.t}); call reset() first"
            )
        if code == K.PAST_MAX_STEPS:
            raise RouterStateError(
                f"step() past the maximum of {self._max_steps} steps (step {self._max_steps} "
                "is always final); call reset() first"
            )
        support = [i for i in range(self._b.shape[0]) if self._b[i] > 0]
        raise ZeroProbabilityObservationError(
            f"step {self.t + 1}: evidence (prm_score={score}, tokens={tok}) has probability 0 "
            f"after action {ACTION_NAMES[int(self._ist[2])]!r}; belief support {support}"
        )

    def set_policy(self, policy: Any) -> None:
        """Swap in another policy of the same model (another budget of the same bank, e.g.
        from a pacing controller) between episodes: before the first :meth:`step` after
        :meth:`reset`, or after a final step (the next episode then uses it).

        Raises
        ------
        PolicyFormatError
            The policy was solved for another model.
        RouterStateError
            In the middle of an episode.
        """
        if not isinstance(policy, TrimPolicy) or policy.model is not self.model:
            raise PolicyFormatError("set_policy: the policy must be a TrimPolicy of the "
                                    "router's model (same bank)")
        if self._ist[3] == K.RUNNING:
            raise RouterStateError("set_policy() in the middle of an episode; call it "
                                   "after the final step or after reset()")
        self.policy = policy
        self._alphas = policy.alphas
        self._actions = policy.actions
        self._offsets = policy.offsets

    def executed(self, action: str | int) -> None:
        """Tell the router the action actually executed at the last step (if it differs
        from the advice); the next prediction uses it."""
        a = _ACTION_INDEX.get(action)
        if a is None:
            raise ValueError(f"action must be 'continue' or 'regenerate' (or 0/1); got {action!r}")
        if self._ist[3] == K.FRESH:
            raise RouterStateError("executed() before any step(); call step() first")
        self._ist[2] = a
        if self._shadow is not None:
            self._shadow._ist[2] = a


class TrimBatchPolicy:
    """The TRIM-POMDP policy through the simulator's ``BatchPolicy`` protocol: the same
    filter and lookup as :class:`Router`, vectorised over a batch of episodes.

    ``min_prev`` given by the simulator is the observation's min feature (used only when
    the model has one).
    """

    needs_truth = False

    def __init__(self, policy: Any, model: TrimModel | None = None, *,
                 name: str = "trim-pomdp") -> None:
        self.name = name
        self.model, self.policy = _policy_arrays(policy, model)
        self.lam = self.policy.lam
        a = self.model.arrays(0.0)
        self._T, self._Z = a["T"], a["Z"]
        self._tmp = np.zeros(self.model.n_hidden)
        self.reset_batch(0)

    def reset_batch(self, n: int) -> None:
        self._n = int(n)
        self._xs = np.zeros(n, dtype=np.int64)  # start
        self._acts = np.zeros(n, dtype=np.int64)
        self._B = np.tile(self.model.b0, (n, 1))
        self._out = np.zeros(n, dtype=np.int8)

    @property
    def beliefs(self) -> NDArray[np.float64]:
        return self._B

    def act(self, t: int, score: ArrayLike, min_prev: ArrayLike, tokens: ArrayLike,
            is_final: ArrayLike, active: ArrayLike, truth: Any = None) -> NDArray[np.int8]:
        m = self.model
        if not (1 <= t <= m.max_steps):
            raise RouterStateError(f"step t={t} outside 1..{m.max_steps}")
        n = self._n
        score = np.ascontiguousarray(score, dtype=np.float64)
        min_prev = np.ascontiguousarray(min_prev, dtype=np.float64)
        tokens = np.ascontiguousarray(tokens, dtype=np.float64)
        is_final = np.ascontiguousarray(is_final, dtype=np.bool_)
        active = np.ascontiguousarray(active, dtype=np.bool_)
        for name, arr in (("score", score), ("min_prev", min_prev), ("tokens", tokens),
                          ("is_final", is_final), ("active", active)):
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape (n,) = ({n},); got {arr.shape}")
        act_scores = score[active]
        if act_scores.size and not (np.all(act_scores >= 0.0) and np.all(act_scores <= 1.0)):
            raise ValueError("score must lie in [0, 1] (no NaN) for active episodes")
        bad = K.batch_act(
            self._T, self._Z, self.policy.alphas, self.policy.actions, self.policy.offsets,
            m.score_edges, m.min_edges, m.token_edges, bool(m.uses_min), int(m.max_steps),
            int(t), score, min_prev, tokens, is_final, active, self._xs, self._acts, self._B,
            self._tmp, self._out,
        )
        if bad >= 0:
            raise ZeroProbabilityObservationError(
                f"episode {bad}, step {t}: evidence (score={score[bad]}, tokens={tokens[bad]}) "
                f"has probability 0; belief {self._B[bad].tolist()}"
            )
        out: NDArray[np.int8] = self._out.copy()
        return out

    def executed(self, actions: ArrayLike) -> None:
        a = np.asarray(actions)
        if a.shape != (self._n,):
            raise ValueError(f"actions must have shape (n,) = ({self._n},); got {a.shape}")
        self._acts[:] = a

    # the one-at-a-time Router protocol, for symmetry with the baselines
    def router(self) -> Router:
        return Router(self.policy)
