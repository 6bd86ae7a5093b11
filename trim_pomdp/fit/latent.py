"""EM fit of TRIM-POMDP+'s latent episode-level classes
(:class:`~trim_pomdp.routing.latent_model.LatentTrimModel`).

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
from trim_pomdp.routing.latent_model import LatentTrimModel, shifted_beta_obs_matrix
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.traces.table import hidden_state_labels

__all__ = ["LatentFitter"]


@dataclass(frozen=True)
class _DifficultyData:
    k_w: NDArray[np.float64]
    m_w: NDArray[np.float64]
    k_s: NDArray[np.float64]
    m_s: NDArray[np.float64]


def _difficulty_counts(cheap: Sequence[Any], strong: Sequence[Any] | None) -> _DifficultyData:
    """Per problem: correct / wrong steps after a correct prefix (S0 / S2 labels)."""
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


