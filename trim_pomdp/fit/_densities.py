"""Densities on [0, 1] and [0, 1]^2 for the observation model
(:class:`~trim_pomdp.fit.observation.ObservationModel`): reflected Gaussian KDEs, Betas fitted
by maximum likelihood, and smoothed histograms, each with exact bin probabilities.

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
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trim_pomdp._io import _need
from trim_pomdp.errors import ModelValidationError

__all__ = ["beta_mle"]

_BETA_EPS = 1e-6
_G1 = 1024
_G2 = 256




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
