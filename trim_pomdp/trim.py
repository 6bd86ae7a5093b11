"""The TRIM routing POMDP, budgets and policy banks.

TRIM (Kapoor et al., ICLR 2026) routes each step of a cheap model's reasoning trace: after
the cheap model drafts step t and a process reward model (PRM) scores it, a router either
*continues* (keeps the draft) or *regenerates* it with a strong model at a cost.  This
module turns fitted models of that process into a finite-horizon POMDP with mixed
observability (piece ``finite``), one per budget multiplier lambda.

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

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp import _validate as _v
from trim_pomdp.errors import ModelValidationError, PolicyFormatError

__all__ = [
    "MAX_STEPS",
    "S0",
    "S1",
    "S2",
    "CONTINUE",
    "REGENERATE",
    "TrimModel",
    "TrimPolicy",
    "PolicyBank",
    "solve_grid",
    "default_lambdas",
    "calibrate",
]

MAX_STEPS = 30
S0, S1, S2 = 0, 1, 2
#: smallest termination hazard before the cap (see TrimModel)
HAZARD_FLOOR = 1e-9
CONTINUE, REGENERATE = 0, 1
N_HIDDEN = 3
N_ACTIONS = 2
FORMAT_VERSION = 1
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

    Shared by :class:`TrimModel` and :class:`trim_pomdp.latent.LatentTrimModel`; a subclass
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
        """The :class:`~trim_pomdp.finite.FiniteHorizonPOMDP` at budget multiplier ``lam``."""
        from trim_pomdp.finite import FiniteHorizonPOMDP

        a = self.arrays(lam)
        return FiniteHorizonPOMDP(a["T"], a["Z"], a["R"], x0=a["x0"], b0=a["b0"])


class TrimModel(BudgetArrays):
    """The TRIM routing POMDP (see the module docstring for the transition rules).

    Build it from fitted models (piece ``fit``)::

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
        n_score_bins: int = 10,
        n_min_bins: int | None = None,
        n_token_bins: int = 4,
        max_steps: int = MAX_STEPS,
    ) -> None:
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
        """The model a scenario (piece ``sim``) implies when it has no problem-level spread,
        no PRM bias and no within-trace correlation: ``p_w``/``p_s`` = the scenario means,
        its hazard, Beta-bin observation probabilities, lognormal token bins.

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
        """Wrap a :class:`~trim_pomdp.finite.FiniteHorizonPolicy` solved for ``model``."""
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


class PolicyBank:
    """One :class:`TrimPolicy` per budget multiplier lambda, sorted by lambda (increasing:
    from the most to the least generous budget).  Indexable; ``save``/``load`` as
    ``.npz`` + a JSON sidecar (``<path>.json``) with ``format_version``."""

    def __init__(self, model: TrimModel, policies: Sequence[TrimPolicy], *,
                 default_lambda: float | None = None,
                 target_cost_fraction: float | None = None) -> None:
        if not policies:
            raise PolicyFormatError("a PolicyBank needs at least one policy")
        for p in policies:
            if p.model is not model:
                raise PolicyFormatError("every policy of a PolicyBank must share its TrimModel")
        bad = [(i, p.lam) for i, p in enumerate(policies) if not math.isfinite(p.lam)]
        if bad:
            # argsort and nearest() would put a NaN lambda anywhere: nearest() returned
            # that policy for every budget
            i, lam = bad[0]
            raise PolicyFormatError(f"policy {i} of the PolicyBank has lambda {lam}; every "
                                    "lambda must be finite")
        order = np.argsort([p.lam for p in policies], kind="stable")
        self.model = model
        self.policies: list[TrimPolicy] = [policies[i] for i in order]
        self.lambdas = np.array([p.lam for p in self.policies])
        self.lambdas.flags.writeable = False
        #: the lambda a user of the bank gets without choosing one (``trim-pomdp route
        #: --policy BANK`` without ``--budget``), and the cost fraction it was chosen for
        #: (:func:`default_budget`); None when the bank does not record one
        self.default_lambda = None if default_lambda is None else float(default_lambda)
        self.target_cost_fraction = (None if target_cost_fraction is None
                                     else float(target_cost_fraction))

    def __len__(self) -> int:
        return len(self.policies)

    def __getitem__(self, i: int) -> TrimPolicy:
        return self.policies[i]

    def __iter__(self):
        return iter(self.policies)

    def nearest(self, lam: float) -> TrimPolicy:
        """The policy whose lambda is closest to ``lam`` (on a log scale when both > 0)."""
        lams = self.lambdas
        if lam > 0 and np.all(lams > 0):
            i = int(np.argmin(np.abs(np.log(lams) - math.log(lam))))
        else:
            i = int(np.argmin(np.abs(lams - lam)))
        return self.policies[i]

    def family(self, name: str | None = None):
        """The budget-sweep :class:`~trim_pomdp.evaluate.Family` (parameter ``lambda``)
        for :func:`trim_pomdp.evaluate.evaluate`, named ``name`` (default ``"trim-pomdp"``,
        or ``"trim-pomdp+"`` for a bank of a :class:`~trim_pomdp.latent.LatentTrimModel`)."""
        from trim_pomdp.evaluate import Family
        from trim_pomdp.router import TrimBatchPolicy

        if name is None:
            name = getattr(self.model, "FAMILY_NAME", "trim-pomdp")

        by_lam = {float(p.lam): p for p in self.policies}

        def make_policy(lam: float):
            return TrimBatchPolicy(by_lam[float(lam)], name=name)

        return Family(name, [float(p.lam) for p in self.policies], make_policy, "lambda")

    # -- persistence -------------------------------------------------------------------------
    @staticmethod
    def _paths(path: str | Path) -> tuple[Path, Path]:
        p = Path(path)
        if p.suffix != ".npz":
            p = p.with_name(p.name + ".npz")
        return p, p.with_suffix(".json")

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.npz``, no pickles) and ``path`` with suffix ``.json``.

        Atomic: both files are written to temporary files in the same folder and renamed
        over the targets only when both are complete, so a failed save (disk full) leaves
        the previous bank intact (:class:`~trim_pomdp.errors.OutputWriteError`).  Every
        policy needs finite ``value_b0`` and ``upper_bound`` (the solver's bounds):
        :meth:`load` rejects non-finite ones, so they are refused here already.
        """
        from trim_pomdp._io import atomic_files

        npz, meta_path = self._paths(path)
        for p in self.policies:
            if not (math.isfinite(p.value_b0) and math.isfinite(p.upper_bound)):
                raise PolicyFormatError(
                    f"policy at lambda={p.lam:g} has value_b0={p.value_b0!r}, upper_bound="
                    f"{p.upper_bound!r}; a saved bank records finite solver bounds"
                )
        counts = np.array([p.alphas.shape[0] for p in self.policies], dtype=np.int64)
        arrays = self.model._to_arrays()
        arrays.update(
            lambdas=np.asarray(self.lambdas),
            alphas=np.concatenate([p.alphas for p in self.policies], axis=0),
            actions=np.concatenate([p.actions for p in self.policies]),
            offsets=np.stack([p.offsets for p in self.policies]),
            counts=counts,
            value_b0=np.array([p.value_b0 for p in self.policies]),
            upper_bound=np.array([p.upper_bound for p in self.policies]),
        )
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": "trim_pomdp.PolicyBank",
            "n_policies": len(self),
            "model": self.model._to_meta(),
            "lambdas": [float(v) for v in self.lambdas],
        }
        # optional keys (format_version 1 readers that predate them ignore them)
        if self.default_lambda is not None:
            meta["default_lambda"] = self.default_lambda
        if self.target_cost_fraction is not None:
            meta["target_cost_fraction"] = self.target_cost_fraction
        text = json.dumps(meta, indent=2, allow_nan=False) + "\n"
        npz.parent.mkdir(parents=True, exist_ok=True)
        with atomic_files([npz, meta_path], "wb") as (fh_npz, fh_meta):
            np.savez(fh_npz, **arrays)
            fh_meta.write(text.encode("utf-8"))
        return npz

    @classmethod
    def load(cls, path: str | Path) -> PolicyBank:
        """Read a bank written by :meth:`save` (never unpickles).

        Everything is checked before use: the sidecar's field types, every array's dtype
        (real numbers; integers for ``actions``/``offsets``/``counts``), shape and
        finiteness (alphas, lambdas, bounds, model arrays), action and offset ranges, and
        that sidecar and ``.npz`` agree (number of policies, lambdas, min-score feature).

        Raises
        ------
        FileNotFoundError
            The sidecar or the ``.npz`` is missing.
        PolicyFormatError
            Anything else, in one line naming the file and the field or array.
        """
        npz, meta_path = cls._paths(path)
        meta = _read_json_file(meta_path, PolicyFormatError, "PolicyBank metadata")
        kind = meta.get("kind") if isinstance(meta, dict) else None
        version = meta.get("format_version") if isinstance(meta, dict) else None
        if kind != "trim_pomdp.PolicyBank" or version != FORMAT_VERSION or \
                isinstance(version, bool):
            raise PolicyFormatError(
                f"{meta_path}: not a PolicyBank of format_version {FORMAT_VERSION} "
                f"(got kind={_v._short(kind)}, format_version={_v._short(version)})"
            )
        E = PolicyFormatError
        where = str(meta_path)
        mmeta = _v.json_dict(meta, "model", where, E)
        mwhere = f"{meta_path}: model"
        latent = _v.json_bool(mmeta, "latent", mwhere, E, default=False)
        _v.json_number(mmeta, "p_w", mwhere, E, lo=0.0, hi=1.0)
        _v.json_number(mmeta, "p_s", mwhere, E, lo=0.0, hi=1.0)
        _v.json_int(mmeta, "max_steps", mwhere, E, lo=1, hi=100_000)
        uses_min = _v.json_bool(mmeta, "uses_min", mwhere, E)
        n_policies = _v.json_int(meta, "n_policies", where, E, lo=1, hi=1_000_000)
        lams_meta = meta.get("lambdas")
        if not isinstance(lams_meta, list):
            raise E(f"{where}: field 'lambdas' must be a list of numbers; got "
                    f"{_v._short(lams_meta)}")
        lams_meta = [_v.json_number({"lambdas": v}, "lambdas", f"{where}: lambdas[{i}]", E,
                                    lo=0.0) for i, v in enumerate(lams_meta)]
        arrays = _v.read_npz(npz, E, "PolicyBank arrays")
        need = ("lambdas", "alphas", "actions", "offsets", "counts", "value_b0", "upper_bound",
                "model_hazard", "model_obs_matrix", "model_token_probs", "model_strong_tokens",
                "model_token_edges", "model_score_edges", "model_min_edges")
        missing = [k for k in need if k not in arrays]
        if missing:
            raise E(f"{npz}: malformed PolicyBank arrays: missing {', '.join(missing)}")
        w = str(npz)
        # model arrays: real and finite before any model code sees them
        for k in list(arrays):
            if k.startswith(("model_", "latent_")):
                arrays[k] = _v.float_array(arrays[k], k, w, E)
        n_min_edges = arrays["model_min_edges"].size
        if not uses_min and n_min_edges:
            raise E(f"{where}: model.uses_min is false but {npz.name} has {n_min_edges} "
                    "min-score bin edges (sidecar and .npz disagree on the min-score feature)")
        model_cls: Any = TrimModel
        if latent:
            from trim_pomdp.latent import LatentTrimModel  # TRIM-POMDP+ (issue 7)

            model_cls = LatentTrimModel
        try:
            # a hostile finite 1e308 overflows the row sums to inf, which the model then
            # rejects; numpy's overflow warning on the way says nothing more
            with np.errstate(over="ignore", invalid="ignore"):
                model = model_cls._from_saved(mmeta, arrays)
        except (ModelValidationError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise E(f"{npz}: the saved model is invalid: {exc}") from None
        lams = _v.float_array(arrays["lambdas"], "lambdas", w, E, shape=(None,), lo=0.0)
        n = lams.shape[0]
        if n != n_policies or n != len(lams_meta):
            raise E(f"{npz}: holds {n} policies (lambdas) but the sidecar {meta_path.name} "
                    f"says n_policies={n_policies} with {len(lams_meta)} lambdas")
        if not np.array_equal(lams, np.asarray(lams_meta, dtype=np.float64)):
            raise E(f"{npz}: lambdas {lams.tolist()} differ from the sidecar's {lams_meta}")
        counts = _v.int_array(arrays["counts"], "counts", w, E, shape=(n,), lo=1)
        total = int(counts.sum())
        # values are P(success) - lam * tokens: far inside +-1e15; the bound keeps every
        # alpha . belief product finite
        alphas = _v.float_array(arrays["alphas"], "alphas", w, E, shape=(total, model.n_hidden),
                                lo=-MAX_VALUE, hi=MAX_VALUE)
        actions = _v.int_array(arrays["actions"], "actions", w, E, shape=(total,), lo=0,
                               hi=model.n_actions - 1)
        n_blocks = model.horizon * model.n_observed + 1
        offsets = _v.int_array(arrays["offsets"], "offsets", w, E, shape=(n, n_blocks), lo=0)
        value_b0 = _v.float_array(arrays["value_b0"], "value_b0", w, E, shape=(n,),
                                  lo=-MAX_VALUE, hi=MAX_VALUE)
        upper = _v.float_array(arrays["upper_bound"], "upper_bound", w, E, shape=(n,),
                               lo=-MAX_VALUE, hi=MAX_VALUE)
        ends = np.cumsum(counts)
        policies = []
        for i in range(n):
            lo, hi = int(ends[i] - counts[i]), int(ends[i])
            try:
                policies.append(TrimPolicy(
                    model=model, lam=float(lams[i]), alphas=alphas[lo:hi],
                    actions=actions[lo:hi], offsets=offsets[i],
                    value_b0=float(value_b0[i]), upper_bound=float(upper[i])))
            except PolicyFormatError as exc:
                raise E(f"{npz}: policy {i} (lambda={lams[i]:g}): {exc}") from None
        defaults = {}
        for key in ("default_lambda", "target_cost_fraction"):
            v = meta.get(key)
            if v is not None:
                if (isinstance(v, bool) or not isinstance(v, (int, float))
                        or not math.isfinite(v) or v < 0):
                    raise E(f"{meta_path}: {key} must be a finite number >= 0; got {v!r}")
                defaults[key] = float(v)
        return cls(model, policies, **defaults)


def _read_json_file(path: Path, error: type[Exception], what: str) -> Any:
    """Decode a small JSON file (a sidecar); any failure is ``error`` naming the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise error(f"{path}: cannot read {what}: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the int digit limit
        raise error(f"{path}: cannot read {what}: not valid JSON "
                    f"({str(exc).splitlines()[0][:200]})") from None


def load_bank(path: str | Path) -> Any:
    """Load any saved bank of routers, one per budget, whatever wrote it.

    * a :class:`PolicyBank` (``bank.save(path)``: ``.npz`` + ``.json`` sidecar) of a
      :class:`TrimModel` (TRIM-POMDP) or of a :class:`~trim_pomdp.latent.LatentTrimModel`
      (TRIM-POMDP+);
    * a :class:`~trim_pomdp.rl.grid.RLRouterBank` (TRIM-Agg / TRIM-Seq: one ``.npz``, as
      ``trim-pomdp train`` writes it).

    Every kind has ``.family()`` for :func:`trim_pomdp.evaluate.evaluate` and ``lambdas``.
    Nothing is unpickled.

    Raises
    ------
    FileNotFoundError
        Neither ``path`` nor ``path.npz`` exists.
    PolicyFormatError
        The file is none of these (the message says what was found).
    """
    npz, meta_path = PolicyBank._paths(path)
    sidecar = "no PolicyBank sidecar " + meta_path.name
    if meta_path.exists():
        try:
            meta = _read_json_file(meta_path, PolicyFormatError, "metadata")
        except PolicyFormatError as exc:
            meta, sidecar = None, f"unreadable sidecar ({exc})"
        if isinstance(meta, dict) and meta.get("kind") == "trim_pomdp.PolicyBank":
            return PolicyBank.load(npz)
    if not npz.exists():
        raise FileNotFoundError(f"{path}: no such router bank (looked for {npz})")
    from trim_pomdp.rl.grid import RLRouterBank

    try:
        # the archive is checked first: numpy leaves a corrupt archive's file open
        _v.read_npz(npz, PolicyFormatError, "router bank")
        return RLRouterBank.load(npz)
    except (PolicyFormatError, *_v.NPZ_ERRORS) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise PolicyFormatError(
            f"{npz}: not a saved router bank: {sidecar} and not an RL router bank ({detail})"
        ) from None


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


def default_lambdas(model: TrimModel, n: int = 32) -> NDArray[np.float64]:
    """A geometric grid of budget multipliers spanning "regenerate whenever it helps at
    all" to "never regenerate": ``lam * c_bar`` from 1e-3 to 1, with ``c_bar`` the mean
    strong tokens of one regeneration."""
    c_bar = float(model.token_probs @ model.strong_tokens)
    if c_bar <= 0:
        raise ModelValidationError("expected strong tokens per step must be > 0 for a lambda grid")
    return np.geomspace(1e-3, 1.0, n) / c_bar


def solve_grid(
    model: TrimModel, lambdas: ArrayLike | None = None, **solver_opts: Any
) -> PolicyBank:
    """Solve the TRIM POMDP for every ``lambda`` (in parallel in C++ through
    :func:`trim_pomdp.finite.solve_finite_many`) and return the :class:`PolicyBank`.

    ``solver_opts`` go to ``solve_finite_many`` (``belief_points``, ``grid_resolution``,
    ``n_samples``, ``n_refine``, ``n_threads``, ``seed``); the engine's defaults otherwise.
    """
    from trim_pomdp.finite import solve_finite_many

    lams = default_lambdas(model) if lambdas is None else np.asarray(lambdas, dtype=np.float64)
    if lams.ndim != 1 or lams.size == 0:
        raise ModelValidationError(
            f"lambdas must be a non-empty 1-D sequence; got shape {lams.shape}"
        )
    base = model.to_finite(float(lams[0]))
    models = [base] + [base.with_rewards(model.arrays(float(v))["R"]) for v in lams[1:]]
    solved = solve_finite_many(models, **solver_opts)
    policies = [TrimPolicy.from_finite(model, float(v), p)
                for v, p in zip(lams, solved, strict=True)]
    return PolicyBank(model, policies)


def expected_cost_fractions(bank: PolicyBank) -> NDArray[np.float64]:
    """Each policy's strong-token cost as a fraction of always-strong's, in the bank's own
    model, estimated from the solved values alone (no simulation).

    The value at the start is ``V(lambda) = P(success) - lambda * C(lambda)`` with ``C``
    the expected strong tokens per query of the optimal policy at ``lambda``.  ``V`` is the
    upper envelope of lines in ``lambda``, so (envelope theorem) ``dV/dlambda = -C``; ``C``
    at each solved lambda is ``-dV/dlambda`` by finite differences of ``value_b0`` over the
    grid (``numpy.gradient``: central inside, one-sided at the ends).  Always-strong
    regenerates every step, so its cost is ``E[L] * sum_k q_k c_k`` with ``E[L] =
    sum_t prod_{u<t} (1 - h(u))``, the expected number of steps under the hazard (routing
    does not change the length).  The estimate inherits the solver's gap and the grid's
    coarseness; on the default scenario's 32-lambda grid it is within 0.03 of the
    fraction the simulator measures (tests/test_bank_defaults.py).  A one-policy bank has no
    differences: its fraction is NaN.
    """
    m = bank.model
    lams = np.asarray(bank.lambdas, dtype=np.float64)
    if lams.size < 2:
        return np.full(lams.size, np.nan)
    values = np.array([p.value_b0 for p in bank], dtype=np.float64)
    cost = -np.gradient(values, lams)
    hz = np.asarray(m.hazard, dtype=np.float64)
    expected_steps = float(np.concatenate([[1.0], np.cumprod(1.0 - hz)[:-1]]).sum())
    always_strong = expected_steps * float(np.asarray(m.token_probs) @ np.asarray(m.strong_tokens))
    if always_strong <= 0:
        raise ModelValidationError("always-strong costs nothing in this model (no strong tokens)")
    return np.clip(cost / always_strong, 0.0, None)


def default_budget(bank: PolicyBank, target_cost_fraction: float = 0.10) -> float:
    """The solved lambda whose :func:`expected_cost_fractions` is nearest
    ``target_cost_fraction`` (the bank's only lambda if it holds one policy).  A default
    for a user who has not chosen a budget; :func:`calibrate` measures the fraction on a
    scenario or on traces instead."""
    tcf = float(target_cost_fraction)
    if not (0.0 <= tcf <= 1.0):
        raise ValueError(f"target_cost_fraction must be in [0, 1]; got {target_cost_fraction!r}")
    if len(bank) == 1:
        return float(bank.lambdas[0])
    fr = expected_cost_fractions(bank)
    return float(bank.lambdas[int(np.argmin(np.abs(fr - tcf)))])


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

    With ``scenario`` each policy runs in the simulator (piece ``sim``) on the scenario's
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
    from trim_pomdp.router import TrimBatchPolicy
    from trim_pomdp.simulator import simulate_routing

    kw: dict[str, Any] = {}
    if n_problems is not None:
        kw["n_problems"] = n_problems
    if seed is not None:
        kw["seed"] = seed
    from trim_pomdp.baselines import AlwaysStrong

    strong = simulate_routing(scenario, AlwaysStrong(), **kw)
    denom = float(np.mean(strong.strong_tokens))
    out = np.empty(len(bank))
    for i, p in enumerate(bank):
        res = simulate_routing(scenario, TrimBatchPolicy(p), **kw)
        out[i] = float(np.mean(res.strong_tokens)) / denom
    return out


def _cost_fractions_traces(bank: PolicyBank, traces: Sequence[Any]) -> NDArray:
    from trim_pomdp.router import Router

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


@dataclass(frozen=True, kw_only=True)
class FitConfig:
    """How :func:`fit_from_scenario` (the demo's pipeline) builds the TRIM model.

    Attributes
    ----------
    n_fit_problems : int
        Problems simulated for the labelled training traces (cheap and strong runs).
    seed : int
        Seed of the training world (use one different from the evaluation world's).
    estimator : {"kde", "beta", "hist"}
        ObservationModel estimator.
    features : {"score", "score+min"}
        Observation features (current PRM score, optionally the min of earlier scores).
    n_score_bins, n_min_bins, n_token_bins : int
        Discretisation of the TRIM model (``n_min_bins`` only with ``"score+min"``).
    n_lambdas : int
        Size of the default geometric lambda grid.
    """

    n_fit_problems: int = 4000
    seed: int = 1
    estimator: str = "kde"
    features: str = "score"
    n_score_bins: int = 10
    n_min_bins: int | None = 4
    n_token_bins: int = 4
    n_lambdas: int = 32


def fit_from_scenario(scenario: Any, config: FitConfig = FitConfig(), *,
                      world: str = "training") -> tuple[TrimModel, Any, Any]:
    """Simulate labelled cheap and strong traces of ``scenario`` (piece ``sim``), fit the
    TransitionModel and ObservationModel (piece ``fit``) and build the TrimModel.

    ``world="training"`` (default) fits on the scenario's training world, which is the
    scenario itself unless it has a ``deployment`` section (PRM drift); ``"deployment"``
    fits on labelled traces of the deployment world (the model a router would have with
    the deployment PRM's labels: the reference of "value kept" under drift).

    Returns ``(model, transition, observation)``.
    """
    from trim_pomdp.observation import ObservationModel
    from trim_pomdp.transition import TransitionModel

    if world not in ("training", "deployment"):
        raise ValueError(f"world must be 'training' or 'deployment'; got {world!r}")
    if world == "training" and hasattr(scenario, "training"):
        scenario = scenario.training()

    generate_traces = _trace_simulator()
    cheap = generate_traces(scenario, model="cheap", n_problems=config.n_fit_problems,
                            seed=config.seed)
    strong = generate_traces(scenario, model="strong", n_problems=config.n_fit_problems,
                             seed=config.seed + 1)
    transition = TransitionModel().fit(cheap, strong)
    observation = ObservationModel(estimator=config.estimator, features=config.features).fit(cheap)
    model = TrimModel(transition, observation, n_score_bins=config.n_score_bins,
                      n_min_bins=config.n_min_bins if config.features == "score+min" else None,
                      n_token_bins=config.n_token_bins)
    return model, transition, observation


def _trace_simulator():
    """The simulator's labelled-trace generator (``simulate_traces``; ``generate_traces``
    in its first version)."""
    from trim_pomdp import simulator

    fn = getattr(simulator, "simulate_traces", None) or getattr(simulator, "generate_traces", None)
    if fn is None:  # pragma: no cover - depends on piece sim
        raise ImportError("trim_pomdp.simulator has no simulate_traces/generate_traces")
    return fn


def pomdp_family(options: Any = None, config: FitConfig | None = None):
    """Factory of the ``"trim-pomdp"`` family for :func:`trim_pomdp.evaluate.evaluate`:
    fits the models on traces simulated from ``options.scenario`` with seed
    ``options.seed + 1`` (never the evaluation world), solves the lambda grid
    (``options.n_params`` lambdas, default 32) and returns the family."""
    scenario = getattr(options, "scenario", None)
    if scenario is None:
        raise ValueError(
            "the trim-pomdp family needs FamilyOptions(scenario=...) to fit its models"
        )
    cfg = config or FitConfig(seed=int(getattr(options, "seed", 0)) + 1,
                              n_lambdas=getattr(options, "n_params", None) or 32)
    model, _, _ = fit_from_scenario(scenario, cfg)
    return solve_grid(model, default_lambdas(model, cfg.n_lambdas)).family()


def pomdp_deploy_family(options: Any = None, config: FitConfig | None = None):
    """Factory of the ``"trim-pomdp-deploy"`` family: like :func:`pomdp_family` but fitted
    on labelled traces of the *deployment* world (``options.deployment``, or
    ``options.scenario`` when there is no drift) -- the POMDP of a router that knows the
    deployment PRM, the reference of "gain kept" in :func:`trim_pomdp.evaluate.evaluate`."""
    scenario = getattr(options, "deployment", None) or getattr(options, "scenario", None)
    if scenario is None:
        raise ValueError(
            "the trim-pomdp-deploy family needs FamilyOptions(scenario=...) to fit its models"
        )
    cfg = config or FitConfig(seed=int(getattr(options, "seed", 0)) + 1,
                              n_lambdas=getattr(options, "n_params", None) or 32)
    model, _, _ = fit_from_scenario(scenario, cfg, world="deployment")
    return solve_grid(model, default_lambdas(model, cfg.n_lambdas)).family("trim-pomdp-deploy")
