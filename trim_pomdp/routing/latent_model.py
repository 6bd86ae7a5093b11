"""TRIM-POMDP+: the TRIM routing POMDP with latent episode-level classes.

The paper's POMDP (:class:`~trim_pomdp.routing.model.TrimModel`) uses one cheap accuracy ``p_w``,
one strong accuracy ``p_s`` and one PRM observation model for every problem.  Here each
episode (problem) also has

* a difficulty class ``d = 0..D-1`` with its own ``p_w(d)`` and ``p_s(d)``, prior ``pi_d``;
* a PRM-bias class ``b = 0..B-1`` with its own observation matrix ``Z_b[s, o]`` (a shift of
  the score distribution on the logit scale), prior ``rho_b``;

both drawn once at the start and fixed for the whole episode.  The hidden state is
``h = (d * B + b) * 3 + s`` with ``s`` in (S0, S1, S2), so ``n_hidden = 3 D B``; the
observed variables (start, final flag x token bin, terminal) are exactly those of
``TrimModel``.  Because the classes never change, the transition is block diagonal:

    T[t, a, x, (d,b,s), x', (d',b',s')] = 1[d'=d, b'=b] T_{d}(x', s' | t, a, x, s)
    Z[a, x', (d,b,s'), o]               = Z_b[s', o]
    R[t, a, x, (d,b,s)]                 = succ_d(t, a, x, s) - lambda * c(t, a, x)

where ``T_d`` and ``succ_d`` are the TrimModel rules with ``p_w(d), p_s(d)``.  The belief
over the ``3 D B`` states learns the class of the problem from the trace as it unfolds:
a long run of good scores makes an "easy"/"lenient-PRM" class likely, and the policy can
act on that.  With ``D = B = 1`` the arrays are exactly those of the TrimModel with the
same parameters (same policy, same value; tested).

The parameters are fitted from labelled traces by
:class:`trim_pomdp.fit.latent.LatentFitter`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp.errors import ModelValidationError
from trim_pomdp.routing.model import N_ACTIONS, N_HIDDEN, BudgetArrays, TrimModel

__all__ = ["LatentTrimModel", "shifted_beta_obs_matrix", "latent_belief_points"]


def _prob_vector(name: str, value: ArrayLike | None, n: int) -> NDArray[np.float64]:
    if value is None:
        return np.full(n, 1.0 / n)
    v = np.asarray(value, dtype=np.float64)
    if v.shape != (n,):
        raise ModelValidationError(f"{name} must have shape ({n},); got {v.shape}")
    if not np.all(np.isfinite(v)) or np.any(v < 0) or abs(v.sum() - 1.0) > 1e-6:
        raise ModelValidationError(f"{name} must be a probability vector summing to 1; got {v}")
    return v / v.sum()


def shifted_beta_obs_matrix(score_beta: Sequence[tuple[float, float]], shift: float,
                            score_edges: ArrayLike) -> NDArray[np.float64]:
    """``P(o | s)`` for scores ``y = expit(logit(q) + shift)``, ``q ~ Beta(a_s, b_s)``,
    binned with inner ``score_edges``:
    ``P(y <= e) = I_{expit(logit(e) - shift)}(a_s, b_s)`` (regularised incomplete beta)."""
    from scipy.special import betainc, expit, logit

    inner = np.asarray(score_edges, dtype=np.float64)
    u = np.concatenate([[0.0], expit(logit(inner) - shift), [1.0]])
    obs = np.stack([np.diff(betainc(a, b, u)) for a, b in score_beta])
    obs = np.maximum(obs, 0.0)
    return obs / obs.sum(axis=1, keepdims=True)


class LatentTrimModel(BudgetArrays):
    """TRIM POMDP with latent difficulty and PRM-bias classes (module docstring).

    Parameters
    ----------
    base : TrimModel
        Supplies the hazard, token bins, strong-token costs and observation binning.
    p_w, p_s : array_like (D,), optional
        Per-difficulty-class accuracies (default: ``[base.p_w]``, ``[base.p_s]``).
    difficulty_prior : array_like (D,), optional
        ``pi_d`` (default uniform).
    obs_matrices : array_like (B, 3, O), optional
        Per-bias-class ``P(o | s)`` (default: ``[base.obs_matrix]``).
    bias_prior : array_like (B,), optional
        ``rho_b`` (default uniform).

    Attributes
    ----------
    n_classes_difficulty, n_classes_bias : int
        ``D`` and ``B``.
    n_hidden : int
        ``3 D B``.
    """

    FAMILY_NAME = "trim-pomdp+"  # PolicyBank.family()'s default name for banks of this model

    def __init__(self, base: TrimModel, *, p_w: ArrayLike | None = None,
                 p_s: ArrayLike | None = None, difficulty_prior: ArrayLike | None = None,
                 obs_matrices: ArrayLike | None = None,
                 bias_prior: ArrayLike | None = None) -> None:
        if not isinstance(base, TrimModel):
            raise TypeError(f"base must be a TrimModel; got {type(base).__name__}")
        self.base = base
        pw = np.atleast_1d(np.asarray([base.p_w] if p_w is None else p_w, dtype=np.float64))
        ps = np.atleast_1d(np.asarray([base.p_s] if p_s is None else p_s, dtype=np.float64))
        if pw.ndim != 1 or pw.shape != ps.shape:
            raise ModelValidationError(
                f"p_w and p_s must both have shape (D,); got {pw.shape} and {ps.shape}")
        if np.any(~((pw >= 0) & (pw <= 1))) or np.any(~((ps >= 0) & (ps <= 1))):
            raise ModelValidationError(f"p_w, p_s must lie in [0, 1]; got {pw}, {ps}")
        D = pw.shape[0]
        obs = (base.obs_matrix[None] if obs_matrices is None
               else np.asarray(obs_matrices, dtype=np.float64))
        n_obs = base.n_observations
        if obs.ndim != 3 or obs.shape[1:] != (N_HIDDEN, n_obs):
            raise ModelValidationError(
                f"obs_matrices must have shape (B, 3, n_observations) = (B, 3, {n_obs}); "
                f"got {obs.shape}")
        if not np.all(np.isfinite(obs)) or np.any(obs < 0):
            raise ModelValidationError("obs_matrices must be finite and non-negative")
        sums = obs.sum(axis=2)
        if np.any(np.abs(sums - 1.0) > 1e-6):
            b, s = np.argwhere(np.abs(sums - 1.0) > 1e-6)[0]
            raise ModelValidationError(
                f"obs_matrices[b={b}, s={s}, :] sums to {sums[b, s]:.6g}; expected 1 (tol 1e-06)")
        B = obs.shape[0]
        self.p_w = pw
        self.p_s = ps
        self.difficulty_prior = _prob_vector("difficulty_prior", difficulty_prior, D)
        self.obs_matrices = obs / sums[:, :, None]
        self.bias_prior = _prob_vector("bias_prior", bias_prior, B)
        for a in (self.p_w, self.p_s, self.difficulty_prior, self.obs_matrices, self.bias_prior):
            a.flags.writeable = False
        self._cache: tuple[NDArray[np.float64], ...] | None = None

    # -- the pieces shared with TrimModel (the Router and solve_grid read these) ------------
    def __getattr__(self, name: str) -> Any:
        # hazard, token/score/min edges, token_probs, strong_tokens, uses_min, max_steps,
        # horizon, n_observed, n_token_bins, start, terminal, token_bin, observation_index,
        # observed_index, n_score_bins, n_min_bins, n_observations, n_actions
        if name in _DELEGATED:
            return getattr(self.base, name)
        raise AttributeError(name)

    @property
    def n_classes_difficulty(self) -> int:
        return int(self.p_w.shape[0])

    @property
    def n_classes_bias(self) -> int:
        return int(self.obs_matrices.shape[0])

    @property
    def n_classes(self) -> int:
        return self.n_classes_difficulty * self.n_classes_bias

    @property
    def n_hidden(self) -> int:
        return N_HIDDEN * self.n_classes

    @property
    def b0(self) -> NDArray[np.float64]:
        """Start belief: S0 in every class, class ``(d, b)`` with prior ``pi_d rho_b``."""
        b = np.zeros(self.n_hidden)
        b[0::N_HIDDEN] = np.outer(self.difficulty_prior, self.bias_prior).ravel()
        return b

    def hidden_index(self, d: int, b: int, s: int) -> int:
        """``h = (d * B + b) * 3 + s``."""
        return (int(d) * self.n_classes_bias + int(b)) * N_HIDDEN + int(s)

    def marginals(self, belief: ArrayLike) -> dict[str, NDArray[np.float64]]:
        """Split a hidden belief into ``state`` (3,), ``difficulty`` (D,) and ``bias`` (B,)
        marginals."""
        r = np.asarray(belief, dtype=np.float64).reshape(
            self.n_classes_difficulty, self.n_classes_bias, N_HIDDEN)
        return {"state": r.sum(axis=(0, 1)), "difficulty": r.sum(axis=(1, 2)),
                "bias": r.sum(axis=(0, 2))}

    def class_model(self, d: int, b: int) -> TrimModel:
        """The plain TrimModel of class ``(d, b)``."""
        m = self.base
        return TrimModel.from_parameters(
            p_w=float(self.p_w[d]), p_s=float(self.p_s[d]), hazard=m.hazard,
            obs_matrix=self.obs_matrices[b], token_probs=m.token_probs,
            strong_tokens=m.strong_tokens, token_edges=m.token_edges,
            score_edges=m.score_edges, min_edges=m.min_edges if m.uses_min else None,
            max_steps=m.max_steps)

    def _base_arrays(self) -> tuple[NDArray[np.float64], ...]:
        if self._cache is not None:
            return self._cache
        m = self.base
        H, X, n_obs = m.horizon, m.n_observed, m.n_observations
        S = self.n_hidden
        T = np.zeros((H, N_ACTIONS, X, S, X, S))
        Z = np.zeros((N_ACTIONS, X, S, n_obs))
        succ = np.zeros((H, N_ACTIONS, X, S))
        cost = np.zeros((H, N_ACTIONS, X, S))
        for d in range(self.n_classes_difficulty):
            for b in range(self.n_classes_bias):
                a = self.class_model(d, b).arrays(0.0)
                a1 = self.class_model(d, b).arrays(1.0)
                lo = self.hidden_index(d, b, 0)
                sl = slice(lo, lo + N_HIDDEN)
                T[:, :, :, sl, :, sl] = a["T"]
                Z[:, :, sl, :] = a["Z"]
                succ[:, :, :, sl] = a["R"]
                cost[:, :, :, sl] = a["R"] - a1["R"]
        for arr in (T, Z, succ, cost):
            arr.flags.writeable = False
        self._cache = (T, Z, succ, cost)
        return self._cache

    # -- construction from a scenario (the "structure known" model) --------------------------
    @classmethod
    def from_scenario(cls, scenario: Any, *, n_difficulty: int = 3, n_bias: int = 3,
                      n_score_bins: int = 10, n_token_bins: int = 4,
                      n_mc: int = 200_000, seed: int = 0) -> LatentTrimModel:
        """The latent-class model a scenario implies, by quantising its problem-level spread.

        Difficulty: the scenario draws ``p_w = Q_w(Phi(g_w))``, ``p_s = Q_s(Phi(g_s))`` with
        ``corr(g_w, g_s) = difficulty_correlation``; class ``d`` is the ``d``-th
        equal-probability interval of ``g_w`` and ``p_w(d), p_s(d)`` are the conditional
        means (Monte Carlo with ``n_mc`` draws, fixed ``seed``).  Bias: class ``b`` is the
        ``b``-th equal-probability interval of the logit bias ``N(0, sd^2)`` and its shift
        the conditional mean ``sd (phi(l) - phi(u)) / (Phi(u) - Phi(l))``.  Without spread
        (or bias) the corresponding ``D`` (``B``) is 1.  Within-trace score correlation is
        not modelled (as in TrimModel).
        """
        from scipy import stats
        from scipy.special import ndtri

        base = TrimModel.from_scenario(scenario, n_score_bins=n_score_bins,
                                       n_token_bins=n_token_bins)
        no_spread = scenario.p_w_concentration is None and scenario.p_s_concentration is None
        D = 1 if no_spread else int(n_difficulty)
        if D == 1:
            pw, ps = [base.p_w], [base.p_s]
        else:
            rng = np.random.default_rng(seed)
            g = rng.standard_normal((2, n_mc))
            r = scenario.difficulty_correlation
            g[1] = r * g[0] + math.sqrt(max(0.0, 1 - r * r)) * g[1]
            u = stats.norm.cdf(g)

            def acc(mean, conc, uu):
                if conc is None:
                    return np.full(uu.shape, mean)
                return stats.beta.ppf(uu, mean * conc, (1 - mean) * conc)

            aw = acc(scenario.p_w_mean, scenario.p_w_concentration, u[0])
            as_ = acc(scenario.p_s_mean, scenario.p_s_concentration, u[1])
            cls_of = np.minimum((u[0] * D).astype(int), D - 1)
            pw = [float(aw[cls_of == d].mean()) for d in range(D)]
            ps = [float(as_[cls_of == d].mean()) for d in range(D)]
        sd = float(scenario.prm_bias_sd)
        B = 1 if sd == 0 else int(n_bias)
        if B == 1:
            obs = base.obs_matrix[None]
        else:
            q = np.arange(B + 1) / B
            z = ndtri(q)
            pdf = stats.norm.pdf(z)
            shifts = sd * (pdf[:-1] - pdf[1:]) / np.diff(q)
            obs = np.stack([shifted_beta_obs_matrix(scenario.score_beta, s, base.score_edges)
                            for s in shifts])
        return cls(base, p_w=pw, p_s=ps, obs_matrices=obs)

    # -- persistence (PolicyBank.save calls these; load with load_latent_bank) -------------
    def _to_arrays(self) -> dict[str, NDArray]:
        out = self.base._to_arrays()
        out.update(latent_p_w=np.asarray(self.p_w), latent_p_s=np.asarray(self.p_s),
                   latent_difficulty_prior=np.asarray(self.difficulty_prior),
                   latent_obs_matrices=np.asarray(self.obs_matrices),
                   latent_bias_prior=np.asarray(self.bias_prior))
        return out

    def _to_meta(self) -> dict[str, Any]:
        return {**self.base._to_meta(), "latent": True,
                "n_difficulty": self.n_classes_difficulty, "n_bias": self.n_classes_bias}

    @classmethod
    def _from_saved(cls, meta: dict[str, Any], arrays: Any) -> LatentTrimModel:
        base = TrimModel._from_saved(meta, arrays)
        return cls(base, p_w=arrays["latent_p_w"], p_s=arrays["latent_p_s"],
                   difficulty_prior=arrays["latent_difficulty_prior"],
                   obs_matrices=arrays["latent_obs_matrices"],
                   bias_prior=arrays["latent_bias_prior"])

    def __repr__(self) -> str:
        return (f"LatentTrimModel(D={self.n_classes_difficulty}, B={self.n_classes_bias}, "
                f"p_w={np.round(self.p_w, 4).tolist()}, p_s={np.round(self.p_s, 4).tolist()}, "
                f"n_hidden={self.n_hidden}, base={self.base!r})")


_DELEGATED = frozenset({
    "hazard", "token_edges", "score_edges", "min_edges", "token_probs", "strong_tokens",
    "uses_min", "max_steps", "horizon", "n_observed", "n_token_bins", "start", "terminal",
    "token_bin", "observation_index", "observed_index", "n_score_bins", "n_min_bins",
    "n_observations", "n_actions",
})


def latent_belief_points(model: LatentTrimModel) -> NDArray[np.float64]:
    """Extra belief points for the point-based solver: the class posteriors of a trace are
    mixtures over classes, so add, for every correctness state ``s``, the class prior and
    the uniform class distribution (the corners -- one class, one state -- are always in
    the solver's belief sets).  A denser class grid (tried: all pairwise mixtures at
    resolution 4, 357 points) raised the value at b0 by < 1e-3 at 100x the solve time."""
    C = model.n_classes
    if C == 1:
        return np.zeros((0, model.n_hidden))
    prior = np.outer(model.difficulty_prior, model.bias_prior).ravel()
    pts = []
    for dist in (prior, np.full(C, 1.0 / C)):
        for s in range(N_HIDDEN):
            b = np.zeros(model.n_hidden)
            b[s::N_HIDDEN] = dist
            pts.append(b)
    return np.asarray(pts)


