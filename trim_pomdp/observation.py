"""Observation model: P(PRM observation | hidden state) for S0, S1, S2.

Features
--------
``features="score"``: the PRM score ``x`` of the current step, a density on [0, 1].

``features="score+min"`` (TRIM's pair): ``(x, m)`` with ``m`` the minimum score of the earlier
steps of the trace, ``m = 1`` on the first step (the empty minimum).  Because every first
step sits exactly at ``m = 1`` the pair has an atom on the line ``m = 1``; each estimator
therefore models, per state s,

    f_s(x, m) = pi_s f^atom_s(x)            if m == 1,
              = (1 - pi_s) f^cont_s(x, m)   if m < 1,

a density with respect to (Lebesgue on [0,1]) x (Lebesgue on [0,1] + a point mass at 1),
with ``pi_s = (n_atom + 1/2) / (n + 1)``.  The same decomposition for every estimator keeps
their held-out log-likelihoods comparable.

Estimators
----------
``"kde"`` (TRIM's choice): Gaussian kernel density with reflection at 0 and 1,

    f(x) = 1/n sum_i [phi_h(x - x_i) + phi_h(x + x_i) + phi_h(x - 2 + x_i)] / M(x_i),

where ``M(x_i)`` is the kernel's mass on [0, 1] (so f integrates to exactly 1); a product of
such kernels on [0, 1]^2.  Data are linearly binned onto a grid (1024 points in 1-D, 256 per
axis in 2-D), which is exact for bin probabilities of the binned sample and makes fitting
O(n); ``pdf`` interpolates the density tabulated on that grid.  Bandwidth: Silverman's
``0.9 min(sd, IQR/1.34) n^(-1/5)`` in 1-D, Scott's ``sd n^(-1/6)`` per axis in 2-D, at
least two grid spacings; or ``bandwidth=`` (a float, used for every axis).

``"beta"``: Beta(a, b) by maximum likelihood (product of two Betas for the continuous part in
2-D).  With ``L1 = mean log x``, ``L2 = mean log(1 - x)`` the mean log-likelihood is
``(a-1) L1 + (b-1) L2 - log B(a, b)`` with gradient
``(L1 - psi(a) + psi(a+b), L2 - psi(b) + psi(a+b))``; minimised over ``(log a, log b)`` by
L-BFGS-B (``jac=True``) from the method-of-moments start; a fit that does not report
convergence warns with scipy's message.  Scores are clipped to ``[1e-6, 1 - 1e-6]``.

``"hist"``: histogram with ``hist_bins`` equal bins per axis and ``hist_pseudocount``
added to every bin (additive smoothing), piecewise-constant density.

Discretisation
--------------
Score bins are equal-width on [0, 1] with edges ``k / n``: score ``x`` is in bin
``i = #{k = 1..n-1 : k / n <= x}`` (= ``min(floor(x n), n - 1)``);
likewise ``m``.  The observation index is ``o = i_score * n_min_bins + i_min`` (or
``i_score`` for the 1-D feature).  ``discretize`` integrates the fitted density over each
bin exactly (KDE: normal CDFs; Beta: regularised incomplete beta; histogram: overlaps),
so each row sums to 1.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp.errors import InsufficientDataError, ModelValidationError, NotFittedError
from trim_pomdp.traces import Trace, TraceTable, as_table
from trim_pomdp.transition import _need, load_npz, save_npz

__all__ = ["ObservationModel", "observation_index", "score_bin"]

FORMAT_VERSION = 1
STATE_NAMES = ("S0", "S1", "S2")
_BETA_EPS = 1e-6
_G1 = 1024
_G2 = 256
# a part of the (score, min) mixture with fewer samples than this is not estimated on its own
_MIN_PART = 5


# ----------------------------------------------------------------------------- binning


def score_bin(x: ArrayLike, n_bins: int, name: str = "score") -> NDArray[np.int64]:
    """Equal-width bin of values in [0, 1]: the number of inner edges ``k / n_bins``
    (k = 1..n_bins-1) that are ``<= x``, i.e. ``min(floor(x * n_bins), n_bins - 1)`` computed
    without rounding surprises at the edges (same rule as ``searchsorted(edges, x, "right")``).
    """
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"number of bins for {name} must be a positive integer; got {n_bins!r}")
    a = np.asarray(x, dtype=np.float64)
    bad = ~((a >= 0.0) & (a <= 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        v = float(a.ravel()[i])
        raise ValueError(f"{name} must be in [0, 1] (no NaN); got {v!r} at index {i}")
    inner = np.arange(1, n_bins, dtype=np.float64) / n_bins
    return np.searchsorted(inner, a, side="right").astype(np.int64)


def observation_index(score: ArrayLike, min_prev: ArrayLike | None, n_score_bins: int,
                      n_min_bins: int | None = None) -> NDArray[np.int64]:
    """Observation index ``o = i_score * n_min_bins + i_min`` (``i_score`` when
    ``n_min_bins`` is None), vectorised; consistent with :meth:`ObservationModel.discretize`.

    ``min_prev`` is the minimum score of the earlier steps (1.0 on a first step).
    """
    i = score_bin(score, n_score_bins, "score")
    if n_min_bins is None:
        return i
    if min_prev is None:
        raise ValueError("min_prev is required when n_min_bins is given")
    j = score_bin(min_prev, n_min_bins, "min_prev")
    i, j = np.broadcast_arrays(i, j)
    return i * n_min_bins + j


# ----------------------------------------------------------------------------- KDE pieces


def _ndtr(z: NDArray[np.float64]) -> NDArray[np.float64]:
    from scipy.special import ndtr

    return ndtr(z)


def _reflected_mass(g: NDArray[np.float64], h: float) -> NDArray[np.float64]:
    """Mass on [0, 1] of the reflected kernel centred at g (three images)."""
    return _reflected_cdf(np.array([1.0]), g, h)[0] - _reflected_cdf(np.array([0.0]), g, h)[0]


def _reflected_cdf(x: NDArray[np.float64], g: NDArray[np.float64], h: float) -> NDArray[np.float64]:
    """C[k, j] = antiderivative at x_k of the reflected kernel centred at g_j."""
    x = x[:, None]
    return _ndtr((x - g) / h) + _ndtr((x + g) / h) + _ndtr((x - 2.0 + g) / h)


def _reflected_pdf(x: NDArray[np.float64], g: NDArray[np.float64], h: float) -> NDArray[np.float64]:
    x = x[:, None]
    c = 1.0 / (h * np.sqrt(2.0 * np.pi))
    return c * (np.exp(-0.5 * ((x - g) / h) ** 2) + np.exp(-0.5 * ((x + g) / h) ** 2)
                + np.exp(-0.5 * ((x - 2.0 + g) / h) ** 2))


def _linear_bin_1d(x: NDArray[np.float64], G: int) -> NDArray[np.float64]:
    pos = x * (G - 1)
    lo = np.minimum(pos.astype(np.int64), G - 2)
    fr = pos - lo
    w = np.bincount(lo, weights=1.0 - fr, minlength=G) + np.bincount(lo + 1, weights=fr,
                                                                      minlength=G)
    return w / x.size


def _linear_bin_2d(x: NDArray[np.float64], y: NDArray[np.float64], G: int) -> NDArray[np.float64]:
    px, py = x * (G - 1), y * (G - 1)
    ix, iy = np.minimum(px.astype(np.int64), G - 2), np.minimum(py.astype(np.int64), G - 2)
    fx, fy = px - ix, py - iy
    W = np.zeros(G * G)
    for dx, wx in ((0, 1.0 - fx), (1, fx)):
        for dy, wy in ((0, 1.0 - fy), (1, fy)):
            W += np.bincount((ix + dx) * G + (iy + dy), weights=wx * wy, minlength=G * G)
    return W.reshape(G, G) / x.size


def _silverman(x: NDArray[np.float64]) -> float:
    n = x.size
    sd = float(x.std(ddof=1)) if n > 1 else 0.0
    q75, q25 = np.percentile(x, [75, 25])
    iqr = (q75 - q25) / 1.34
    s = min(sd, iqr) if iqr > 0 else sd
    return 0.9 * s * n ** (-0.2)


class _KDE1D:
    kind = "kde1"

    def __init__(self, h: float, w: NDArray[np.float64]) -> None:
        self.h, self.w = float(h), w
        G = w.size
        self.g = np.linspace(0.0, 1.0, G)
        self._wn = w / _reflected_mass(self.g, self.h)
        # Density tabulated on the grid, for pdf by linear interpolation.  On a uniform grid
        # the three kernel images depend on k - j, k + j and k + j - 2(G - 1) only, so the
        # (G, G) kernel matrix product is three 1-D correlations.
        c = 1.0 / (self.h * np.sqrt(2.0 * np.pi))
        u = np.arange(2 * G - 1) / (G - 1) / self.h
        k_diff = c * np.exp(-0.5 * (u - 1.0 / self.h) ** 2)  # (k - j) / (G - 1) = u - 1
        k_sum0 = c * np.exp(-0.5 * u**2)                     # (k + j) / (G - 1)
        k_sum1 = c * np.exp(-0.5 * (u - 2.0 / self.h) ** 2)  # (k + j) / (G - 1) - 2
        wn = self._wn
        self.grid_pdf = (np.convolve(wn, k_diff)[G - 1:2 * G - 1]
                         + np.correlate(k_sum0, wn, mode="valid")
                         + np.correlate(k_sum1, wn, mode="valid"))

    @classmethod
    def fit(cls, x: NDArray[np.float64], bandwidth: float | None) -> _KDE1D:
        h = bandwidth if bandwidth is not None else _silverman(x)
        h = max(float(h), 2.0 / (_G1 - 1))
        return cls(h, _linear_bin_1d(x, _G1))

    def pdf(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.interp(x, self.g, self.grid_pdf)

    def pdf_exact(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return _reflected_pdf(np.asarray(x, dtype=np.float64), self.g, self.h) @ self._wn

    def bin_matrix(self, edges: NDArray[np.float64]) -> NDArray[np.float64]:
        C = _reflected_cdf(edges, self.g, self.h)
        return (C[1:] - C[:-1]) / _reflected_mass(self.g, self.h)  # (n_bins, G)

    def bin_probs(self, edges: NDArray[np.float64]) -> NDArray[np.float64]:
        return self.bin_matrix(edges) @ self.w

    def to_arrays(self, p: str) -> dict[str, np.ndarray]:
        return {f"{p}_h": np.array([self.h]), f"{p}_w": self.w}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], p: str, name: str) -> _KDE1D:
        h = float(_need(a, f"{p}_h", (1,), name)[0])
        return cls(h, _need(a, f"{p}_w", (_G1,), name).astype(np.float64))


class _KDE2D:
    kind = "kde2"

    def __init__(self, h: tuple[float, float], W: NDArray[np.float64]) -> None:
        self.hx, self.hy = float(h[0]), float(h[1])
        self.W = W
        G = W.shape[0]
        self.g = np.linspace(0.0, 1.0, G)
        self._grid_pdf: NDArray[np.float64] | None = None

    @property
    def grid_pdf(self) -> NDArray[np.float64]:
        # Tabulated lazily: fitting and discretising never need it, only pdf() does.
        if self._grid_pdf is None:
            Ax = _reflected_pdf(self.g, self.g, self.hx) / _reflected_mass(self.g, self.hx)
            Ay = _reflected_pdf(self.g, self.g, self.hy) / _reflected_mass(self.g, self.hy)
            self._grid_pdf = Ax @ self.W @ Ay.T
        return self._grid_pdf

    @classmethod
    def fit(cls, x: NDArray[np.float64], y: NDArray[np.float64],
            bandwidth: float | None) -> _KDE2D:
        n = x.size
        if bandwidth is None:
            hx = float(x.std(ddof=1)) * n ** (-1 / 6) if n > 1 else 0.0
            hy = float(y.std(ddof=1)) * n ** (-1 / 6) if n > 1 else 0.0
        else:
            hx = hy = float(bandwidth)
        hmin = 2.0 / (_G2 - 1)
        return cls((max(hx, hmin), max(hy, hmin)), _linear_bin_2d(x, y, _G2))

    def pdf(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
        G = self.g.size
        px, py = np.clip(x, 0, 1) * (G - 1), np.clip(y, 0, 1) * (G - 1)
        ix, iy = np.minimum(px.astype(np.int64), G - 2), np.minimum(py.astype(np.int64), G - 2)
        fx, fy = px - ix, py - iy
        D = self.grid_pdf
        return ((1 - fx) * (1 - fy) * D[ix, iy] + fx * (1 - fy) * D[ix + 1, iy]
                + (1 - fx) * fy * D[ix, iy + 1] + fx * fy * D[ix + 1, iy + 1])

    def pdf_exact(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
        g = self.g
        Kx = _reflected_pdf(np.asarray(x, float), g, self.hx) / _reflected_mass(g, self.hx)
        Ky = _reflected_pdf(np.asarray(y, float), g, self.hy) / _reflected_mass(g, self.hy)
        return np.einsum("ij,jk,ik->i", Kx, self.W, Ky)

    def bin_probs(self, ex: NDArray[np.float64], ey: NDArray[np.float64]) -> NDArray[np.float64]:
        Cx = _reflected_cdf(ex, self.g, self.hx)
        Cy = _reflected_cdf(ey, self.g, self.hy)
        Px = (Cx[1:] - Cx[:-1]) / _reflected_mass(self.g, self.hx)
        Py = (Cy[1:] - Cy[:-1]) / _reflected_mass(self.g, self.hy)
        return Px @ self.W @ Py.T

    def to_arrays(self, p: str) -> dict[str, np.ndarray]:
        return {f"{p}_h": np.array([self.hx, self.hy]), f"{p}_W": self.W}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], p: str, name: str) -> _KDE2D:
        h = _need(a, f"{p}_h", (2,), name)
        return cls((float(h[0]), float(h[1])), _need(a, f"{p}_W", (_G2, _G2), name).astype(float))


# ----------------------------------------------------------------------------- Beta pieces


def beta_mle(x: NDArray[np.float64], *, where: str = "beta") -> tuple[float, float]:
    """Maximum-likelihood Beta(a, b) of a sample in (0, 1) (clipped to [1e-6, 1-1e-6]).

    Minimises ``-[(a-1) L1 + (b-1) L2 - log B(a, b)]`` over ``(log a, log b)`` with the
    analytic gradient (module docstring), L-BFGS-B; warns (``RuntimeWarning``) with scipy's
    message when the optimiser does not report convergence.
    """
    from scipy.optimize import minimize
    from scipy.special import betaln, digamma

    x = np.clip(np.asarray(x, dtype=np.float64), _BETA_EPS, 1.0 - _BETA_EPS)
    L1 = float(np.log(x).mean())
    L2 = float(np.log1p(-x).mean())
    m, v = float(x.mean()), float(x.var())
    c = m * (1.0 - m) / v - 1.0 if v > 0 else 1.0
    if not np.isfinite(c) or c <= 0:
        c = 1.0
    theta0 = np.log([max(m * c, 1e-3), max((1.0 - m) * c, 1e-3)])

    def nll(theta: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        a, b = np.exp(theta)
        f = -((a - 1.0) * L1 + (b - 1.0) * L2 - betaln(a, b))
        dab = digamma(a + b)
        ga = -(L1 - digamma(a) + dab)
        gb = -(L2 - digamma(b) + dab)
        return float(f), np.array([ga * a, gb * b])  # chain rule for the log parameters

    res = minimize(nll, theta0, jac=True, method="L-BFGS-B",
                   bounds=[(-12.0, 12.0), (-12.0, 12.0)],
                   options={"ftol": 1e-13, "gtol": 1e-9, "maxiter": 500})
    # L-BFGS-B may stop with ABNORMAL_TERMINATION_IN_LNSRCH when it is already at the optimum
    # to machine precision; what matters is a vanishing gradient of the (O(1)-scaled) objective.
    converged = res.success or float(np.max(np.abs(res.jac))) < 1e-6
    if not converged:
        warnings.warn(f"{where}: Beta maximum likelihood did not converge: {res.message}",
                      RuntimeWarning, stacklevel=3)
    a, b = np.exp(res.x)
    return float(a), float(b)


def _beta_logpdf(x: NDArray[np.float64], a: float, b: float) -> NDArray[np.float64]:
    from scipy.special import betaln

    x = np.clip(x, _BETA_EPS, 1.0 - _BETA_EPS)
    return (a - 1.0) * np.log(x) + (b - 1.0) * np.log1p(-x) - betaln(a, b)


def _beta_bin_probs(edges: NDArray[np.float64], a: float, b: float) -> NDArray[np.float64]:
    from scipy.special import betainc

    return np.diff(betainc(a, b, edges))


class _Beta1D:
    kind = "beta1"

    def __init__(self, a: float, b: float) -> None:
        self.a, self.b = a, b

    @classmethod
    def fit(cls, x: NDArray[np.float64], where: str = "beta") -> _Beta1D:
        return cls(*beta_mle(x, where=where))

    def pdf(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.exp(_beta_logpdf(x, self.a, self.b))

    def bin_probs(self, edges: NDArray[np.float64]) -> NDArray[np.float64]:
        return _beta_bin_probs(edges, self.a, self.b)

    def to_arrays(self, p: str) -> dict[str, np.ndarray]:
        return {f"{p}_ab": np.array([self.a, self.b])}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], p: str, name: str) -> _Beta1D:
        ab = _need(a, f"{p}_ab", (2,), name)
        return cls(float(ab[0]), float(ab[1]))


class _Beta2D:
    kind = "beta2"

    def __init__(self, x: _Beta1D, y: _Beta1D) -> None:
        self.x, self.y = x, y

    @classmethod
    def fit(cls, x: NDArray[np.float64], y: NDArray[np.float64], where: str = "beta") -> _Beta2D:
        return cls(_Beta1D.fit(x, where + " (score)"), _Beta1D.fit(y, where + " (min_prev)"))

    def pdf(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
        return self.x.pdf(x) * self.y.pdf(y)

    def bin_probs(self, ex: NDArray[np.float64], ey: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.outer(self.x.bin_probs(ex), self.y.bin_probs(ey))

    def to_arrays(self, p: str) -> dict[str, np.ndarray]:
        return {f"{p}_ab": np.array([self.x.a, self.x.b, self.y.a, self.y.b])}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], p: str, name: str) -> _Beta2D:
        ab = _need(a, f"{p}_ab", (4,), name)
        return cls(_Beta1D(float(ab[0]), float(ab[1])), _Beta1D(float(ab[2]), float(ab[3])))


# ----------------------------------------------------------------------------- histograms


def _overlap(edges: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    """O[i, j] = fraction of histogram bin j (of k equal bins) inside target bin i."""
    he = np.linspace(0.0, 1.0, k + 1)
    lo = np.maximum(edges[:-1, None], he[None, :-1])
    hi = np.minimum(edges[1:, None], he[None, 1:])
    return np.clip(hi - lo, 0.0, None) * k


class _Hist1D:
    kind = "hist1"

    def __init__(self, p: NDArray[np.float64]) -> None:
        self.p = p

    @classmethod
    def fit(cls, x: NDArray[np.float64], bins: int, alpha: float) -> _Hist1D:
        c = np.bincount(np.minimum((x * bins).astype(np.int64), bins - 1), minlength=bins)
        p = (c + alpha) / (c.sum() + alpha * bins)
        return cls(p)

    def pdf(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        k = self.p.size
        return self.p[np.minimum((np.clip(x, 0, 1) * k).astype(np.int64), k - 1)] * k

    def bin_probs(self, edges: NDArray[np.float64]) -> NDArray[np.float64]:
        return _overlap(edges, self.p.size) @ self.p

    def to_arrays(self, p: str) -> dict[str, np.ndarray]:
        return {f"{p}_p": self.p}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], p: str, name: str) -> _Hist1D:
        return cls(_need(a, f"{p}_p", None, name).astype(np.float64))


class _Hist2D:
    kind = "hist2"

    def __init__(self, P: NDArray[np.float64]) -> None:
        self.P = P

    @classmethod
    def fit(cls, x: NDArray[np.float64], y: NDArray[np.float64], bins: int,
            alpha: float) -> _Hist2D:
        i = np.minimum((x * bins).astype(np.int64), bins - 1)
        j = np.minimum((y * bins).astype(np.int64), bins - 1)
        c = np.bincount(i * bins + j, minlength=bins * bins).reshape(bins, bins)
        return cls((c + alpha) / (c.sum() + alpha * bins * bins))

    def pdf(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
        k = self.P.shape[0]
        i = np.minimum((np.clip(x, 0, 1) * k).astype(np.int64), k - 1)
        j = np.minimum((np.clip(y, 0, 1) * k).astype(np.int64), k - 1)
        return self.P[i, j] * k * k

    def bin_probs(self, ex: NDArray[np.float64], ey: NDArray[np.float64]) -> NDArray[np.float64]:
        k = self.P.shape[0]
        return _overlap(ex, k) @ self.P @ _overlap(ey, k).T

    def to_arrays(self, p: str) -> dict[str, np.ndarray]:
        return {f"{p}_P": self.P}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], p: str, name: str) -> _Hist2D:
        P = _need(a, f"{p}_P", None, name).astype(np.float64)
        if P.ndim != 2 or P.shape[0] != P.shape[1]:
            raise ModelValidationError(f"{name}: array {p}_P must be square; got {P.shape}")
        return cls(P)


_KINDS: dict[str, Any] = {c.kind: c for c in (_KDE1D, _KDE2D, _Beta1D, _Beta2D, _Hist1D, _Hist2D)}


# ----------------------------------------------------------------------------- the model


class ObservationModel:
    """P(observation | hidden state) for TRIM's states S0, S1, S2.

    Parameters
    ----------
    estimator : {"kde", "beta", "hist"}, default "kde"
        Density estimator (module docstring).
    features : {"score", "score+min"}, default "score"
        The current step's PRM score, or the pair (score, minimum of earlier scores).
    bandwidth : float, optional
        KDE bandwidth (default: Silverman in 1-D, Scott per axis in 2-D).
    hist_bins : int, default 20
        Histogram bins per axis (``"hist"``).
    hist_pseudocount : float, default 0.5
        Added to every histogram bin.
    min_samples_per_state : int, default 10
        Fewer labelled steps of a state raise :class:`InsufficientDataError`.

    Attributes
    ----------
    n_samples_ : (3,) int64       steps used per state
    atom_weight_ : (3,) float64    pi_s (only for ``"score+min"``)
    n_missing_score_ : int         steps with a known state but no PRM score (not used)
    """

    def __init__(self, *, estimator: str = "kde", features: str = "score",
                 bandwidth: float | None = None, hist_bins: int = 20,
                 hist_pseudocount: float = 0.5, min_samples_per_state: int = 10) -> None:
        self.estimator = estimator
        self.features = features
        self.bandwidth = bandwidth
        self.hist_bins = hist_bins
        self.hist_pseudocount = hist_pseudocount
        self.min_samples_per_state = min_samples_per_state
        #: the discretisation the router should use, ``{"n_score_bins": int, "n_min_bins":
        #: int | None}`` (see :meth:`set_binning`); None: not chosen (files written before
        #: it was recorded load with None)
        self.binning: dict[str, int | None] | None = None

    def set_binning(self, n_score_bins: int, n_min_bins: int | None = None) -> ObservationModel:
        """Record the bins the TRIM model built from this density should use, so that it
        travels with the saved file (``trim-pomdp fit`` sets it, ``solve-grid`` reads it).
        ``n_min_bins`` is required for ``features="score+min"`` and must be None for
        ``"score"``."""
        self._check_params()
        score_bin(np.zeros(1), n_score_bins, "n_score_bins")  # validates
        if self.features == "score":
            if n_min_bins is not None:
                raise ValueError("n_min_bins must be None for features='score'; "
                                 f"got {n_min_bins!r}")
        else:
            if n_min_bins is None:
                raise ValueError("n_min_bins is required for features='score+min'")
            score_bin(np.zeros(1), n_min_bins, "n_min_bins")
        self.binning = {"n_score_bins": int(n_score_bins),
                        "n_min_bins": None if n_min_bins is None else int(n_min_bins)}
        return self

    # ------------------------------------------------------------------ helpers
    def _check_params(self) -> None:
        if self.estimator not in ("kde", "beta", "hist"):
            raise ValueError(
                f"estimator must be 'kde', 'beta' or 'hist'; got {self.estimator!r}")
        if self.features not in ("score", "score+min"):
            raise ValueError(f"features must be 'score' or 'score+min'; got {self.features!r}")
        if self.bandwidth is not None and not (0 < self.bandwidth <= 1):
            raise ValueError(f"bandwidth must be in (0, 1]; got {self.bandwidth!r}")
        if not isinstance(self.hist_bins, (int, np.integer)) or self.hist_bins < 1:
            raise ValueError(f"hist_bins must be a positive integer; got {self.hist_bins!r}")
        if not (self.hist_pseudocount >= 0):
            raise ValueError(f"hist_pseudocount must be >= 0; got {self.hist_pseudocount!r}")

    @property
    def n_features(self) -> int:
        return 2 if self.features == "score+min" else 1

    def _fit1(self, x: NDArray[np.float64], where: str) -> Any:
        if self.estimator == "kde":
            return _KDE1D.fit(x, self.bandwidth)
        if self.estimator == "beta":
            return _Beta1D.fit(x, where)
        return _Hist1D.fit(x, self.hist_bins, self.hist_pseudocount)

    def _fit2(self, x: NDArray[np.float64], y: NDArray[np.float64], where: str) -> Any:
        if x.size < _MIN_PART:  # too little to estimate: uniform placeholder, weight (1 - pi) ~ 0
            return _Hist2D(np.ones((1, 1)))
        if self.estimator == "kde":
            return _KDE2D.fit(x, y, self.bandwidth)
        if self.estimator == "beta":
            return _Beta2D.fit(x, y, where)
        return _Hist2D.fit(x, y, self.hist_bins, self.hist_pseudocount)

    def _features(self, table: TraceTable) -> tuple[NDArray[np.bool_], NDArray[np.float64],
                                                    NDArray[np.float64]]:
        ok = ~np.isnan(table.score)
        if self.features == "score+min":
            ok &= ~np.isnan(table.min_prev)
        return ok, table.score, table.min_prev

    # ------------------------------------------------------------------ fit
    def fit(self, traces: Sequence[Trace] | TraceTable) -> ObservationModel:
        """Fit one density per hidden state from the steps whose state is known.

        Raises
        ------
        InsufficientDataError
            A state has fewer than ``min_samples_per_state`` labelled, scored steps
            (message names the state and the count); no step has a PRM score.
        """
        self._check_params()
        table = as_table(traces)
        ok, x, m = self._features(table)
        known = table.state >= 0
        self.n_missing_score_ = int((known & ~ok).sum())
        if not (known & ok).any():
            raise InsufficientDataError(
                "ObservationModel.fit: no step has both a known hidden state and a PRM score "
                f"({int(known.sum())} labelled steps, none scored)")
        self.n_samples_ = np.zeros(3, dtype=np.int64)
        self.components_: list[Any] = []
        self.atom_weight_ = np.zeros(3)
        for s in range(3):
            sel = known & ok & (table.state == s)
            n = int(sel.sum())
            self.n_samples_[s] = n
            if n < self.min_samples_per_state:
                raise InsufficientDataError(
                    f"ObservationModel.fit: state {STATE_NAMES[s]} has {n} labelled, scored "
                    f"steps; need at least {self.min_samples_per_state} (min_samples_per_state)")
        for s in range(3):
            sel = known & ok & (table.state == s)
            xs = x[sel]
            where = f"ObservationModel({self.estimator}) state {STATE_NAMES[s]}"
            if self.features == "score":
                self.components_.append(self._fit1(xs, where))
                continue
            ms = m[sel]
            atom = ms >= 1.0
            na = int(atom.sum())
            self.atom_weight_[s] = (na + 0.5) / (xs.size + 1.0)
            # a state with (almost) no first steps: fit its atom part on all its scores
            f_atom = self._fit1(xs[atom] if na >= _MIN_PART else xs, where + " atom")
            f_cont = self._fit2(xs[~atom], ms[~atom], where)
            self.components_.append((f_atom, f_cont))
        return self

    @classmethod
    def from_histograms(cls, hist: ArrayLike, n_samples: ArrayLike | None = None,
                        *, pseudocount: float = 0.0) -> ObservationModel:
        """A fitted ``estimator="hist"``, ``features="score"`` model from given per-state
        histograms ``hist`` of shape ``(3, n_bins)`` (rows S0, S1, S2; equal-width bins on
        [0, 1]), e.g. the ones :class:`trim_pomdp.outcome.OutcomeEM` estimates.
        ``n_samples``: (expected) steps behind each row, kept for :meth:`describe`."""
        P = np.asarray(hist, dtype=np.float64)
        if P.ndim != 2 or P.shape[0] != 3 or P.shape[1] < 1:
            raise ValueError(f"hist must have shape (3, n_bins); got {P.shape}")
        if not np.all(np.isfinite(P)) or (P < 0).any():
            raise ValueError("hist must hold finite, non-negative numbers")
        sums = P.sum(axis=1)
        if (sums <= 0).any():
            raise ValueError(f"every row of hist needs positive mass; row sums {sums.tolist()}")
        self = cls(estimator="hist", features="score", hist_bins=P.shape[1],
                   hist_pseudocount=pseudocount, min_samples_per_state=0)
        self.components_ = [_Hist1D(row / row.sum()) for row in P]
        counts = np.zeros(3) if n_samples is None else np.asarray(n_samples, np.float64)
        if counts.shape != (3,):
            raise ValueError(f"n_samples must have shape (3,); got {counts.shape}")
        self.n_samples_ = np.rint(counts).astype(np.int64)
        self.atom_weight_ = np.zeros(3)
        self.n_missing_score_ = 0
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise NotFittedError(
                "This ObservationModel instance is not fitted yet; call 'fit' (or 'load') first")

    # ------------------------------------------------------------------ densities
    def _as_X(self, X: ArrayLike) -> NDArray[np.float64]:
        X = np.asarray(X, dtype=np.float64)
        d = self.n_features
        if d == 1 and X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if d == 1 and X.ndim != 1:
            raise ValueError(f"X must have shape (n,) for features='score'; got {X.shape}")
        if d == 2 and (X.ndim != 2 or X.shape[1] != 2):
            raise ValueError(f"X must have shape (n, 2) for features='score+min'; got {X.shape}")
        bad = ~((X >= 0) & (X <= 1))
        if bad.any():
            raise ValueError(f"X must lie in [0, 1] (no NaN); got {float(X[bad].ravel()[0])!r}")
        return X

    def pdf(self, X: ArrayLike, state: int) -> NDArray[np.float64]:
        """Density of observations ``X`` in hidden ``state`` (0, 1, 2).

        ``X``: (n,) scores, or (n, 2) pairs (score, min_prev) for ``"score+min"``; for the
        pair, the density is w.r.t. Lebesgue x (Lebesgue + atom at min_prev = 1), see the
        module docstring.
        """
        self._check_fitted()
        if state not in (0, 1, 2):
            raise ValueError(f"state must be 0, 1 or 2; got {state!r}")
        X = self._as_X(X)
        comp = self.components_[state]
        if self.n_features == 1:
            return comp.pdf(X)
        f_atom, f_cont = comp
        pi = self.atom_weight_[state]
        x, m = X[:, 0], X[:, 1]
        atom = m >= 1.0
        out = np.empty(x.size)
        out[atom] = pi * f_atom.pdf(x[atom])
        out[~atom] = (1.0 - pi) * f_cont.pdf(x[~atom], m[~atom])
        return out

    def discretize(self, n_score_bins: int, n_min_bins: int | None = None) -> NDArray[np.float64]:
        """Discrete observation matrix ``(3, O)``: rows S0, S1, S2, each summing to 1.

        ``O = n_score_bins`` for ``"score"``; ``O = n_score_bins * n_min_bins`` with
        ``o = i_score * n_min_bins + i_min`` for ``"score+min"`` (see
        :func:`observation_index`).  Equal-width bins on [0, 1]; probabilities integrate the
        fitted densities exactly over the bins.
        """
        self._check_fitted()
        score_bin(np.zeros(1), n_score_bins, "score")  # validates n_score_bins
        ex = np.arange(n_score_bins + 1) / n_score_bins
        if self.n_features == 1:
            if n_min_bins not in (None, 1):
                raise ValueError("n_min_bins must be None for features='score'")
            Z = np.stack([c.bin_probs(ex) for c in self.components_])
        else:
            if n_min_bins is None:
                raise ValueError("n_min_bins is required for features='score+min'")
            score_bin(np.zeros(1), n_min_bins, "min_prev")
            ey = np.arange(n_min_bins + 1) / n_min_bins
            rows = []
            for s, (f_atom, f_cont) in enumerate(self.components_):
                pi = self.atom_weight_[s]
                P = (1.0 - pi) * f_cont.bin_probs(ex, ey)
                P[:, -1] += pi * f_atom.bin_probs(ex)  # m == 1 lies in the last min bin
                rows.append(P.ravel())
            Z = np.stack(rows)
        Z = np.clip(Z, 0.0, None)
        return Z / Z.sum(axis=1, keepdims=True)

    @staticmethod
    def observation_index(score: ArrayLike, min_prev: ArrayLike | None, n_score_bins: int,
                          n_min_bins: int | None = None) -> NDArray[np.int64]:
        """See :func:`observation_index`."""
        return observation_index(score, min_prev, n_score_bins, n_min_bins)

    def log_likelihood(self, traces: Sequence[Trace] | TraceTable, *,
                       n_score_bins: int | None = None, n_min_bins: int | None = None,
                       average: bool = False) -> float:
        """Log-likelihood of held-out traces' observations given their hidden states.

        Uses every step with a known state and a score.  Continuous:
        ``sum log f_{s_t}(x_t)``; with ``n_score_bins`` (and ``n_min_bins``), the discrete
        ``sum log Z[s_t, o_t]`` of :meth:`discretize`.  ``average=True`` divides by the
        number of steps used.
        """
        self._check_fitted()
        table = as_table(traces)
        ok, x, m = self._features(table)
        sel = ok & (table.state >= 0)
        n = int(sel.sum())
        if n == 0:
            raise InsufficientDataError("log_likelihood: no step with a known state and a score")
        st = table.state[sel]
        if n_score_bins is not None:
            Z = self.discretize(n_score_bins, n_min_bins)
            o = observation_index(x[sel], m[sel] if self.n_features == 2 else None,
                                  n_score_bins, n_min_bins if self.n_features == 2 else None)
            with np.errstate(divide="ignore"):
                total = float(np.log(Z[st, o]).sum())
        else:
            X = x[sel] if self.n_features == 1 else np.column_stack([x[sel], m[sel]])
            total = 0.0
            for s in range(3):
                k = st == s
                if k.any():
                    with np.errstate(divide="ignore"):
                        total += float(np.log(self.pdf(X[k], s)).sum())
        return total / n if average else total

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save as ``.npz`` with JSON metadata (``format_version`` 1)."""
        self._check_fitted()
        arrays: dict[str, np.ndarray] = {"n_samples": self.n_samples_,
                                         "atom_weight": self.atom_weight_}
        kinds = []
        for s, comp in enumerate(self.components_):
            parts = comp if isinstance(comp, tuple) else (comp,)
            kinds.append([p.kind for p in parts])
            for j, p in enumerate(parts):
                arrays.update(p.to_arrays(f"s{s}_{j}"))
        meta = {"params": {"estimator": self.estimator, "features": self.features,
                           "bandwidth": self.bandwidth, "hist_bins": int(self.hist_bins),
                           "hist_pseudocount": self.hist_pseudocount,
                           "min_samples_per_state": int(self.min_samples_per_state)},
                "components": kinds, "n_missing_score": self.n_missing_score_}
        if self.binning is not None:  # optional key: readers that predate it ignore it
            meta["binning"] = dict(self.binning)
        save_npz(path, "ObservationModel", arrays, meta, FORMAT_VERSION)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ObservationModel:
        """Load a model written by :meth:`save` (``allow_pickle=False``)."""
        name = str(path)
        a, meta = load_npz(path, "ObservationModel", FORMAT_VERSION)
        try:
            self = cls(**meta["params"])
            self._check_params()
            kinds = meta["components"]
            self.n_missing_score_ = int(meta["n_missing_score"])
            if len(kinds) != 3:
                raise ValueError("need 3 states")
            comps: list[Any] = []
            for s, ks in enumerate(kinds):
                parts = tuple(_KINDS[k].from_arrays(a, f"s{s}_{j}", name)
                              for j, k in enumerate(ks))
                if len(parts) != self.n_features:
                    raise ValueError(f"state {s}: {len(parts)} parts for {self.features!r}")
                comps.append(parts if self.n_features == 2 else parts[0])
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ModelValidationError):
                raise
            raise ModelValidationError(f"{name}: bad ObservationModel data ({exc})") from None
        self.n_samples_ = _need(a, "n_samples", (3,), name, integer=True, lo=0)
        self.atom_weight_ = _need(a, "atom_weight", (3,), name).astype(np.float64)
        self.components_ = comps
        binning = meta.get("binning")
        if binning is not None:
            try:
                self.set_binning(binning["n_score_bins"], binning.get("n_min_bins"))
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelValidationError(f"{name}: bad 'binning' metadata {binning!r} "
                                           f"({exc})") from None
        return self

    def describe(self) -> dict[str, Any]:
        """Plain summary (per state: n, and the Beta parameters or bandwidths)."""
        self._check_fitted()
        out: dict[str, Any] = {"estimator": self.estimator, "features": self.features,
                               "n_missing_score": self.n_missing_score_}
        for s, comp in enumerate(self.components_):
            parts = comp if isinstance(comp, tuple) else (comp,)
            d: dict[str, Any] = {"n": int(self.n_samples_[s])}
            if self.n_features == 2:
                d["atom_weight"] = float(self.atom_weight_[s])
            for j, p in enumerate(parts):
                key = "score" if j == 0 else "pair"
                if isinstance(p, _Beta1D):
                    d[key] = {"a": p.a, "b": p.b}
                elif isinstance(p, _Beta2D):
                    d[key] = {"a": p.x.a, "b": p.x.b, "a_min": p.y.a, "b_min": p.y.b}
                elif isinstance(p, _KDE1D):
                    d[key] = {"bandwidth": p.h}
                elif isinstance(p, _KDE2D):
                    d[key] = {"bandwidth": [p.hx, p.hy]}
                else:
                    d[key] = {"bins": int(getattr(p, "p", getattr(p, "P", np.zeros(1))).shape[0])}
            out[STATE_NAMES[s]] = d
        return out
