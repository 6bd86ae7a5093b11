"""The TRIM routing POMDP: its parameters and its finite-horizon arrays.

TRIM (Kapoor et al., ICLR 2026) routes each step of a cheap model's reasoning trace: after
the cheap model drafts step t and a process reward model (PRM) scores it, a router either
*continues* (keeps the draft) or *regenerates* it with a strong model at a cost.  This
module turns fitted models of that process into a finite-horizon POMDP with mixed
observability (:mod:`trim_pomdp.engine.finite`), one per budget multiplier lambda.
Its solved policies are :mod:`trim_pomdp.routing.policy`, one per lambda in a
:class:`~trim_pomdp.routing.bank.PolicyBank`.

Model
-----
Hidden state at decision time (the state *including* the current draft):

* ``S0 = 0`` every step so far, current draft included, is correct;
* ``S1 = 1`` an earlier step is wrong (irrecoverable);
* ``S2 = 2`` every earlier step is correct but the current draft is wrong.

Fully observed variable ``x`` (indexed, never filtered):

* ``x = 0``: *start* (epoch 0, before the first draft);
* ``x = 1 + f * K + k``: a draft with final flag ``f`` in {0, 1} and token bin ``k`` in
  0..K-1 (``K`` token bins);
* ``x = 2K + 1``: *terminal* (absorbing, no reward).

Epoch 0 is a start epoch where both actions are free and lead to the first draft, so the
first draft's PRM score is observed before the first decision; epochs ``t = 1..N``
(``N = max_steps = 30``) are the steps and the horizon is ``H = N + 1``.  With
``c_k = E[strong tokens | cheap draft in token bin k]``:

* continue on a final draft: episode ends, reward ``1[s = S0]``;
* continue otherwise: next draft, ``S0 -> S0`` w.p. ``p_w`` else ``S2``; ``S2 -> S1``;
  ``S1 -> S1``;
* regenerate: reward ``-lambda * c_k``.  On a final draft the episode ends with success
  (reward 1) w.p. ``p_s`` from S0 or S2, never from S1.  Otherwise the strong step is
  right w.p. ``p_s`` (from S0 or S2) and the cheap model drafts again (``S0`` w.p. ``p_w``
  else ``S2``); a wrong strong step gives ``S1``; ``S1`` stays ``S1``;
* the next draft (reached from step ``t``) is final w.p. ``h(t+1)`` and its token bin is
  ``k'`` w.p. ``q_k'`` independently of correctness; step ``N`` is always final;
* each new draft emits an observation ``o`` (discretised PRM score, optionally paired
  with the minimum of the earlier scores) w.p. ``Z_obs[s', o]``.

So ``T[t, a, x, s, x', s'] = P(x' | t, x) * P(s' | s, a)`` for the step rows, and the value
of a policy at the start is ``P(success) - lambda * E[strong tokens]``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp.errors import ModelValidationError
from trim_pomdp.steps import CONTINUE, MAX_STEPS, REGENERATE, S0, S1, S2

__all__ = [
    "MAX_STEPS",
    "S0",
    "S1",
    "S2",
    "CONTINUE",
    "REGENERATE",
    "N_HIDDEN",
    "N_ACTIONS",
    "BudgetArrays",
    "TrimModel",
]

#: smallest termination hazard before the cap (see TrimModel)
HAZARD_FLOOR = 1e-9
N_HIDDEN = 3
N_ACTIONS = 2
#: largest |value| a loaded bank may hold (alpha vectors, bounds); see PolicyBank.load
MAX_VALUE = 1e15


def _as_1d(name: str, value: ArrayLike, length: int | None = None) -> NDArray[np.float64]:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1 or (length is not None and arr.shape[0] != length):
        want = f"({length},)" if length is not None else "(n,)"
        raise ModelValidationError(f"{name} must have shape {want}; got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ModelValidationError(f"{name} contains non-finite values")
    return arr


def _check_prob(name: str, value: float) -> float:
    v = float(value)
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise ModelValidationError(f"{name} must be a probability in [0, 1]; got {value!r}")
    return v


def _check_edges(name: str, edges: ArrayLike | None, lo: float, hi: float) -> NDArray[np.float64]:
    """Inner bin edges, strictly increasing and strictly inside (lo, hi)."""
    if edges is None:
        return np.empty(0, dtype=np.float64)
    arr = _as_1d(name, edges)
    if arr.size and (np.any(np.diff(arr) <= 0) or arr[0] <= lo or arr[-1] >= hi):
        raise ModelValidationError(
            f"{name} must be strictly increasing inner edges inside ({lo}, {hi}); got {arr}"
        )
    return arr


class BudgetArrays:
    """``arrays(lam)`` / ``to_finite(lam)`` for models whose reward is ``success - lam * cost``.

    Shared by :class:`TrimModel` and
    :class:`trim_pomdp.routing.latent_model.LatentTrimModel`; a subclass
    provides ``_base_arrays() -> (T, Z, success, cost)`` and ``b0``.
    """

    def arrays(self, lam: float) -> dict[str, Any]:
        """Plain arrays of the finite-horizon POMDP at budget multiplier ``lam``.

        Returns ``T (H,A,X,S,X,S)``, ``Z (A,X,S,O)`` (time-invariant),
        ``R (H,A,X,S) = success - lam * cost``, ``x0 = 0`` and ``b0``.
        """
        lam = float(lam)
        if not (lam >= 0.0 and math.isfinite(lam)):
            raise ModelValidationError(f"lambda must be finite and >= 0; got {lam!r}")
        T, Z, succ, cost = self._base_arrays()  # type: ignore[attr-defined]
        return {"T": T, "Z": Z, "R": succ - lam * cost, "x0": 0,
                "b0": self.b0}  # type: ignore[attr-defined]

    def to_finite(self, lam: float):
        """The :class:`~trim_pomdp.engine.finite.FiniteHorizonPOMDP` at multiplier ``lam``."""
        from trim_pomdp.engine.finite import FiniteHorizonPOMDP

        a = self.arrays(lam)
        return FiniteHorizonPOMDP(a["T"], a["Z"], a["R"], x0=a["x0"], b0=a["b0"])


class TrimModel(BudgetArrays):
    """The TRIM routing POMDP (see the module docstring for the transition rules).

    Build it from fitted models (:mod:`trim_pomdp.fit`)::

        TrimModel(transition, observation, n_score_bins=10, n_min_bins=None, n_token_bins=4)

    or from raw parameters with :meth:`from_parameters`.

    Parameters
    ----------
    transition : TransitionModel
        Fitted; provides ``p_w_``, ``p_s_``, ``hazard_``, token bin edges and the expected
        strong tokens rule.
    observation : ObservationModel
        Fitted; provides ``discretize(n_score_bins, n_min_bins)``.
    n_score_bins, n_min_bins : int
        Observation binning (``n_min_bins=None`` uses the current score only).
        ``n_score_bins=None`` (default): the count recorded in ``observation.binning``
        (``trim-pomdp fit`` chooses it, :mod:`trim_pomdp.routing.binning`), else 10.
    n_token_bins : int
        Number of cheap-token bins ``K`` (quantile bins of the cheap step lengths).
    max_steps : int
        Trace cap ``N`` (30).

    Attributes
    ----------
    p_w, p_s : float
    hazard : ndarray (N,)
        ``hazard[t-1] = P(step t is final | step t reached)``; ``hazard[N-1] == 1``.
    obs_matrix : ndarray (3, O)
        ``P(o | s)`` for the hidden state of the draft that produced the observation.
    score_edges, min_edges : ndarray
        Inner edges of the score bins and of the min-previous-score bins (empty: 1 bin).
    token_edges : ndarray (K-1,)
        Inner edges of the cheap-token bins: bin ``k`` = number of edges ``<= tokens``.
    token_probs : ndarray (K,)
        ``q_k``, the probability that a draft falls in token bin ``k``.
    strong_tokens : ndarray (K,)
        ``c_k = E[strong tokens | cheap draft in bin k]`` (cost of a regeneration).
    """

    def __init__(
        self,
        transition: Any,
        observation: Any,
        *,
        n_score_bins: int | None = None,
        n_min_bins: int | None = None,
        n_token_bins: int = 4,
        max_steps: int = MAX_STEPS,
    ) -> None:
        if n_score_bins is None:
            # the count `trim-pomdp fit` chose and recorded in the observation model
            rec = getattr(observation, "binning", None)
            n_score_bins = 10 if rec is None else int(rec["n_score_bins"])
        params = _parameters_from_fitted(
            transition,
            observation,
            n_score_bins=n_score_bins,
            n_min_bins=n_min_bins,
            n_token_bins=n_token_bins,
            max_steps=max_steps,
        )
        self._init(**params)

    @classmethod
    def from_parameters(
        cls,
        *,
        p_w: float,
        p_s: float,
        hazard: ArrayLike,
        obs_matrix: ArrayLike,
        token_probs: ArrayLike = (1.0,),
        strong_tokens: ArrayLike = (1.0,),
        token_edges: ArrayLike | None = None,
        score_edges: ArrayLike | None = None,
        min_edges: ArrayLike | None = None,
        max_steps: int | None = None,
    ) -> TrimModel:
        """Build the model from raw parameters.

        ``obs_matrix`` has shape ``(3, O)`` with ``O = (len(score_edges) + 1) *
        (len(min_edges) + 1)`` and ``o = i_score * n_min_bins + i_min``; ``score_edges``
        defaults to ``O`` equal-width bins on [0, 1] when ``min_edges`` is None.
        ``hazard`` has length ``max_steps`` (default: its length) and its last entry is
        forced to 1 by the model (the cap).
        """
        self = cls.__new__(cls)
        obs = np.asarray(obs_matrix, dtype=np.float64)
        if score_edges is None and min_edges is None and obs.ndim == 2:
            n = obs.shape[1]
            score_edges = np.arange(1, n) / n
        self._init(
            p_w=p_w,
            p_s=p_s,
            hazard=hazard,
            obs_matrix=obs,
            token_probs=token_probs,
            strong_tokens=strong_tokens,
            token_edges=token_edges,
            score_edges=score_edges,
            min_edges=min_edges,
            max_steps=max_steps,
        )
        return self

    def _init(
        self,
        *,
        p_w,
        p_s,
        hazard,
        obs_matrix,
        token_probs,
        strong_tokens,
        token_edges,
        score_edges,
        min_edges,
        max_steps,
    ) -> None:
        self.p_w = _check_prob("p_w", p_w)
        self.p_s = _check_prob("p_s", p_s)
        hz = _as_1d("hazard", hazard)
        if max_steps is None:
            max_steps = hz.shape[0]
        if not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
            raise ModelValidationError(f"max_steps must be a positive int; got {max_steps!r}")
        self.max_steps = int(max_steps)
        if hz.shape[0] != self.max_steps:
            raise ModelValidationError(
                f"hazard must have shape (max_steps,) = ({self.max_steps},); got {hz.shape}"
            )
        if np.any(hz < 0) or np.any(hz > 1):
            raise ModelValidationError(f"hazard must lie in [0, 1]; got {hz}")
        hz = hz.copy()
        # A hazard of exactly 0 or 1 before the cap would make an observed final flag
        # impossible (a draft that ends earlier, or runs longer, than any training trace),
        # and the router's filter undefined at that step.  The flag is observed and
        # independent of the hidden state, so flooring it changes no belief and moves the
        # value by at most ~HAZARD_FLOOR per step.
        hz[:-1] = np.clip(hz[:-1], HAZARD_FLOOR, 1.0 - HAZARD_FLOOR)
        hz[-1] = 1.0  # the cap: step max_steps is always final
        self.hazard = hz
        self.score_edges = _check_edges("score_edges", score_edges, 0.0, 1.0)
        self.min_edges = _check_edges("min_edges", min_edges, 0.0, 1.0)
        self.n_score_bins = self.score_edges.size + 1
        self.n_min_bins = self.min_edges.size + 1
        self.uses_min = min_edges is not None
        n_obs = self.n_score_bins * self.n_min_bins
        obs = np.asarray(obs_matrix, dtype=np.float64)
        if obs.shape != (N_HIDDEN, n_obs):
            raise ModelValidationError(
                "obs_matrix must have shape (n_hidden, n_score_bins * n_min_bins) = "
                f"(3, {n_obs}); got {obs.shape}"
            )
        if not np.all(np.isfinite(obs)) or np.any(obs < 0):
            raise ModelValidationError("obs_matrix must be finite and non-negative")
        sums = obs.sum(axis=1)
        for s in range(N_HIDDEN):
            if abs(sums[s] - 1.0) > 1e-6:
                raise ModelValidationError(
                    f"obs_matrix[s={s}, :] sums to {sums[s]:.6g}; expected 1 (tol 1e-06)"
                )
        self.obs_matrix = obs / sums[:, None]
        q = _as_1d("token_probs", token_probs)
        if np.any(q < 0) or abs(q.sum() - 1.0) > 1e-6:
            raise ModelValidationError(f"token_probs must be a distribution; got {q}")
        self.token_probs = q / q.sum()
        k = q.shape[0]
        self.strong_tokens = _as_1d("strong_tokens", strong_tokens, k)
        if np.any(self.strong_tokens < 0):
            raise ModelValidationError("strong_tokens must be non-negative")
        if token_edges is None:
            if k != 1:
                raise ModelValidationError(
                    f"token_edges (inner edges, shape ({k - 1},)) are required with {k} token bins"
                )
            token_edges = np.empty(0)
        self.token_edges = _check_edges("token_edges", token_edges, -np.inf, np.inf)
        if self.token_edges.shape[0] != k - 1:
            raise ModelValidationError(
                f"token_edges must have shape (n_token_bins - 1,) = ({k - 1},); "
                f"got {self.token_edges.shape}"
            )
        for arr in (self.hazard, self.score_edges, self.min_edges, self.obs_matrix,
                    self.token_probs, self.strong_tokens, self.token_edges):
            arr.flags.writeable = False
        self._arrays: tuple[NDArray[np.float64], ...] | None = None

    @classmethod
    def from_scenario(
        cls,
        scenario: Any,
        *,
        n_score_bins: int = 10,
        n_min_bins: int | None = None,
        n_token_bins: int = 4,
    ) -> TrimModel:
        """The model a scenario (:mod:`trim_pomdp.simulation.scenario`) implies when it has
        no problem-level spread, no PRM bias and no within-trace correlation: ``p_w``/``p_s``
        = the scenario means, its hazard, Beta-bin observation probabilities, lognormal token
        bins.

        With spread, bias or correlation the result is the natural *approximation* (the
        means), not an exact match.  Token bins: cheap lengths are integers, so the inner
        edges sit at half-integers near the lognormal quantiles ``k/K`` and
        ``q_k = Phi((log e_{k+1} - mu)/sigma) - Phi((log e_k - mu)/sigma)`` exactly;
        ``c_k = E[strong tokens | cheap tokens in bin k]`` by quadrature over the
        bivariate normal of the log-lengths (correlation ``token_correlation``).
        ``n_min_bins`` needs the joint law of (score, min of earlier scores), which is not
        a per-state product; only ``n_min_bins=None`` is supported here.
        """
        from scipy.special import betainc, ndtr, ndtri

        if n_min_bins is not None:
            raise ModelValidationError("from_scenario supports n_min_bins=None only")
        edges = np.linspace(0.0, 1.0, n_score_bins + 1)
        obs = np.stack([np.diff(betainc(a, b, edges)) for a, b in scenario.score_beta])
        mu_c, sd_c = scenario.cheap_tokens
        mu_s, sd_s = scenario.strong_tokens
        rho = float(getattr(scenario, "token_correlation", 0.0))
        qs = np.exp(mu_c + sd_c * ndtri(np.arange(1, n_token_bins) / n_token_bins))
        inner = np.unique(np.maximum(np.floor(qs), 1.0) + 0.5)
        full = np.concatenate([[-np.inf], inner, [np.inf]])
        # cheap tokens = max(1, round(exp(mu_c + sd_c z))): bin by the continuous value
        zc_edges = np.where(np.isfinite(full), (np.log(np.abs(full)) - mu_c) / sd_c, full)
        probs = np.diff(ndtr(zc_edges))
        # E[strong | z_c in bin]: E[exp(mu_s + sd_s (rho z_c + sqrt(1-rho^2) w))]
        #   = exp(mu_s + sd_s^2 (1 - rho^2) / 2) E[exp(sd_s rho z_c) | bin]
        # and E[exp(c z) 1{z in (l, u)}] = exp(c^2/2) (Phi(u - c) - Phi(l - c)).
        c = sd_s * rho
        part = np.exp(c * c / 2) * np.diff(ndtr(zc_edges - c))
        strong = np.exp(mu_s + sd_s**2 * (1 - rho**2) / 2) * part / probs
        return cls.from_parameters(
            p_w=scenario.p_w_mean,
            p_s=scenario.p_s_mean,
            hazard=scenario.hazard_array(),
            obs_matrix=obs / obs.sum(axis=1, keepdims=True),
            token_probs=probs,
            strong_tokens=strong,
            token_edges=inner,
            score_edges=edges[1:-1],
        )

    # -- sizes and indexing ------------------------------------------------------------------
    @property
    def n_token_bins(self) -> int:
        return int(self.token_probs.shape[0])

    @property
    def n_observed(self) -> int:
        """``X = 2K + 2``: start, (final flag, token bin) pairs, terminal."""
        return 2 * self.n_token_bins + 2

    @property
    def n_hidden(self) -> int:
        return N_HIDDEN

    @property
    def n_actions(self) -> int:
        return N_ACTIONS

    @property
    def n_observations(self) -> int:
        return int(self.obs_matrix.shape[1])

    @property
    def horizon(self) -> int:
        """``H = max_steps + 1`` decision epochs (epoch 0 is the start)."""
        return self.max_steps + 1

    @property
    def start(self) -> int:
        return 0

    @property
    def terminal(self) -> int:
        return self.n_observed - 1

    @property
    def b0(self) -> NDArray[np.float64]:
        """Hidden belief at the start epoch (nothing drafted yet: S0)."""
        return np.array([1.0, 0.0, 0.0])

    def observed_index(self, is_final: bool, token_bin: int) -> int:
        """``x = 1 + is_final * K + token_bin``."""
        return 1 + int(bool(is_final)) * self.n_token_bins + int(token_bin)

    def token_bin(self, tokens: ArrayLike) -> NDArray[np.int64]:
        """Token bin of cheap step lengths: number of inner edges ``<= tokens``."""
        return np.searchsorted(self.token_edges, np.asarray(tokens, np.float64), side="right")

    def observation_index(self, score: ArrayLike, min_prev: ArrayLike = 1.0) -> NDArray[np.int64]:
        """Observation index ``o = i_score * n_min_bins + i_min`` (``i_min = 0`` without the
        min feature); bin ``i`` = number of inner edges ``<= value``."""
        i_s = np.searchsorted(self.score_edges, np.asarray(score, np.float64), side="right")
        i_m = np.searchsorted(self.min_edges, np.asarray(min_prev, np.float64), side="right")
        return i_s * self.n_min_bins + (i_m if self.uses_min else 0)

    # -- arrays ------------------------------------------------------------------------------
    def score_marginal(self) -> TrimModel:
        """The score-only model of a model with the min-previous-score feature: the same
        transition, tokens and score edges, ``P(score bin | state) = sum_m P(score bin, min
        bin m | state)``; ``self`` when there is no min feature.  The drift monitor's shadow
        filter and the refit use it (:mod:`trim_pomdp.routing.drift` says why)."""
        if not self.uses_min:
            return self
        nm = int(self.min_edges.size) + 1
        obs = np.asarray(self.obs_matrix, dtype=np.float64).reshape(3, -1, nm).sum(axis=2)
        return TrimModel.from_parameters(
            p_w=self.p_w, p_s=self.p_s, hazard=self.hazard, obs_matrix=obs,
            token_probs=self.token_probs, strong_tokens=self.strong_tokens,
            token_edges=self.token_edges, score_edges=self.score_edges,
            max_steps=self.max_steps)

    def _base_arrays(self):
        """Lambda-independent arrays: T, Z, the success reward and the token cost."""
        if self._arrays is not None:
            return self._arrays
        H, K, X, S = self.horizon, self.n_token_bins, self.n_observed, N_HIDDEN
        n_obs = self.n_observations
        N = self.max_steps
        p_w, p_s = self.p_w, self.p_s
        T = np.zeros((H, N_ACTIONS, X, S, X, S))
        # Unreachable (t, x) pairs and the terminal: go to (or stay in) the terminal with
        # the hidden state unchanged so that every row is a distribution.
        for s in range(S):
            T[:, :, :, s, X - 1, s] = 1.0
        draft = np.array([p_w, 0.0, 1.0 - p_w])  # hidden state of a fresh cheap draft
        # P(s' | s, a) for a non-final step
        P = np.zeros((N_ACTIONS, S, S))
        P[CONTINUE, S0] = draft
        P[CONTINUE, S2, S1] = 1.0
        P[CONTINUE, S1, S1] = 1.0
        P[REGENERATE, S0] = p_s * draft + np.array([0.0, 1.0 - p_s, 0.0])
        P[REGENERATE, S2] = P[REGENERATE, S0]
        P[REGENERATE, S1, S1] = 1.0

        def next_x(t_next: int) -> NDArray[np.float64]:
            # distribution of the next draft's observed part at step t_next
            h = self.hazard[t_next - 1]
            px = np.zeros(X)
            px[1 : 1 + K] = (1.0 - h) * self.token_probs
            px[1 + K : 1 + 2 * K] = h * self.token_probs
            return px

        # epoch 0: both actions free, lead to the first draft regardless of s
        px = next_x(1)
        for a in range(N_ACTIONS):
            for s in range(S):
                T[0, a, 0, s] = px[:, None] * draft[None, :]
        succ = np.zeros((H, N_ACTIONS, X, S))
        cost = np.zeros((H, N_ACTIONS, X, S))
        for t in range(1, H):
            px = next_x(t + 1) if t < N else None
            for x in range(1, 1 + 2 * K):
                final = x >= 1 + K or t == N  # step N is final whatever the flag says
                k = (x - 1) % K
                cost[t, REGENERATE, x, :] = self.strong_tokens[k]
                if final:
                    succ[t, CONTINUE, x, S0] = 1.0
                    succ[t, REGENERATE, x, S0] = p_s
                    succ[t, REGENERATE, x, S2] = p_s
                    continue  # -> terminal (default rows)
                for a in range(N_ACTIONS):
                    T[t, a, x] = px[None, :, None] * P[a][:, None, :]
        Z = np.zeros((N_ACTIONS, X, S, n_obs))
        Z[:, 1 : 1 + 2 * K] = self.obs_matrix[None, None]
        Z[:, 0, :, 0] = 1.0  # never reached as x'; any valid row
        Z[:, X - 1, :, 0] = 1.0  # terminal emits observation 0
        for arr in (T, Z, succ, cost):
            arr.flags.writeable = False
        self._arrays = (T, Z, succ, cost)
        return self._arrays

    # -- persistence -------------------------------------------------------------------------
    def _to_arrays(self) -> dict[str, NDArray]:
        return {
            "model_hazard": np.asarray(self.hazard),
            "model_obs_matrix": np.asarray(self.obs_matrix),
            "model_token_probs": np.asarray(self.token_probs),
            "model_strong_tokens": np.asarray(self.strong_tokens),
            "model_token_edges": np.asarray(self.token_edges),
            "model_score_edges": np.asarray(self.score_edges),
            "model_min_edges": np.asarray(self.min_edges),
        }

    def _to_meta(self) -> dict[str, Any]:
        return {"p_w": self.p_w, "p_s": self.p_s, "max_steps": self.max_steps,
                "uses_min": self.uses_min}

    @classmethod
    def _from_saved(cls, meta: dict[str, Any], arrays: Any) -> TrimModel:
        return cls.from_parameters(
            p_w=meta["p_w"],
            p_s=meta["p_s"],
            hazard=arrays["model_hazard"],
            obs_matrix=arrays["model_obs_matrix"],
            token_probs=arrays["model_token_probs"],
            strong_tokens=arrays["model_strong_tokens"],
            token_edges=arrays["model_token_edges"],
            score_edges=arrays["model_score_edges"],
            min_edges=arrays["model_min_edges"] if meta["uses_min"] else None,
            max_steps=meta["max_steps"],
        )

    def __repr__(self) -> str:
        return (
            f"TrimModel(p_w={self.p_w:.4g}, p_s={self.p_s:.4g}, n_score_bins={self.n_score_bins}, "
            f"n_min_bins={self.n_min_bins if self.uses_min else None}, "
            f"n_token_bins={self.n_token_bins}, max_steps={self.max_steps})"
        )


def _parameters_from_fitted(
    transition: Any, observation: Any, *, n_score_bins: int, n_min_bins: int | None,
    n_token_bins: int, max_steps: int,
) -> dict[str, Any]:
    """Raw TrimModel parameters from a fitted TransitionModel and ObservationModel.

    Token bins are the quantile bins of the cheap step lengths
    (``transition.token_bin_edges``); tied quantiles (empty bins) are merged.  ``q_k`` is
    the empirical bin probability and ``c_k`` the expected strong tokens of the mean cheap
    length in the bin (``transition.expected_strong_tokens_per_bin``).  Observations are
    ``observation.discretize`` on equal-width bins of [0, 1].
    """
    for est in (transition, observation):
        check = getattr(est, "_check_fitted", None)
        if check is not None:
            check()
    hazard = np.asarray(transition.hazard_, dtype=np.float64)
    if hazard.shape[0] != max_steps:
        raise ModelValidationError(
            f"transition.hazard_ must have shape (max_steps,) = ({max_steps},); got {hazard.shape}"
        )
    full = np.asarray(transition.token_bin_edges(n_token_bins), dtype=np.float64)
    inner = np.unique(full[1:-1])
    inner = inner[(inner > full[0])] if inner.size else inner
    edges = np.concatenate([[full[0]], inner, [full[-1]]])
    probs = np.asarray(transition.token_bin_probabilities(edges), dtype=np.float64)
    strong = np.asarray(transition.expected_strong_tokens_per_bin(edges), dtype=np.float64)
    keep = probs > 0  # an empty bin (all mass on one side of an edge) carries no information
    if not np.all(keep):
        # merge empty bins into a neighbour by dropping the edge that bounds them
        drop = [i for i in range(len(probs)) if not keep[i]]
        inner = np.delete(inner, [min(i, len(inner) - 1) for i in drop])
        edges = np.concatenate([[full[0]], inner, [full[-1]]])
        probs = np.asarray(transition.token_bin_probabilities(edges), dtype=np.float64)
        strong = np.asarray(transition.expected_strong_tokens_per_bin(edges), dtype=np.float64)
    uses_min = n_min_bins is not None
    obs = np.asarray(observation.discretize(n_score_bins, n_min_bins), dtype=np.float64)
    return {
        "p_w": float(transition.p_w_),
        "p_s": float(transition.p_s_),
        "hazard": hazard,
        "obs_matrix": obs,
        "token_probs": probs,
        "strong_tokens": strong,
        "token_edges": inner,
        "score_edges": np.arange(1, n_score_bins) / n_score_bins,
        "min_edges": (np.arange(1, n_min_bins) / n_min_bins) if uses_min else None,
        "max_steps": max_steps,
    }


