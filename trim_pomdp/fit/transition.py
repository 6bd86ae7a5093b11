"""TRIM's transition model fitted from labelled traces.

The model (Kapoor et al., 2026, hidden states S0/S1/S2 as in :mod:`trim_pomdp.steps`):

* a cheap draft written after a correct prefix is correct with probability ``p_w``;
  a strong step written after a correct prefix is correct with probability ``p_s``;
* after the first wrong step the trace is irrecoverable (S1) whatever comes next;
* the step at index t (1-based) is the final one with probability ``h(t)`` (the hazard),
  h(30) = 1 because traces are capped at ``MAX_STEPS = 30`` steps;
* step lengths in tokens follow per-model (log-normal) distributions.

Estimators
----------
``p`` (either model) is the binomial proportion over *trials*: every step whose prefix
(steps 1..t-1) is known to be correct and whose own label is known.  Steps after the first
wrong one are not trials, so data labelled only up to the first error (ProcessBench) count
correctly, and so do fully labelled data.  The interval is Wilson's score interval at
level ``ci``:

    centre = (k + z^2/2) / (n + z^2),
    half   = z / (n + z^2) * sqrt(k (n - k) / n + z^2 / 4).

The hazard uses every cheap trace: with ``n_t`` the number of traces reaching step t and
``d_t`` those ending there (traces longer than ``max_steps`` are counted as ending at
``max_steps``, and reported in ``n_truncated_``), the hazard is the raw ratio shrunk towards
a smooth curve with ``kappa = hazard_smoothing`` pseudo-traces,

    h(t) = (d_t + kappa m(t)) / (n_t + kappa),

so steps with many traces keep their own (possibly sharp: e.g. no solution ends at step 1)
estimate and sparse late steps borrow from their neighbours.  ``m(t)`` is a local-linear
Gaussian-kernel fit (bandwidth ``hazard_bandwidth`` steps) of the raw ratios ``d_u / n_u``
with weights ``K(u - t) n_u`` -- no bias at the ends for a linear hazard -- carried forward
where no data are in reach.  ``kappa = 0`` gives the raw ratio (1 where no trace reaches t).
Always h(max_steps) = 1.

Tokens: per model, the log-normal fit of step lengths, per step index with shrinkage to the
pooled fit (``token_shrinkage`` pseudo-steps).  The expected number of strong tokens for a
step the cheap model drafted with ``c`` tokens is ``strong_cheap_ratio_ * c`` where
``strong_cheap_ratio_`` = mean strong step tokens / mean cheap step tokens (1.0 when no
strong token counts are available).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp import _validate as _v
from trim_pomdp._io import Artefact, _need
from trim_pomdp.errors import InsufficientDataError, ModelValidationError, NotFittedError
from trim_pomdp.steps import MAX_STEPS
from trim_pomdp.traces.records import Trace
from trim_pomdp.traces.stats import (
    BinomialEstimate,
    step_accuracy,
    wilson_interval,
)
from trim_pomdp.traces.table import TraceTable, as_table

__all__ = [
    "BinomialEstimate",
    "TokenSummary",
    "TransitionModel",
    "step_accuracy",
    "wilson_interval",
    "kernel_hazard",
]

FORMAT_VERSION = 1
#: the file format of :meth:`TransitionModel.save` (the path as given: no ``.npz`` is added)
_FORMAT = Artefact(kind="TransitionModel", version=FORMAT_VERSION, what="model .npz file",
                   suffix=False)


def _local_linear(ended: NDArray[np.int64], at_risk: NDArray[np.int64],
                  bandwidth: float) -> NDArray[np.float64]:
    """Local-linear Gaussian-kernel fit of the raw hazards ``d_u / n_u`` (weights
    ``K(u - t) n_u``), evaluated at every t; carried forward beyond the kernel's reach."""
    H = ended.shape[0]
    t = np.arange(H, dtype=np.float64)
    D = t[None, :] - t[:, None]  # D[t, u] = u - t
    K = np.exp(-0.5 * (D / bandwidth) ** 2)
    W = K * at_risk[None, :]
    S0, S1, S2 = W.sum(1), (W * D).sum(1), (W * D * D).sum(1)
    KD = K * ended[None, :]
    T0, T1 = KD.sum(1), (KD * D).sum(1)
    det = S0 * S2 - S1 * S1
    ok = S0 > 0
    m = np.empty(H)
    lin = ok & (det > 1e-9 * np.maximum(S0 * S2, 1e-300))
    m[lin] = (S2[lin] * T0[lin] - S1[lin] * T1[lin]) / det[lin]
    const = ok & ~lin  # a single support point: the local-constant ratio
    m[const] = T0[const] / S0[const]
    last = 1.0
    for i in range(H):
        if ok[i]:
            last = m[i]
        else:
            m[i] = last
    return np.clip(m, 0.0, 1.0)


def kernel_hazard(lengths: ArrayLike, max_steps: int = MAX_STEPS, smoothing: float = 20.0,
                  bandwidth: float = 2.0) -> tuple[NDArray[np.float64], NDArray[np.int64],
                                                   NDArray[np.int64]]:
    """Smoothed termination hazard from trace lengths (formula in the module docstring).

    Parameters
    ----------
    lengths : array-like of int
    max_steps : int
    smoothing : float
        Prior strength kappa in pseudo-traces (0 = raw ratios).
    bandwidth : float
        Kernel bandwidth (steps) of the local-linear prior mean.

    Returns
    -------
    hazard : (max_steps,) float64, hazard[t-1] = P(step t is final | step t reached)
    at_risk : (max_steps,) int64, traces reaching step t
    ended : (max_steps,) int64, traces ending at step t (lengths capped at max_steps)
    """
    lengths = np.minimum(np.asarray(lengths, dtype=np.int64), max_steps)
    if lengths.size == 0 or lengths.min() < 1:
        raise InsufficientDataError("hazard: need at least one trace with at least one step")
    if not (np.isfinite(smoothing) and smoothing >= 0):
        raise ValueError(f"hazard_smoothing must be a finite number >= 0; got {smoothing!r}")
    if not (np.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"hazard_bandwidth must be a finite number > 0; got {bandwidth!r}")
    ended = np.bincount(lengths - 1, minlength=max_steps)[:max_steps].astype(np.int64)
    at_risk = (ended[::-1].cumsum()[::-1]).astype(np.int64)
    if smoothing == 0:
        h = np.where(at_risk > 0, ended / np.maximum(at_risk, 1), 1.0)
    else:
        m = _local_linear(ended, at_risk, bandwidth)
        h = (ended + smoothing * m) / (at_risk + smoothing)
    h = np.clip(h.astype(np.float64), 0.0, 1.0)
    h[max_steps - 1] = 1.0
    return h, at_risk, ended


@dataclass(frozen=True)
class TokenSummary:
    """Step-length distribution of one model.

    ``log(tokens)`` ~ Normal(mu[t-1], sigma[t-1]) at step t, shrunk towards the pooled
    ``mu_all, sigma_all`` with ``shrinkage`` pseudo-steps:
    ``mu_t = (n_t m_t + k mu_all) / (n_t + k)`` (same for the variance).  ``mean[t-1] =
    exp(mu_t + sigma_t^2 / 2)`` is the log-normal mean; ``mean_all`` the empirical mean.
    ``values``/``value_counts`` hold the empirical distribution (distinct token counts).
    Steps with 0 tokens enter the log-normal fit as 1 token.
    """

    mu: NDArray[np.float64]
    sigma: NDArray[np.float64]
    mean: NDArray[np.float64]
    count: NDArray[np.int64]
    mu_all: float
    sigma_all: float
    mean_all: float
    n: int
    values: NDArray[np.int64]
    value_counts: NDArray[np.int64]

    @classmethod
    def from_tokens(cls, tokens: NDArray[np.int64], step: NDArray[np.int32], max_steps: int,
                    shrinkage: float) -> TokenSummary:
        tokens = np.asarray(tokens, dtype=np.int64)
        n = int(tokens.size)
        logt = np.log(np.maximum(tokens, 1).astype(np.float64))
        mu_all = float(logt.mean())
        var_all = float(logt.var()) if n > 1 else 0.0
        idx = np.minimum(step, max_steps) - 1
        count = np.bincount(idx, minlength=max_steps)[:max_steps].astype(np.int64)
        s1 = np.bincount(idx, weights=logt, minlength=max_steps)[:max_steps]
        s2 = np.bincount(idx, weights=(logt - mu_all) ** 2, minlength=max_steps)[:max_steps]
        k = float(shrinkage)
        denom = count + k
        if k == 0:
            denom = np.maximum(count, 1).astype(np.float64)
        mu = np.where(count + k > 0, (s1 + k * mu_all) / np.where(denom > 0, denom, 1), mu_all)
        # variance about the pooled mean per step, then remove the step-mean offset
        m_t = np.where(count > 0, s1 / np.maximum(count, 1), mu_all)
        v_t = np.where(count > 0, s2 / np.maximum(count, 1) - (m_t - mu_all) ** 2, var_all)
        var = np.where(count + k > 0,
                       (count * np.maximum(v_t, 0.0) + k * var_all) / np.where(denom > 0, denom, 1),
                       var_all)
        sigma = np.sqrt(var)
        values, value_counts = np.unique(tokens, return_counts=True)
        return cls(mu=mu.astype(np.float64), sigma=sigma, mean=np.exp(mu + var / 2.0),
                   count=count, mu_all=mu_all, sigma_all=float(np.sqrt(var_all)),
                   mean_all=float(tokens.mean()), n=n, values=values.astype(np.int64),
                   value_counts=value_counts.astype(np.int64))

    def quantiles(self, q: ArrayLike) -> NDArray[np.float64]:
        """Empirical quantiles (inverse CDF, lower value at ties) of the step lengths."""
        q = np.asarray(q, dtype=np.float64)
        cdf = np.cumsum(self.value_counts) / self.n
        idx = np.searchsorted(cdf, q - 1e-12, side="left")
        return self.values[np.minimum(idx, self.values.size - 1)].astype(np.float64)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}_mu": self.mu, f"{prefix}_sigma": self.sigma, f"{prefix}_mean": self.mean,
            f"{prefix}_count": self.count, f"{prefix}_values": self.values,
            f"{prefix}_value_counts": self.value_counts,
            f"{prefix}_scalars": np.array([self.mu_all, self.sigma_all, self.mean_all, self.n],
                                          dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], prefix: str, max_steps: int,
                    name: str) -> TokenSummary:
        sc = _need(a, f"{prefix}_scalars", (4,), name)
        return cls(
            mu=_need(a, f"{prefix}_mu", (max_steps,), name).astype(np.float64),
            sigma=_need(a, f"{prefix}_sigma", (max_steps,), name).astype(np.float64),
            mean=_need(a, f"{prefix}_mean", (max_steps,), name).astype(np.float64),
            count=_need(a, f"{prefix}_count", (max_steps,), name, integer=True, lo=0),
            mu_all=float(sc[0]), sigma_all=float(sc[1]), mean_all=float(sc[2]), n=int(sc[3]),
            values=_need(a, f"{prefix}_values", None, name, integer=True, lo=0),
            value_counts=_need(a, f"{prefix}_value_counts", None, name, integer=True, lo=0),
        )


def token_bin(tokens: ArrayLike, edges: ArrayLike) -> NDArray[np.int64]:
    """Bin index of each token count for edges from :meth:`TransitionModel.token_bin_edges`:
    bin i holds ``edges[i] <= tokens < edges[i+1]``, with everything below ``edges[1]`` in
    bin 0 and everything at or above ``edges[-2]`` in the last bin."""
    edges = np.asarray(edges, dtype=np.float64)
    nb = edges.size - 1
    b = np.searchsorted(edges[1:-1], np.asarray(tokens, dtype=np.float64), side="right")
    return np.clip(b, 0, nb - 1).astype(np.int64)


def _number(meta: Any, key: str, where: str, error: type[Exception], **kw: Any) -> float:
    """A required (not nullable) JSON number of the metadata, as a float."""
    v = _v.json_number(meta, key, where, error, **kw)
    assert v is not None  # json_number returns None only for nullable fields
    return float(v)


# ----------------------------------------------------------------------------- the model


class TransitionModel:
    """TRIM transition model: p_w, p_s, termination hazard and token distributions.

    Parameters
    ----------
    max_steps : int, default 30
        Traces are capped at this many steps; ``hazard_[max_steps - 1] == 1``.
    ci : float, default 0.95
        Level of the Wilson intervals ``p_w_ci_`` / ``p_s_ci_``.
    hazard_smoothing : float, default 20.0
        Prior strength (pseudo-traces) pulling the hazard towards its smooth curve
        (0 = raw ratios).
    hazard_bandwidth : float, default 2.0
        Kernel bandwidth in steps of the smooth curve.
    p_s : float, optional
        The strong model's next-step accuracy when no strong traces are given (if given,
        it is used even when strong traces are passed; its interval is then (p_s, p_s)).
    p_w : float, optional
        The cheap model's next-step accuracy, when estimated elsewhere (e.g. by
        :class:`trim_pomdp.fit.outcome.OutcomeEM` from outcome-labelled traces); used instead of
        the step labels, interval (p_w, p_w).
    strong_cheap_ratio : float, optional
        Overrides the estimated ratio of strong to cheap step lengths.
    token_shrinkage : float, default 20.0
        Pseudo-steps pulling per-step token fits towards the pooled fit.

    Attributes
    ----------
    p_w_, p_s_ : float
    p_w_ci_, p_s_ci_ : (2,) float64
    n_w_, n_s_ : int      number of trials (steps with a known-correct prefix and a label)
    k_w_, k_s_ : int      correct steps among them
    hazard_ : (max_steps,) float64
    hazard_at_risk_, hazard_ended_ : (max_steps,) int64
    n_truncated_ : int    cheap traces longer than ``max_steps``
    cheap_tokens_, strong_tokens_ : TokenSummary or None
    strong_cheap_ratio_ : float
    n_cheap_traces_, n_strong_traces_ : int
    """

    def __init__(self, *, max_steps: int = MAX_STEPS, ci: float = 0.95,
                 hazard_smoothing: float = 20.0, hazard_bandwidth: float = 2.0,
                 p_s: float | None = None,
                 strong_cheap_ratio: float | None = None, token_shrinkage: float = 20.0,
                 p_w: float | None = None) -> None:
        self.max_steps = max_steps
        self.ci = ci
        self.hazard_smoothing = hazard_smoothing
        self.hazard_bandwidth = hazard_bandwidth
        self.p_s = p_s
        self.p_w = p_w
        self.strong_cheap_ratio = strong_cheap_ratio
        self.token_shrinkage = token_shrinkage

    # ------------------------------------------------------------------ fit
    def _check_params(self) -> None:
        if not isinstance(self.max_steps, (int, np.integer)) or self.max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer; got {self.max_steps!r}")
        if not (0.0 < self.ci < 1.0):
            raise ValueError(f"ci must be in (0, 1); got {self.ci!r}")
        if self.p_s is not None and not (0.0 <= self.p_s <= 1.0):
            raise ValueError(f"p_s must be in [0, 1]; got {self.p_s!r}")
        if self.p_w is not None and not (0.0 <= self.p_w <= 1.0):
            raise ValueError(f"p_w must be in [0, 1]; got {self.p_w!r}")
        if self.strong_cheap_ratio is not None and not (self.strong_cheap_ratio > 0):
            raise ValueError(f"strong_cheap_ratio must be > 0; got {self.strong_cheap_ratio!r}")
        if not (self.token_shrinkage >= 0):
            raise ValueError(f"token_shrinkage must be >= 0; got {self.token_shrinkage!r}")

    def fit(self, cheap_traces: Sequence[Trace] | TraceTable,
            strong_traces: Sequence[Trace] | TraceTable | None = None) -> TransitionModel:
        """Fit from labelled traces of the cheap model (and of the strong model).

        Steps marked ``extra["writer"] == "strong"`` inside the cheap traces (routed traces)
        count towards ``p_s`` and the strong token distribution.

        Raises
        ------
        InsufficientDataError
            No trial for p_w (or for p_s when ``p_s`` is not given); no traces.
        ValueError
            No strong traces and ``p_s`` not given.
        """
        self._check_params()
        cheap = as_table(cheap_traces)
        if cheap.n_traces == 0:
            raise InsufficientDataError("TransitionModel.fit: cheap_traces is empty")
        strong = as_table(strong_traces) if strong_traces is not None else None
        if strong is not None and strong.n_traces == 0:
            raise InsufficientDataError("TransitionModel.fit: strong_traces is empty")

        if self.p_w is not None:  # given, e.g. estimated by trim_pomdp.fit.outcome.OutcomeEM
            self.p_w_ = float(self.p_w)
            self.p_w_ci_ = np.array([self.p_w_, self.p_w_])
            self.n_w_, self.k_w_ = 0, 0
        else:
            w = step_accuracy(cheap, self.ci, writer=0)
            if w.n == 0:
                raise InsufficientDataError(
                    "TransitionModel.fit: no cheap step with a known-correct prefix and a label "
                    "(p_w has no data)"
                )
            self.p_w_, self.p_w_ci_ = w.p, np.array([w.lo, w.hi])
            self.n_w_, self.k_w_ = w.n, w.k

        if self.p_s is not None:
            self.p_s_ = float(self.p_s)
            self.p_s_ci_ = np.array([self.p_s_, self.p_s_])
            self.n_s_, self.k_s_ = 0, 0
        else:
            k = n = 0
            mixed = step_accuracy(cheap, self.ci, writer=1)
            k, n = mixed.k, mixed.n
            if strong is not None:
                s = step_accuracy(strong, self.ci)
                k, n = k + s.k, n + s.n
            if strong is None and n == 0:
                raise ValueError(
                    "TransitionModel.fit: no strong traces given; pass strong_traces or the "
                    "p_s= parameter"
                )
            if n == 0:
                raise InsufficientDataError(
                    "TransitionModel.fit: no strong step with a known-correct prefix and a "
                    "label (p_s has no data)"
                )
            lo, hi = wilson_interval(k, n, self.ci)
            self.p_s_, self.p_s_ci_ = k / n, np.array([lo, hi])
            self.n_s_, self.k_s_ = n, k

        self.hazard_, self.hazard_at_risk_, self.hazard_ended_ = kernel_hazard(
            cheap.length, self.max_steps, self.hazard_smoothing, self.hazard_bandwidth)
        self.n_truncated_ = int((cheap.length > self.max_steps).sum())

        has_tok = cheap.tokens >= 0
        cmask = has_tok & (cheap.writer == 0)
        self.cheap_tokens_ = (TokenSummary.from_tokens(cheap.tokens[cmask], cheap.step[cmask],
                                                       self.max_steps, self.token_shrinkage)
                              if cmask.any() else None)
        st_tok = [cheap.tokens[has_tok & (cheap.writer == 1)]]
        st_step = [cheap.step[has_tok & (cheap.writer == 1)]]
        if strong is not None:
            m = strong.tokens >= 0
            st_tok.append(strong.tokens[m])
            st_step.append(strong.step[m])
        stt = np.concatenate(st_tok)
        self.strong_tokens_ = (TokenSummary.from_tokens(stt, np.concatenate(st_step),
                                                        self.max_steps, self.token_shrinkage)
                               if stt.size else None)
        if self.strong_cheap_ratio is not None:
            self.strong_cheap_ratio_ = float(self.strong_cheap_ratio)
        elif (self.cheap_tokens_ is not None and self.strong_tokens_ is not None
              and self.cheap_tokens_.mean_all > 0):
            self.strong_cheap_ratio_ = self.strong_tokens_.mean_all / self.cheap_tokens_.mean_all
        else:
            self.strong_cheap_ratio_ = 1.0
        self.n_cheap_traces_ = cheap.n_traces
        self.n_strong_traces_ = strong.n_traces if strong is not None else 0
        return self

    # ------------------------------------------------------------------ use
    def _check_fitted(self) -> None:
        if not hasattr(self, "p_w_"):
            raise NotFittedError(
                "This TransitionModel instance is not fitted yet; call 'fit' (or 'load') first"
            )

    def expected_strong_tokens(self, cheap_tokens: ArrayLike) -> NDArray[np.float64]:
        """Expected tokens of a strong rewrite of a step the cheap model drafted with
        ``cheap_tokens`` tokens: ``strong_cheap_ratio_ * cheap_tokens`` (vectorised)."""
        self._check_fitted()
        c = np.asarray(cheap_tokens, dtype=np.float64)
        if np.any(~np.isfinite(c)) or np.any(c < 0):
            raise ValueError("cheap_tokens must be finite and >= 0")
        return self.strong_cheap_ratio_ * c

    def token_bin_edges(self, n_bins: int) -> NDArray[np.float64]:
        """Quantile edges of the cheap step lengths: ``(n_bins + 1,)`` values at quantiles
        0, 1/n_bins, ..., 1 (ties give empty bins; see :func:`token_bin`)."""
        self._check_fitted()
        if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
            raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}")
        if self.cheap_tokens_ is None:
            raise InsufficientDataError("token_bin_edges: the cheap traces carry no token counts")
        return self.cheap_tokens_.quantiles(np.linspace(0.0, 1.0, n_bins + 1))

    def token_bin_probabilities(self, edges: ArrayLike) -> NDArray[np.float64]:
        """P(token bin of a cheap draft) under the empirical cheap step-length distribution."""
        self._check_fitted()
        if self.cheap_tokens_ is None:
            raise InsufficientDataError("token_bin_probabilities: no cheap token counts")
        tk = self.cheap_tokens_
        b = token_bin(tk.values, edges)
        n_bins = np.asarray(edges).shape[0] - 1
        p = np.bincount(b, weights=tk.value_counts, minlength=n_bins)
        out: NDArray[np.float64] = p / p.sum()
        return out

    def expected_strong_tokens_per_bin(self, edges: ArrayLike) -> NDArray[np.float64]:
        """``expected_strong_tokens`` of the mean cheap length within each token bin (an
        empty bin gets the rule applied to the bin's midpoint)."""
        self._check_fitted()
        if self.cheap_tokens_ is None:
            raise InsufficientDataError("expected_strong_tokens_per_bin: no cheap token counts")
        edges = np.asarray(edges, dtype=np.float64)
        tk = self.cheap_tokens_
        b = token_bin(tk.values, edges)
        nb = edges.size - 1
        cnt = np.bincount(b, weights=tk.value_counts, minlength=nb)
        tot = np.bincount(b, weights=tk.value_counts * tk.values, minlength=nb)
        mid = 0.5 * (edges[:-1] + edges[1:])
        mean = np.where(cnt > 0, tot / np.maximum(cnt, 1), mid)
        return self.expected_strong_tokens(mean)

    def summary(self) -> dict[str, Any]:
        """Fitted parameters as plain JSON-able values."""
        self._check_fitted()
        return {
            "p_w": self.p_w_, "p_w_ci": self.p_w_ci_.tolist(), "n_w": self.n_w_, "k_w": self.k_w_,
            "p_s": self.p_s_, "p_s_ci": self.p_s_ci_.tolist(), "n_s": self.n_s_, "k_s": self.k_s_,
            "hazard": self.hazard_.tolist(), "n_truncated": self.n_truncated_,
            "strong_cheap_ratio": self.strong_cheap_ratio_,
            "cheap_mean_tokens": (None if self.cheap_tokens_ is None
                                  else self.cheap_tokens_.mean_all),
            "strong_mean_tokens": (None if self.strong_tokens_ is None
                                   else self.strong_tokens_.mean_all),
            "n_cheap_traces": self.n_cheap_traces_, "n_strong_traces": self.n_strong_traces_,
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save as ``.npz`` (arrays) with JSON metadata (``format_version`` 1)."""
        self._check_fitted()
        arrays: dict[str, np.ndarray] = {
            "p_w_ci": self.p_w_ci_, "p_s_ci": self.p_s_ci_, "hazard": self.hazard_,
            "hazard_at_risk": self.hazard_at_risk_, "hazard_ended": self.hazard_ended_,
        }
        if self.cheap_tokens_ is not None:
            arrays.update(self.cheap_tokens_.to_arrays("cheap_tokens"))
        if self.strong_tokens_ is not None:
            arrays.update(self.strong_tokens_.to_arrays("strong_tokens"))
        meta = {
            "params": {"max_steps": int(self.max_steps), "ci": self.ci,
                       "hazard_smoothing": self.hazard_smoothing,
                       "hazard_bandwidth": self.hazard_bandwidth, "p_s": self.p_s,
                       "strong_cheap_ratio": self.strong_cheap_ratio,
                       "token_shrinkage": self.token_shrinkage},
            "p_w": self.p_w_, "p_s": self.p_s_, "n_w": self.n_w_, "k_w": self.k_w_,
            "n_s": self.n_s_, "k_s": self.k_s_, "n_truncated": self.n_truncated_,
            "strong_cheap_ratio": self.strong_cheap_ratio_,
            "n_cheap_traces": self.n_cheap_traces_, "n_strong_traces": self.n_strong_traces_,
            "has_cheap_tokens": self.cheap_tokens_ is not None,
            "has_strong_tokens": self.strong_tokens_ is not None,
        }
        return _FORMAT.save(path, arrays, meta)  # the path as given

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TransitionModel:
        """Load a model written by :meth:`save` (``allow_pickle=False``)."""
        name = str(path)
        a, meta = _FORMAT.load(path)
        E, w = ModelValidationError, f"{name}: metadata"
        params = _v.json_dict(meta, "params", w, E)
        _v.json_int(params, "max_steps", f"{w}: params", E, lo=1, hi=100_000)
        try:
            self = cls(**params)
            self._check_params()
            H = int(self.max_steps)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ModelValidationError):
                raise ModelValidationError(f"{name}: {exc}") from None
            raise ModelValidationError(f"{name}: bad TransitionModel metadata ({exc!r})") from None
        self.p_w_ = _number(meta, "p_w", w, E, lo=0.0, hi=1.0)
        self.p_s_ = _number(meta, "p_s", w, E, lo=0.0, hi=1.0)
        self.n_w_, self.k_w_ = (_v.json_int(meta, k, w, E, lo=0) for k in ("n_w", "k_w"))
        self.n_s_, self.k_s_ = (_v.json_int(meta, k, w, E, lo=0) for k in ("n_s", "k_s"))
        self.n_truncated_ = _v.json_int(meta, "n_truncated", w, E, lo=0)
        self.strong_cheap_ratio_ = _number(meta, "strong_cheap_ratio", w, E, lo=0.0)
        self.n_cheap_traces_ = _v.json_int(meta, "n_cheap_traces", w, E, lo=0)
        self.n_strong_traces_ = _v.json_int(meta, "n_strong_traces", w, E, lo=0)
        has_c = _v.json_bool(meta, "has_cheap_tokens", w, E)
        has_s = _v.json_bool(meta, "has_strong_tokens", w, E)
        # NaN: an interval that was not computed (e.g. outcome EM without bootstrap)
        self.p_w_ci_ = _need(a, "p_w_ci", (2,), name, finite=False)
        self.p_s_ci_ = _need(a, "p_s_ci", (2,), name, finite=False)
        self.hazard_ = _need(a, "hazard", (H,), name).astype(np.float64)
        self.hazard_at_risk_ = _need(a, "hazard_at_risk", (H,), name, integer=True, lo=0)
        self.hazard_ended_ = _need(a, "hazard_ended", (H,), name, integer=True, lo=0)
        self.cheap_tokens_ = TokenSummary.from_arrays(a, "cheap_tokens", H, name) if has_c else None
        self.strong_tokens_ = (TokenSummary.from_arrays(a, "strong_tokens", H, name)
                               if has_s else None)
        if not (np.all((self.hazard_ >= 0) & (self.hazard_ <= 1)) and self.hazard_[-1] == 1.0):
            raise ModelValidationError(f"{name}: hazard must lie in [0, 1] with hazard[-1] == 1")
        return self

    def __repr__(self) -> str:
        if not hasattr(self, "p_w_"):
            return "TransitionModel(unfitted)"
        return (f"TransitionModel(p_w={self.p_w_:.4f} [{self.p_w_ci_[0]:.4f}, "
                f"{self.p_w_ci_[1]:.4f}] n={self.n_w_}, p_s={self.p_s_:.4f}, "
                f"strong_cheap_ratio={self.strong_cheap_ratio_:.3f})")
