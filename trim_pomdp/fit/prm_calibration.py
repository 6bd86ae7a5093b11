"""Calibration diagnostics of a PRM on labelled traces.

For every step with a PRM score ``x_i`` and a known target ``y_i`` (1 = correct):

* AUROC: probability that a random correct step outscores a random wrong one (ties count
  1/2), via the Mann-Whitney statistic with mid-ranks:
  ``AUROC = (R_+ - n_+ (n_+ + 1) / 2) / (n_+ n_-)``;
* expected calibration error with ``n_bins`` equal-width bins B_b on [0, 1]:
  ``ECE = sum_b |B_b| / n * |mean(y in B_b) - mean(x in B_b)|``;
* Brier score ``mean((x_i - y_i)^2)``.

The target is the step's own label (``target="label"``), or "the prefix up to this step is
correct", i.e. hidden state S0 vs S1/S2 (``target="state"``), which is what most PRMs are
trained to predict.  With first-error annotation both give the same targets on the
labelled steps; ``"state"`` also uses the unlabelled steps after the first error (S1, target 0).

Plots (PNG) use matplotlib, imported only inside the plotting functions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp.errors import InsufficientDataError
from trim_pomdp.steps import STATE_NAMES
from trim_pomdp.traces.records import Trace
from trim_pomdp.traces.table import TraceTable, as_table

__all__ = ["CalibrationReport", "calibration_report", "auroc", "expected_calibration_error",
           "brier_score", "plot_reliability", "plot_state_histograms"]



def _xy(scores: ArrayLike, y: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != t.shape:
        raise ValueError(f"scores and y must have the same length; got {x.size} and {t.size}")
    if np.any(~((x >= 0) & (x <= 1))):
        raise ValueError("scores must lie in [0, 1] (no NaN)")
    if np.any((t != 0) & (t != 1)):
        raise ValueError("y must be 0 or 1")
    return x, t


def auroc(scores: ArrayLike, y: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for binary ``y`` (module docstring)."""
    x, t = _xy(scores, y)
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise InsufficientDataError(
            f"AUROC needs both classes; got {n_pos} correct and {n_neg} wrong steps")
    r = _midranks(x)
    return float((r[t == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _midranks(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks with ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new_group = np.r_[True, xs[1:] != xs[:-1]]
    gid = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], xs.size]  # exclusive
    avg = (starts + 1 + ends) / 2.0     # mean of ranks starts+1 .. ends
    r = np.empty(x.size)
    r[order] = avg[gid]
    return r


def _bins(x: NDArray[np.float64], n_bins: int) -> NDArray[np.int64]:
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}")
    return np.minimum((x * n_bins).astype(np.int64), n_bins - 1)


def expected_calibration_error(scores: ArrayLike, y: ArrayLike, n_bins: int = 10) -> float:
    """ECE with ``n_bins`` equal-width bins (module docstring)."""
    x, t = _xy(scores, y)
    if x.size == 0:
        raise InsufficientDataError("ECE needs at least one scored step")
    b = _bins(x, n_bins)
    sx = np.bincount(b, weights=x, minlength=n_bins)
    sy = np.bincount(b, weights=t, minlength=n_bins)
    return float(np.abs(sy - sx).sum() / x.size)


def brier_score(scores: ArrayLike, y: ArrayLike) -> float:
    """Mean squared error of the scores as probabilities of ``y = 1``."""
    x, t = _xy(scores, y)
    if x.size == 0:
        raise InsufficientDataError("Brier score needs at least one scored step")
    return float(np.mean((x - t) ** 2))


@dataclass
class CalibrationReport:
    """PRM calibration on labelled traces (see :func:`calibration_report`).

    ``bin_*`` arrays describe the reliability diagram (NaN for empty bins);
    ``state_hist[s]`` counts the scores of steps in hidden state s over ``hist_edges``.
    """

    target: str
    n: int
    n_positive: int
    auroc: float
    ece: float
    brier: float
    bin_edges: NDArray[np.float64]
    bin_count: NDArray[np.int64]
    bin_mean_score: NDArray[np.float64]
    bin_accuracy: NDArray[np.float64]
    hist_edges: NDArray[np.float64]
    state_hist: NDArray[np.int64]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def clean(a: NDArray[Any]) -> list[Any]:
            return [None if (isinstance(v, float) and np.isnan(v)) else v for v in a.tolist()]

        return {"target": self.target, "n": self.n, "n_positive": self.n_positive,
                "auroc": self.auroc, "ece": self.ece, "brier": self.brier,
                "bin_edges": self.bin_edges.tolist(), "bin_count": self.bin_count.tolist(),
                "bin_mean_score": clean(self.bin_mean_score),
                "bin_accuracy": clean(self.bin_accuracy),
                "hist_edges": self.hist_edges.tolist(), "state_hist": self.state_hist.tolist()}


def calibration_report(traces: Sequence[Trace] | TraceTable, *, n_bins: int = 10,
                       target: str = "label", hist_bins: int = 20) -> CalibrationReport:
    """AUROC, ECE, Brier, reliability bins and per-state score histograms.

    Uses every step with a PRM score and a known target (``"label"``: the step's label;
    ``"state"``: hidden state known, target S0).

    Raises
    ------
    InsufficientDataError
        No scored step with a known target, or only one class.
    """
    if target not in ("label", "state"):
        raise ValueError(f"target must be 'label' or 'state'; got {target!r}")
    table = as_table(traces)
    scored = ~np.isnan(table.score)
    if target == "label":
        known = scored & (table.label >= 0)
        y = (table.label == 1).astype(np.float64)
    else:
        known = scored & (table.state >= 0)
        y = (table.state == 0).astype(np.float64)
    x, t = table.score[known], y[known]
    if x.size == 0:
        raise InsufficientDataError(
            "calibration_report: no step has both a PRM score and a known "
            f"{'label' if target == 'label' else 'hidden state'}")
    b = _bins(x, n_bins)
    cnt = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_x = np.bincount(b, weights=x, minlength=n_bins) / cnt
        acc = np.bincount(b, weights=t, minlength=n_bins) / cnt
    hist_edges = np.linspace(0.0, 1.0, hist_bins + 1)
    state_hist = np.zeros((3, hist_bins), dtype=np.int64)
    for s in range(3):
        xs = table.score[scored & (table.state == s)]
        state_hist[s] = np.bincount(_bins(xs, hist_bins), minlength=hist_bins)
    return CalibrationReport(
        target=target, n=int(x.size), n_positive=int(t.sum()), auroc=auroc(x, t),
        ece=expected_calibration_error(x, t, n_bins), brier=brier_score(x, t),
        bin_edges=np.linspace(0.0, 1.0, n_bins + 1), bin_count=cnt.astype(np.int64),
        bin_mean_score=mean_x, bin_accuracy=acc, hist_edges=hist_edges, state_hist=state_hist)


def _figure(figsize: tuple[float, float]) -> Any:
    # The object-oriented API: no pyplot state, no GUI backend needed.
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=100)


def plot_reliability(report: CalibrationReport, path: str | os.PathLike[str]) -> Path:
    """Reliability diagram (accuracy vs mean score per bin, bar width ~ count) as PNG."""
    fig = _figure((5.0, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="perfect calibration")
    ok = report.bin_count > 0
    centres = 0.5 * (report.bin_edges[:-1] + report.bin_edges[1:])
    width = np.diff(report.bin_edges)
    ax.bar(centres[ok], report.bin_accuracy[ok], width=width[ok] * 0.9, alpha=0.35,
           color="C0", edgecolor="C0", label="accuracy per score bin")
    ax.plot(report.bin_mean_score[ok], report.bin_accuracy[ok], "o-", color="C1",
            label="(mean score, accuracy)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("PRM score")
    ax.set_ylabel(f"fraction correct ({report.target})")
    ax.set_title(f"AUROC {report.auroc:.3f}  ECE {report.ece:.3f}  Brier {report.brier:.3f}\n"
                 f"n = {report.n} steps")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def plot_state_histograms(report: CalibrationReport, path: str | os.PathLike[str]) -> Path:
    """Normalised histograms of PRM scores per hidden state (S0, S1, S2) as PNG."""
    fig = _figure((6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    centres = 0.5 * (report.hist_edges[:-1] + report.hist_edges[1:])
    width = np.diff(report.hist_edges)
    for s in range(3):
        c = report.state_hist[s]
        if c.sum() == 0:
            continue
        ax.step(np.r_[report.hist_edges[0], centres + width / 2],
                np.r_[0, c / c.sum() / width], where="pre", color=f"C{s}",
                label=f"{STATE_NAMES[s]} (n = {int(c.sum())})")
    ax.set_xlim(0, 1)
    ax.set_xlabel("PRM score")
    ax.set_ylabel("density")
    ax.set_title("PRM scores per hidden state")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path
