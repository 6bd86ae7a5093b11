"""TRIM-POMDP+: the TRIM routing POMDP with latent episode-level classes.

The paper's POMDP (:class:`~trim_pomdp.trim.TrimModel`) uses one cheap accuracy ``p_w``,
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

Fitting (:class:`LatentFitter`): from labelled cheap traces (and strong traces of the same
problems, paired by ``Trace.problem``) an EM algorithm fits

* the difficulty mixture: per problem the counts ``(k_w, m_w)`` of correct/wrong cheap
  drafts after a correct prefix and ``(k_s, m_s)`` for the strong trace give the class
  likelihood ``p_w(d)^k_w (1-p_w(d))^m_w p_s(d)^k_s (1-p_s(d))^m_s``;
* the PRM-bias mixture: scores of labelled steps ``y ~ logit^-1(logit(Beta(a_s, b_s)) +
  beta_b)``, i.e. ``logit(y) - beta_b`` is the logit of a Beta(a_s, b_s) variable;

the two mixtures are independent a priori and their likelihoods factor, so each is fitted
by its own EM (closed-form M-step for ``p_w, p_s``; scipy BFGS for the Beta parameters
and shifts).  ``D`` and ``B`` are chosen by BIC.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp.errors import ModelValidationError, NotFittedError
from trim_pomdp.trim import N_ACTIONS, N_HIDDEN, BudgetArrays, TrimModel

__all__ = [
    "LatentTrimModel",
    "LatentFitter",
    "shifted_beta_obs_matrix",
    "solve_latent_grid",
    "load_latent_bank",
    "fit_latent_model",
    "pomdp_plus_family",
    "pomdp_plus_exact_family",
    "pomdp_mean_exact_family",
]


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


def load_latent_bank(path: Any):
    """Load a :class:`~trim_pomdp.trim.PolicyBank` of a :class:`LatentTrimModel` written by
    ``bank.save(path)``; the same as :meth:`PolicyBank.load <trim_pomdp.trim.PolicyBank.load>`
    (which reads either kind), but refusing a bank of a plain ``TrimModel``.

    Raises
    ------
    PolicyFormatError
        Not a PolicyBank file, not a latent one, or malformed arrays.
    """
    from trim_pomdp.errors import PolicyFormatError
    from trim_pomdp.trim import FORMAT_VERSION, PolicyBank

    bank = PolicyBank.load(path)
    if not isinstance(bank.model, LatentTrimModel):
        raise PolicyFormatError(f"{PolicyBank._paths(path)[1]}: not a latent-model PolicyBank "
                                f"of format_version {FORMAT_VERSION}")
    return bank


def solve_latent_grid(model: LatentTrimModel, lambdas: ArrayLike | None = None, *,
                      n_samples: int = 128, n_refine: int = 0, extra_points: bool = True,
                      **solver_opts: Any):
    """Solve the latent model for every lambda (C++ ``solve_finite_many``) and return a
    :class:`~trim_pomdp.trim.PolicyBank` (the Router and the batch policy of
    :mod:`trim_pomdp.router` run it unchanged: their kernels are general in the number of
    hidden states).

    With one class (``D = B = 1``) the engine's defaults are used, so the result is exactly
    ``solve_grid`` on the base TrimModel.  With more classes the belief simplex has ``3 D B``
    dimensions and the engine's simplex grid is off (``S > 4``), so the belief sets come from
    ``n_samples`` forward trajectories (default 128; measured on D = B = 3: 128 samples
    without a refinement pass gave a higher value at b0 than 16 or 64 samples with one, in
    less time) plus the class-mixture points of :func:`latent_belief_points`
    (``extra_points``).  ``solver_opts`` go to ``solve_finite_many``."""
    from trim_pomdp.trim import solve_grid

    opts = dict(solver_opts)
    if model.n_classes > 1:
        opts.setdefault("n_samples", n_samples)
        opts.setdefault("n_refine", n_refine)
        if extra_points and "belief_points" not in opts:
            opts["belief_points"] = latent_belief_points(model)
    return solve_grid(model, lambdas, **opts)


# ============================================================================ EM fit
@dataclass(frozen=True)
class _DifficultyData:
    k_w: NDArray[np.float64]
    m_w: NDArray[np.float64]
    k_s: NDArray[np.float64]
    m_s: NDArray[np.float64]


def _difficulty_counts(cheap: Sequence[Any], strong: Sequence[Any] | None) -> _DifficultyData:
    """Per problem: correct / wrong steps after a correct prefix (S0 / S2 labels)."""
    from trim_pomdp.traces import hidden_state_labels

    def counts(tr):
        st = hidden_state_labels(tr)
        return float(np.sum(st == 0)), float(np.sum(st == 2))

    # one row per cheap trace; the j-th strong trace of a problem pairs with its j-th cheap
    # trace (a problem may appear several times, e.g. solved by several generators)
    rows = np.zeros((len(cheap), 4))
    slots: dict[str, list[int]] = {}
    for i, tr in enumerate(cheap):
        rows[i, :2] = counts(tr)
        slots.setdefault(tr.problem if tr.problem is not None else f"#{i}", []).append(i)
    if strong is not None:
        used: dict[str, int] = {}
        for tr in strong:
            free = slots.get(tr.problem, [])
            j = used.get(tr.problem, 0)
            if j < len(free):
                rows[free[j], 2:] = counts(tr)
                used[tr.problem] = j + 1
    arr = rows
    return _DifficultyData(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3])


def _fit_difficulty(data: _DifficultyData, D: int, *, n_iter: int, tol: float, seed: int):
    """EM for a D-class mixture of paired (cheap, strong) Bernoulli-run likelihoods.

    Returns ``(pi, p_w, p_s, loglik, resp)``.  The M-step is closed form:
    ``p_w(d) = sum_i r_id k_w,i / sum_i r_id (k_w,i + m_w,i)`` (same for ``p_s``)."""
    n = data.k_w.shape[0]
    eps = 1e-9
    # start: classes by quantiles of the per-problem cheap accuracy
    acc = (data.k_w + 1) / (data.k_w + data.m_w + 2)
    rank = np.argsort(np.argsort(acc + 1e-9 * np.random.default_rng(seed).random(n)))
    resp = np.zeros((n, D))
    resp[np.arange(n), np.minimum(rank * D // n, D - 1)] = 1.0
    resp = 0.9 * resp + 0.1 / D
    ll_old = -np.inf
    for _ in range(n_iter):
        w = resp.sum(axis=0) + eps
        pi = w / w.sum()
        p_w = (resp.T @ data.k_w + 0.5) / (resp.T @ (data.k_w + data.m_w) + 1.0)
        p_s = (resp.T @ data.k_s + 0.5) / (resp.T @ (data.k_s + data.m_s) + 1.0)
        logl = (data.k_w[:, None] * np.log(p_w + eps) + data.m_w[:, None] * np.log1p(-p_w + eps)
                + data.k_s[:, None] * np.log(p_s + eps) + data.m_s[:, None] * np.log1p(-p_s + eps)
                + np.log(pi))
        mx = logl.max(axis=1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(logl - mx).sum(axis=1))
        resp = np.exp(logl - lse[:, None])
        ll = float(lse.sum())
        if ll - ll_old < tol * max(1.0, abs(ll)):
            break
        ll_old = ll
    order = np.argsort(-p_w)  # class 0 = easiest
    return pi[order], p_w[order], p_s[order], ll, resp[:, order]


def _score_data(traces: Sequence[Any]):
    """Labelled steps: per trace index, state and clipped logit score."""
    from scipy.special import logit

    from trim_pomdp.traces import hidden_state_labels

    tid, st, y = [], [], []
    for i, tr in enumerate(traces):
        s = hidden_state_labels(tr)
        for j, step in enumerate(tr.steps):
            if s[j] >= 0 and step.prm_score is not None:
                tid.append(i)
                st.append(int(s[j]))
                y.append(float(step.prm_score))
    yy = np.clip(np.asarray(y), 1e-6, 1 - 1e-6)
    return np.asarray(tid, dtype=np.int64), np.asarray(st, dtype=np.int64), logit(yy), len(traces)


def _shifted_beta_logpdf(z: NDArray, a: float, b: float, shift: float) -> NDArray:
    """log density of ``z = logit(y)`` when ``y = expit(logit(q) + shift)``,
    ``q ~ Beta(a, b)``: ``log Beta-density of q`` + ``log q (1-q)`` (Jacobian dq/dz), with
    ``q = expit(z - shift)``: ``a log q + b log(1-q) - log B(a, b)``."""
    from scipy.special import betaln, log_expit

    w = z - shift
    return a * log_expit(w) + b * log_expit(-w) - betaln(a, b)


def _bias_negll(th, *, z, st, wstep, ns):
    """Weighted negative log-likelihood of the scores (per step) and its gradient in
    ``th = (log a_0, log b_0, log a_1, log b_1, log a_2, log b_2, beta_0..beta_{B-1})``;
    ``wstep[n, k]`` is the E-step weight of class ``k`` for step ``n``'s trace."""
    from scipy.special import betaln, digamma, log_expit

    a_s = np.exp(th[0:6:2])
    b_s = np.exp(th[1:6:2])
    a, b = a_s[st], b_s[st]
    w = z[:, None] - th[None, 6:]
    la, lb = log_expit(w), log_expit(-w)
    f = -float(np.sum(wstep * (a[:, None] * la + b[:, None] * lb)))
    f += float(ns @ betaln(a_s, b_s))  # every step's class weights sum to 1
    g = np.empty_like(th)
    q = np.exp(la)
    # d/d shift of a log q + b log(1-q) with q = expit(z - shift): -(a (1-q) - b q)
    g[6:] = np.sum(wstep * (a[:, None] * (1 - q) - b[:, None] * q), axis=0)
    sla = np.bincount(st, weights=np.sum(wstep * la, axis=1), minlength=3)
    slb = np.bincount(st, weights=np.sum(wstep * lb, axis=1), minlength=3)
    dab = digamma(a_s + b_s)
    # chain rule through the log parametrisation: d/d log a = a d/da
    g[0:6:2] = (-sla + ns * (digamma(a_s) - dab)) * a_s
    g[1:6:2] = (-slb + ns * (digamma(b_s) - dab)) * b_s
    scale = max(1.0, float(z.shape[0]))
    return f / scale, g / scale


def _fit_bias(tid, st, z, n_traces, B: int, *, n_iter: int, tol: float):
    """EM for B PRM-bias classes: shared Beta(a_s, b_s) per state, logit shift beta_b per
    class, returned sorted by shift (harshest PRM first).  A common shift is not identified
    separately from the Beta parameters (they absorb it); EM settles on one solution.
    M-step: scipy BFGS with the analytic gradient of the weighted log-likelihood in
    ``(log a_s, log b_s, beta_b)``."""
    from scipy.optimize import minimize
    from scipy.special import expit

    # start: per-state method of moments on q = expit(z); shifts spread over +-1 sd of the
    # per-trace mean logit residual
    params0 = []
    for s in range(3):
        q = expit(z[st == s]) if np.any(st == s) else np.array([0.5])
        m, v = float(np.mean(q)), float(np.var(q)) + 1e-6
        c = max(m * (1 - m) / v - 1, 0.5)
        params0 += [math.log(max(m * c, 0.05)), math.log(max((1 - m) * c, 0.05))]
    if B == 1:
        shifts0 = np.zeros(1)
    else:
        mean_s = np.array([np.mean(z[st == s]) if np.any(st == s) else 0.0 for s in range(3)])
        resid = np.bincount(tid, weights=z - mean_s[st], minlength=n_traces)
        cnt = np.bincount(tid, minlength=n_traces).astype(np.float64)
        r = resid[cnt > 0] / cnt[cnt > 0]
        shifts0 = np.quantile(r, (np.arange(B) + 0.5) / B)
    theta = np.concatenate([params0, shifts0])
    pi = np.full(B, 1.0 / B)
    resp = np.full((n_traces, B), 1.0 / B)
    has = np.bincount(tid, minlength=n_traces) > 0
    ll_old = -np.inf

    def step_loglik(th):
        a = np.exp(th[0:6:2])[st]
        b = np.exp(th[1:6:2])[st]
        out = np.empty((z.shape[0], B))
        for k in range(B):
            out[:, k] = _shifted_beta_logpdf(z, a, b, th[6 + k])
        return out

    for it in range(n_iter):
        # E-step
        lp = step_loglik(theta)
        per_trace = np.stack([np.bincount(tid, weights=lp[:, k], minlength=n_traces)
                              for k in range(B)], axis=1)
        logl = per_trace + np.log(pi)
        mx = logl.max(axis=1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(logl - mx).sum(axis=1))
        resp = np.exp(logl - lse[:, None])
        ll = float(lse[has].sum() + 0.0)
        if it > 0 and ll - ll_old < tol * max(1.0, abs(ll)):
            break
        ll_old = ll
        pi = resp[has].sum(axis=0) / has.sum()

        ns = np.bincount(st, minlength=3).astype(np.float64)
        negll = functools.partial(_bias_negll, z=z, st=st, wstep=resp[tid], ns=ns)
        # BFGS, not L-BFGS-B: with 6 + B parameters L-BFGS-B's Fortran core spends its
        # time in multi-threaded BLAS calls (10 ms per iteration on a busy 2-core machine)
        res = minimize(negll, theta, jac=True, method="BFGS",
                       options={"maxiter": 30, "gtol": 1e-7})
        # a generalised EM only needs the M-step to improve, so the iteration cap is fine
        msg = str(res.message).lower()
        if not res.success and "maximum number of iterations" not in msg \
                and "precision loss" not in msg:
            warnings.warn(f"bias M-step: {res.message}", RuntimeWarning, stacklevel=2)
        theta = res.x
    order = np.argsort(theta[6:])
    beta_params = [(float(np.exp(theta[2 * s])), float(np.exp(theta[2 * s + 1])))
                   for s in range(3)]
    return pi[order], beta_params, theta[6:][order], ll, resp[:, order]


class LatentFitter:
    """EM fit of the latent-class parameters from labelled traces (module docstring).

    Parameters
    ----------
    n_difficulty, n_bias : int or sequence of int
        Candidate numbers of classes; the one with the lowest BIC is kept.
    max_iter : int
        EM iterations per candidate.
    tol : float
        Relative log-likelihood tolerance of EM.
    seed : int
        Seed of the (tie-breaking) initialisation.

    Attributes
    ----------
    n_difficulty_, n_bias_ : int
        Chosen ``D`` and ``B``.
    difficulty_prior_, p_w_, p_s_ : ndarray (D,)
        Fitted difficulty classes, easiest first.
    bias_prior_, bias_shift_ : ndarray (B,)
        Fitted bias classes (logit shifts, increasing).
    score_beta_ : list of 3 (a, b)
        Per-state Beta parameters of the unshifted score.
    bic_difficulty_, bic_bias_ : dict[int, float]
        BIC of every candidate.
    loglik_difficulty_, loglik_bias_ : dict[int, float]
    """

    def __init__(self, *, n_difficulty: int | Sequence[int] = (1, 2, 3),
                 n_bias: int | Sequence[int] = (1, 2, 3), max_iter: int = 100,
                 tol: float = 1e-6, seed: int = 0) -> None:
        self.n_difficulty = n_difficulty
        self.n_bias = n_bias
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed

    @staticmethod
    def _cands(name: str, v: int | Sequence[int]) -> list[int]:
        c = [int(v)] if isinstance(v, (int, np.integer)) else [int(x) for x in v]
        if not c or any(x < 1 for x in c):
            raise ValueError(
                f"{name} must be a positive int or a non-empty list of them; got {v!r}")
        return c

    def fit(self, cheap_traces: Sequence[Any],
            strong_traces: Sequence[Any] | None = None) -> LatentFitter:
        """Fit on labelled cheap traces (and strong traces of the same problems, matched by
        ``Trace.problem``, for ``p_s(d)``; without them ``p_s_`` is NaN and :meth:`build`
        refuses ``D > 1``).  Traces without PRM scores fit the difficulty classes only
        (``B = 1``)."""
        cheap_traces = list(cheap_traces)
        if not cheap_traces:
            raise ValueError("cheap_traces is empty")
        data = _difficulty_counts(cheap_traces, strong_traces)
        n = data.k_w.shape[0]
        self.bic_difficulty_, self.loglik_difficulty_ = {}, {}
        best = None
        for D in self._cands("n_difficulty", self.n_difficulty):
            pi, pw, ps, ll, _ = _fit_difficulty(data, D, n_iter=self.max_iter, tol=self.tol,
                                                seed=self.seed)
            k = 3 * D - 1
            bic = -2 * ll + k * math.log(n)
            self.bic_difficulty_[D], self.loglik_difficulty_[D] = bic, ll
            if best is None or bic < best[0]:
                best = (bic, D, pi, pw, ps)
        _, self.n_difficulty_, self.difficulty_prior_, self.p_w_, self.p_s_ = best
        self.has_strong_ = strong_traces is not None and bool(np.any(data.k_s + data.m_s > 0))
        if not self.has_strong_:
            self.p_s_ = np.full_like(self.p_w_, np.nan)  # not identified without strong runs
        tid, st, z, nt = _score_data(cheap_traces)
        if z.size == 0:
            # no PRM scores (e.g. ProcessBench labels alone): no bias classes to fit
            self.n_bias_, self.bias_prior_ = 1, np.ones(1)
            self.bias_shift_, self.score_beta_ = np.zeros(1), None
            self.bic_bias_, self.loglik_bias_ = {}, {}
            return self
        n_steps_traces = int(np.sum(np.bincount(tid, minlength=nt) > 0))
        self.bic_bias_, self.loglik_bias_ = {}, {}
        best = None
        for B in self._cands("n_bias", self.n_bias):
            pi, sb, sh, ll, _ = _fit_bias(tid, st, z, nt, B, n_iter=self.max_iter, tol=self.tol)
            k = 6 + B + (B - 1)
            bic = -2 * ll + k * math.log(n_steps_traces)
            self.bic_bias_[B], self.loglik_bias_[B] = bic, ll
            if best is None or bic < best[0]:
                best = (bic, B, pi, sb, sh)
        _, self.n_bias_, self.bias_prior_, self.score_beta_, self.bias_shift_ = best
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "p_w_"):
            raise NotFittedError("This LatentFitter is not fitted yet; call fit(...) first")

    def obs_matrices(self, score_edges: ArrayLike) -> NDArray[np.float64]:
        """``(B, 3, O)`` binned shifted-Beta observation matrices."""
        self._check_fitted()
        if self.score_beta_ is None:
            raise NotFittedError("the bias classes were not fitted: the traces had no PRM scores")
        return np.stack([shifted_beta_obs_matrix(self.score_beta_, s, score_edges)
                         for s in self.bias_shift_])

    def build(self, base: TrimModel) -> LatentTrimModel:
        """The LatentTrimModel on ``base``'s hazard/token/observation binning.  With ``D = 1``
        the base's ``p_w, p_s`` are kept and with ``B = 1`` its observation matrix, so a fit
        that finds no classes gives back exactly the mean-parameter model."""
        self._check_fitted()
        if base.uses_min:
            raise ModelValidationError("LatentFitter.build supports score-only observations "
                                       "(base.uses_min must be False)")
        D, B = self.n_difficulty_, self.n_bias_
        kw: dict[str, Any] = {}
        if D > 1 and not self.has_strong_:
            raise ModelValidationError("p_s per difficulty class needs strong traces of the "
                                       "same problems (fit(cheap, strong))")
        if D > 1:
            kw.update(p_w=self.p_w_, p_s=self.p_s_, difficulty_prior=self.difficulty_prior_)
        if B > 1:
            kw.update(obs_matrices=self.obs_matrices(base.score_edges),
                      bias_prior=self.bias_prior_)
        return LatentTrimModel(base, **kw)

    def summary(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "D": int(self.n_difficulty_), "B": int(self.n_bias_),
            "difficulty_prior": self.difficulty_prior_.tolist(), "p_w": self.p_w_.tolist(),
            "p_s": self.p_s_.tolist(), "bias_prior": self.bias_prior_.tolist(),
            "bias_shift": self.bias_shift_.tolist(), "score_beta": self.score_beta_,
            "loglik_difficulty": {str(k): v for k, v in self.loglik_difficulty_.items()},
            "bic_difficulty": {str(k): v for k, v in self.bic_difficulty_.items()},
            "bic_bias": {str(k): v for k, v in self.bic_bias_.items()},
        }


# ============================================================================ families
def _n_lambdas(options: Any) -> int:
    return getattr(options, "n_params", None) or 32


def fit_latent_model(scenario: Any, *, seed: int = 1, n_fit_problems: int = 4000,
                     max_classes: int = 3, n_lambdas: int = 32):
    """Fit TRIM-POMDP+ on traces simulated from ``scenario`` (seeds derived from ``seed``).

    The base TrimModel is built exactly as ``trim_pomdp.trim.fit_from_scenario`` builds the
    mean-parameter model (hazard, tokens, KDE observation model, ``FitConfig(seed=seed)``);
    :class:`LatentFitter` then fits ``D, B <= max_classes`` (BIC) on paired cheap/strong
    traces of ``n_fit_problems`` other problems (seed ``seed + 7``).

    Returns ``(model, fitter)``.
    """
    from trim_pomdp.simulator import simulate_traces
    from trim_pomdp.trim import FitConfig, fit_from_scenario

    cfg = FitConfig(seed=seed, n_lambdas=n_lambdas, n_fit_problems=n_fit_problems)
    base, _, _ = fit_from_scenario(scenario, cfg)
    cheap = simulate_traces(scenario, model="cheap", n_problems=n_fit_problems, seed=seed + 7)
    strong = simulate_traces(scenario, model="strong", n_problems=n_fit_problems, seed=seed + 7)
    cands = tuple(range(1, max_classes + 1))
    fitter = LatentFitter(n_difficulty=cands, n_bias=cands).fit(cheap, strong)
    return fitter.build(base), fitter


def pomdp_plus_family(options: Any = None, *, n_fit_problems: int = 4000,
                      max_classes: int = 3):
    """Factory of the ``"trim-pomdp+"`` family for :func:`trim_pomdp.evaluate.evaluate`
    (``evaluate(..., ["trim_pomdp.latent:pomdp_plus_family"])``).

    Like ``trim-pomdp`` it fits on traces simulated from ``options.scenario`` with seed
    ``options.seed + 1`` (never the evaluation world), through :func:`fit_latent_model`,
    and solves the same default lambda grid with :func:`solve_latent_grid`.
    """
    from trim_pomdp.trim import default_lambdas

    scenario = getattr(options, "scenario", None)
    if scenario is None:
        raise ValueError("the trim-pomdp+ family needs FamilyOptions(scenario=...)")
    model, _ = fit_latent_model(scenario, seed=int(getattr(options, "seed", 0)) + 1,
                                n_fit_problems=n_fit_problems, max_classes=max_classes)
    bank = solve_latent_grid(model, default_lambdas(model.base, _n_lambdas(options)))
    return bank.family("trim-pomdp+")


def pomdp_plus_exact_family(options: Any = None, *, n_difficulty: int = 3, n_bias: int = 3):
    """``"trim-pomdp+ (exact)"``: :meth:`LatentTrimModel.from_scenario` (the scenario's own
    spread quantised into classes; no fitting), for ablations."""
    from trim_pomdp.trim import default_lambdas

    scenario = getattr(options, "scenario", None)
    if scenario is None:
        raise ValueError("this family needs FamilyOptions(scenario=...)")
    model = LatentTrimModel.from_scenario(scenario, n_difficulty=n_difficulty, n_bias=n_bias)
    bank = solve_latent_grid(model, default_lambdas(model.base, _n_lambdas(options)))
    return bank.family("trim-pomdp+exact")


def pomdp_mean_exact_family(options: Any = None):
    """``"trim-pomdp (exact)"``: :meth:`TrimModel.from_scenario` (the scenario's means, no
    fitting) -- the ``D = B = 1`` counterpart of :func:`pomdp_plus_exact_family`."""
    from trim_pomdp.trim import default_lambdas, solve_grid

    scenario = getattr(options, "scenario", None)
    if scenario is None:
        raise ValueError("this family needs FamilyOptions(scenario=...)")
    model = TrimModel.from_scenario(scenario)
    return solve_grid(model, default_lambdas(model, _n_lambdas(options))).family(
        "trim-pomdp-exact")
