"""Cost/accuracy metrics for routers.

Notation: a router operating point has accuracy ``A`` and cost ``c``, the strong tokens it
spends as a fraction of what the always-strong policy spends on the same queries (so the
always-cheap policy is at ``c = 0`` and always-strong at ``c = 1``).  ``A_w`` and ``A_s`` are
the always-cheap (weak) and always-strong accuracies.

* **Performance gap recovered** ``PGR(A) = (A - A_w) / (A_s - A_w)`` (RouteLLM, Ong et al.
  2024, arXiv:2406.18665, Sec. 5); PGR may exceed 1 (step-level routing can beat the
  strong model alone).
* **Pareto frontier** of a family of operating points: the points not dominated by another
  point with lower-or-equal cost and higher-or-equal accuracy (one strictly), sorted by
  cost; on the frontier accuracy strictly increases with cost.
* **Frontier curve** ``f(c)``: the frontier, *anchored at the always-cheap point* ``(0,
  PGR 0)`` (a router can always fall back to the cheap model), linearly interpolated
  between consecutive frontier points and held constant after the last one (a larger
  budget can always be left unspent).  All curve metrics below are computed on ``f``.
* **CPT(x)** (call-performance threshold, RouteLLM): the minimum cost at which the router
  recovers a fraction ``x`` of the gap, ``CPT(x) = min{c : f(c) >= x}``; NaN if it never
  does.  RouteLLM's ``evaluate.py`` computes the same quantity with ``np.interp`` on the
  raw curve; for a monotone curve the two agree.
* **ΔIBC** (incremental benefit per cost, AutoMix, Aggarwal et al. 2023,
  arXiv:2310.12963, Sec. 5.2): ``IBC_M = (A_M - A_w) / (c_M - c_w)`` and ``IBC_base =
  (A_s - A_w) / (c_s - c_w)`` (the slope of the line from the cheap to the strong model);
  ``ΔIBC(M) = 100 (IBC_M - IBC_base) / IBC_base`` in percent.  TRIM (Kapoor et al., ICLR
  2026) reports ΔIBC averaged over PGR levels on the cost/accuracy frontier; we take the
  100 levels ``x_k = k / 100``, k = 1..100, evaluate the frontier at ``c_k = CPT(x_k)``,
  where ``IBC / IBC_base = x_k / c_k`` (with ``c_w = 0, c_s = 1``), and average
  ``100 (x_k / c_k - 1)`` over the levels the router reaches (their number is reported; a
  level never reached contributes nothing).  The paper's exact text could not be
  retrieved through the project's search tool; this follows AutoMix's IBC definition
  applied at the frontier point of each PGR level.  The paper prints ΔIBC as the ratio
  ``(IBC_M - IBC_base) / IBC_base`` (e.g. its 5.86), which is ``delta_ibc_ratio`` here:
  the percent divided by 100.
* **APGR** (average performance gap recovered, RouteLLM): the mean of PGR over the cost
  axis, ``APGR = ∫_0^1 f(c) dc``.  RouteLLM computes it by the trapezoid rule on its
  measured curve as ``(AUC - A_w) / (A_s - A_w)`` over the covered range of strong calls;
  we use the frontier curve ``f`` over ``c ∈ [0, 1]`` (identical for a monotone curve
  measured from 0 to 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "DEFAULT_CPT_LEVELS",
    "accuracy",
    "mean_strong_tokens",
    "cost_fraction",
    "pgr",
    "pareto_frontier",
    "frontier_curve",
    "cpt",
    "delta_ibc",
    "apgr",
    "curve_metrics",
]

DEFAULT_CPT_LEVELS = (0.5, 0.8, 0.95)
# PGR levels within this of the curve's maximum count as reached (floating-point rounding
# of (A - A_w) / (A_s - A_w) must not decide whether a level is reached)
_TOL = 1e-12


def accuracy(correct: ArrayLike) -> float:
    """Fraction of queries answered correctly, ``mean(correct)``."""
    c = np.asarray(correct, dtype=np.float64)
    if c.size == 0:
        raise ValueError("accuracy of an empty set of queries")
    return float(c.mean())


def mean_strong_tokens(strong_tokens: ArrayLike) -> float:
    """Mean number of strong-model tokens per query."""
    s = np.asarray(strong_tokens, dtype=np.float64)
    if s.size == 0:
        raise ValueError("mean of an empty set of queries")
    return float(s.mean())


def cost_fraction(strong_tokens: ArrayLike, always_strong_tokens: ArrayLike) -> float:
    """Strong tokens spent as a fraction of the always-strong policy's on the same queries:
    ``sum(strong_tokens) / sum(always_strong_tokens)``."""
    den = float(np.sum(always_strong_tokens))
    if den <= 0:
        raise ValueError("always-strong token total must be positive")
    return float(np.sum(strong_tokens)) / den


def pgr(acc: ArrayLike, acc_cheap: float, acc_strong: float) -> NDArray[np.float64] | float:
    """Performance gap recovered, ``(A - A_w) / (A_s - A_w)``."""
    gap = float(acc_strong) - float(acc_cheap)
    if not gap > 0:
        raise ValueError(f"PGR needs acc_strong > acc_cheap; got {acc_strong} <= {acc_cheap}")
    out = (np.asarray(acc, dtype=np.float64) - acc_cheap) / gap
    return float(out) if out.ndim == 0 else out


def pareto_frontier(cost: ArrayLike, acc: ArrayLike) -> NDArray[np.int64]:
    """Indices of the Pareto-optimal points (minimise cost, maximise accuracy), by cost.

    A point is kept iff no other point has cost <= and accuracy >= with one strict; among
    exact duplicates the first is kept.  NaN points are ignored.
    """
    c = np.asarray(cost, dtype=np.float64)
    a = np.asarray(acc, dtype=np.float64)
    if c.shape != a.shape or c.ndim != 1:
        raise ValueError(f"cost and acc must be 1-D of equal length; got {c.shape} and {a.shape}")
    ok = np.flatnonzero(~(np.isnan(c) | np.isnan(a)))
    # cost ascending, then accuracy descending: a point is on the frontier iff its
    # accuracy beats every cheaper (or equally cheap, listed earlier) point
    order = ok[np.lexsort((-a[ok], c[ok]))]
    keep = []
    best = -math.inf
    for i in order:
        if a[i] > best:
            keep.append(i)
            best = a[i]
    return np.asarray(keep, dtype=np.int64)


def frontier_curve(cost: ArrayLike, pgr_values: ArrayLike) -> tuple[NDArray[np.float64],
                                                                    NDArray[np.float64]]:
    """Knots ``(c, f)`` of the frontier curve: the Pareto frontier of the points anchored at
    the always-cheap point ``(0, 0)``.  ``f`` strictly increases; the curve is linear
    between knots and constant after the last one."""
    c = np.concatenate(([0.0], np.asarray(cost, dtype=np.float64)))
    p = np.concatenate(([0.0], np.asarray(pgr_values, dtype=np.float64)))
    idx = pareto_frontier(c, p)
    return c[idx], p[idx]


def _cpt_from_knots(xc: NDArray[np.float64], yp: NDArray[np.float64], level: float) -> float:
    if level <= yp[0]:
        return float(xc[0])
    if level > yp[-1] + _TOL:
        return math.nan
    if level >= yp[-1]:  # reached up to rounding (e.g. (0.7 - 0.6) / 0.2 = 0.4999...)
        return float(xc[-1])
    k = int(np.searchsorted(yp, level))  # yp[k-1] < level <= yp[k]
    x0, x1, y0, y1 = xc[k - 1], xc[k], yp[k - 1], yp[k]
    return float(x0 + (level - y0) / (y1 - y0) * (x1 - x0))


def cpt(cost: ArrayLike, acc: ArrayLike, level: float, *, acc_cheap: float,
        acc_strong: float) -> float:
    """Call-performance threshold: the minimum cost fraction at which the frontier curve
    reaches PGR ``level`` (e.g. 0.5 for CPT(50%)); NaN if never."""
    xc, yp = frontier_curve(cost, pgr(acc, acc_cheap, acc_strong))
    return _cpt_from_knots(xc, yp, float(level))


def delta_ibc(cost: ArrayLike, acc: ArrayLike, *, acc_cheap: float, acc_strong: float,
              n_levels: int = 100) -> tuple[float, int]:
    """ΔIBC in percent averaged over the PGR levels ``k / n_levels`` (k = 1..n_levels).

    Returns ``(mean ΔIBC, number of levels reached)``; ``(nan, 0)`` if none is reached.
    See the module docstring for the definition.
    """
    if n_levels < 1:
        raise ValueError(f"n_levels must be >= 1; got {n_levels}")
    xc, yp = frontier_curve(cost, pgr(acc, acc_cheap, acc_strong))
    vals = []
    for k in range(1, n_levels + 1):
        x = k / n_levels
        c = _cpt_from_knots(xc, yp, x)
        if not math.isnan(c) and c > 0:
            vals.append(100.0 * (x / c - 1.0))
    if not vals:
        return math.nan, 0
    return float(np.mean(vals)), len(vals)


def apgr(cost: ArrayLike, acc: ArrayLike, *, acc_cheap: float, acc_strong: float) -> float:
    """Average PGR over the cost axis, ``∫_0^1 f(c) dc`` on the frontier curve ``f``."""
    xc, yp = frontier_curve(cost, pgr(acc, acc_cheap, acc_strong))
    if xc[-1] < 1.0:
        xc = np.append(xc, 1.0)
        yp = np.append(yp, yp[-1])
    elif xc[-1] > 1.0:
        y1 = float(np.interp(1.0, xc, yp))
        m = xc < 1.0
        xc = np.append(xc[m], 1.0)
        yp = np.append(yp[m], y1)
    return float(np.sum(0.5 * (yp[1:] + yp[:-1]) * np.diff(xc)))


def curve_metrics(cost: ArrayLike, acc: ArrayLike, *, acc_cheap: float, acc_strong: float,
                  cpt_levels: Sequence[float] = DEFAULT_CPT_LEVELS,
                  n_levels: int = 100) -> dict[str, float]:
    """All curve metrics of one router family: ``cpt_50`` etc. (cost fractions),
    ``delta_ibc`` (percent), ``delta_ibc_ratio`` (the same as a ratio, the paper's unit),
    ``delta_ibc_levels`` (levels reached), ``apgr``,
    ``max_pgr`` and ``max_accuracy``."""
    out: dict[str, float] = {}
    for lv in cpt_levels:
        out[f"cpt_{round(100 * lv):d}"] = cpt(cost, acc, lv, acc_cheap=acc_cheap,
                                              acc_strong=acc_strong)
    d, nl = delta_ibc(cost, acc, acc_cheap=acc_cheap, acc_strong=acc_strong,
                      n_levels=n_levels)
    out["delta_ibc"] = d
    out["delta_ibc_ratio"] = d / 100.0
    out["delta_ibc_levels"] = float(nl)
    out["apgr"] = apgr(cost, acc, acc_cheap=acc_cheap, acc_strong=acc_strong)
    a = np.asarray(acc, dtype=np.float64)
    out["max_accuracy"] = float(np.nanmax(a))
    out["max_pgr"] = float(pgr(out["max_accuracy"], acc_cheap, acc_strong))
    return out
