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
``"kde"`` (TRIM's choice), ``"beta"`` and ``"hist"``: the densities of
:mod:`trim_pomdp.fit._densities` (its docstring gives their maths).

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp._io import Artefact, _need
from trim_pomdp.errors import InsufficientDataError, ModelValidationError, NotFittedError
from trim_pomdp.fit._densities import (
    _KDE1D,
    _KDE2D,
    _KINDS,
    _Beta1D,
    _Beta2D,
    _Hist1D,
    _Hist2D,
    beta_mle,
)
from trim_pomdp.steps import STATE_NAMES
from trim_pomdp.traces.records import Trace
from trim_pomdp.traces.table import TraceTable, as_table

__all__ = ["ObservationModel", "observation_index", "score_bin", "beta_mle"]

FORMAT_VERSION = 1
#: the file format of :meth:`ObservationModel.save` (the path as given: no ``.npz`` is added)
_FORMAT = Artefact(kind="ObservationModel", version=FORMAT_VERSION, what="model .npz file",
                   suffix=False)
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
        [0, 1]), e.g. the ones :class:`trim_pomdp.fit.outcome.OutcomeEM` estimates.
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
            pdf: NDArray[np.float64] = comp.pdf(X)
            return pdf
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
        out: NDArray[np.float64] = Z / Z.sum(axis=1, keepdims=True)
        return out

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
        return _FORMAT.save(path, arrays, meta)  # the path as given

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ObservationModel:
        """Load a model written by :meth:`save` (``allow_pickle=False``)."""
        name = str(path)
        a, meta = _FORMAT.load(path)
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
