"""Choosing the number of PRM score bins of a TRIM model by its solved value.

The router sees a PRM score only through its bin, so coarse bins throw information away;
fine bins cost solve time (linear in the number of observations).  How much a binning
loses is measured where it matters, in the value of the solved POMDP:

    V_n(lambda) = max_policy  P(success) - lambda * E[strong tokens]

for the model built with ``n`` equal-width score bins.  A refinement of the bins can only
add information, so ``V_n`` rises towards the value of the continuous score as ``n``
grows (up to the point-based solver's gap).  Routing gains over never regenerating, whose
value ``V_cheap = E[p_w^L]`` (``L`` the trace length under the hazard) is the same for
every binning, so the loss is judged against that gain:

    loss_n(lambda) = V_ref(lambda) - V_n(lambda)
                  <=  max(rel_tol * (V_ref(lambda) - V_cheap), abs_tol)

at every probe lambda (``abs_tol``, 2e-4 of success probability by default, so that at a
large lambda, where the gain itself is a few 1e-4, a loss far below any evaluation's noise
does not force more bins), with ``V_ref`` the model with ``reference`` bins.  The chosen
count is the smallest candidate that passes (candidates are tried in increasing order
and the search stops there).  Probe lambdas: every 6th value of the default 32-lambda
grid, from ``lambda = 0`` (the accuracy plateau) to ``0.79 / c_bar`` (next to never
regenerating).

Measured (``nice python benchmarks/bench_defaults.py``, KDE observation model fitted on
4,000 training problems): the rule picks 12 bins on the default scenario, 24 on
``noisy_prm``, and 16, 16 and 32 on the deployment worlds of ``drift_noisy``,
``drift_overconfident`` and ``drift_shifted`` (fitting and choosing together took
0.7-1.7 s at load ~5, fitting alone 0.5-1.1 s).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["BinChoice", "choose_n_bins", "choose_score_bins", "never_regenerate_value",
           "DEFAULT_CANDIDATES"]

#: score-bin counts tried, smallest first
DEFAULT_CANDIDATES: tuple[int, ...] = (6, 8, 12, 16, 24, 32, 48)
DEFAULT_REFERENCE = 64
DEFAULT_REL_TOL = 0.01
DEFAULT_ABS_TOL = 2e-4


@dataclass(frozen=True)
class BinChoice:
    """Result of :func:`choose_n_bins`.

    Attributes
    ----------
    n_bins : int
        The chosen count.
    met : bool
        False when no candidate met the tolerance (then ``n_bins`` is the largest one).
    probe_lambdas : ndarray
    reference : int
        Bins of the reference model, and its values ``reference_values`` at the probes.
    cheap_value : float
        ``V_cheap``, the value of never regenerating.
    values : dict
        ``{n: values at the probe lambdas}`` for every candidate solved.
    rel_tol, abs_tol : float
    """

    n_bins: int
    met: bool
    probe_lambdas: NDArray[np.float64]
    reference: int
    reference_values: NDArray[np.float64]
    cheap_value: float
    rel_tol: float
    abs_tol: float
    values: dict[int, NDArray[np.float64]] = field(default_factory=dict)

    def worst_loss_ratio(self, n: int) -> float:
        """``max over probes of loss_n / max(rel_tol * gain, abs_tol)`` for a solved
        candidate ``n``: <= 1 iff ``n`` meets the tolerance."""
        allowed = np.maximum(self.rel_tol * (self.reference_values - self.cheap_value),
                             self.abs_tol)
        return float(np.max((self.reference_values - self.values[n]) / allowed))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able summary (what ``trim-pomdp fit`` writes to summary.json)."""
        return {"n_score_bins": self.n_bins, "met_tolerance": self.met,
                "rule": "smallest count whose solved value loses at most max(rel_tol x "
                        "the routing gain over never regenerating, abs_tol) at every probe "
                        "lambda",
                "rel_tol": self.rel_tol, "abs_tol": self.abs_tol, "reference_bins": self.reference,
                "probe_lambdas": [float(v) for v in self.probe_lambdas],
                "cheap_value": self.cheap_value,
                "reference_values": [float(v) for v in self.reference_values],
                "candidates": {str(n): {"values": [float(x) for x in v],
                                        "worst_loss_ratio": self.worst_loss_ratio(n)}
                               for n, v in self.values.items()}}


def never_regenerate_value(model: Any) -> float:
    """``E[p_w^L]``: P(success) of never regenerating, with ``P(L = t) = h(t) prod_{u<t}
    (1 - h(u))`` under the model's hazard (the value of every lambda's cheapest policy)."""
    hz = np.asarray(model.hazard, dtype=np.float64)
    reach = np.concatenate([[1.0], np.cumprod(1.0 - hz)[:-1]])
    p_len = reach * hz
    t = np.arange(1, hz.size + 1)
    return float(p_len @ float(model.p_w) ** t)


def choose_n_bins(build: Callable[[int], Any], *,
                  candidates: Sequence[int] = DEFAULT_CANDIDATES,
                  reference: int = DEFAULT_REFERENCE, rel_tol: float = DEFAULT_REL_TOL,
                  abs_tol: float = DEFAULT_ABS_TOL,
                  probe_lambdas: Sequence[float] | None = None,
                  **solver_opts: Any) -> BinChoice:
    """The smallest score-bin count whose solved value is within ``max(rel_tol * gain,
    abs_tol)`` of a ``reference``-bin model's at every probe lambda (module docstring).

    Parameters
    ----------
    build : callable
        ``build(n)`` returns the :class:`~trim_pomdp.routing.model.TrimModel` with ``n``
        score bins (everything else fixed).
    candidates : sequence of int
        Counts to try, tried in increasing order.
    reference : int
        Bins of the reference model (more than any candidate).
    rel_tol, abs_tol : float
        Largest value loss allowed: ``rel_tol`` of ``V_ref - V_cheap``, or ``abs_tol``
        (success probability) where that is larger.
    probe_lambdas : sequence of float, optional
        Default: every 6th value of ``default_lambdas(reference model, 32)``.
    solver_opts
        Passed to :func:`~trim_pomdp.routing.bank.solve_grid`.
    """
    from trim_pomdp.routing.bank import default_lambdas, solve_grid

    cands = sorted({int(n) for n in candidates})
    if not cands or cands[0] < 1:
        raise ValueError(f"candidates must be positive integers; got {list(candidates)!r}")
    if not isinstance(reference, (int, np.integer)) or reference <= cands[-1]:
        raise ValueError(f"reference ({reference!r}) must be an integer above every "
                         f"candidate (largest {cands[-1]})")
    if not (0.0 <= rel_tol < 1.0):
        raise ValueError(f"rel_tol must be in [0, 1); got {rel_tol!r}")
    if not (0.0 <= abs_tol < 1.0):
        raise ValueError(f"abs_tol must be in [0, 1); got {abs_tol!r}")
    ref_model = build(int(reference))
    probes = (default_lambdas(ref_model, 32)[::6] if probe_lambdas is None
              else np.asarray(probe_lambdas, dtype=np.float64))

    def values(model: Any) -> NDArray[np.float64]:
        return np.array([p.value_b0 for p in solve_grid(model, probes, **solver_opts)])

    v_ref = values(ref_model)
    v_cheap = never_regenerate_value(ref_model)
    allowed = np.maximum(rel_tol * (v_ref - v_cheap), abs_tol)
    solved: dict[int, NDArray[np.float64]] = {}
    for n in cands:
        v = values(build(n))
        solved[n] = v
        if np.all(v_ref - v <= allowed):
            return BinChoice(n, True, probes, int(reference), v_ref, v_cheap, float(rel_tol),
                             float(abs_tol), solved)
    return BinChoice(cands[-1], False, probes, int(reference), v_ref, v_cheap, float(rel_tol),
                     float(abs_tol), solved)


def choose_score_bins(transition: Any, observation: Any, *, n_min_bins: int | None = None,
                      n_token_bins: int = 4, **kwargs: Any) -> BinChoice:
    """:func:`choose_n_bins` for fitted models: ``build(n) = TrimModel(transition,
    observation, n_score_bins=n, n_min_bins=n_min_bins, n_token_bins=n_token_bins)``.
    ``kwargs`` go to :func:`choose_n_bins`.

    A histogram observation model (``estimator="hist"``, e.g. the outcome EM's) of ``k``
    bins is constant on each of its bins, so ``k`` equal bins carry all of its
    information: ``k`` joins the candidates and the reference is the smallest multiple of
    ``k`` that is at least ``DEFAULT_REFERENCE`` (an exact refinement)."""
    from trim_pomdp.routing.model import TrimModel

    if getattr(observation, "estimator", None) == "hist":
        k = int(observation.hist_bins)
        cands = sorted(set(kwargs.pop("candidates", DEFAULT_CANDIDATES)) | {k})
        kwargs["candidates"] = cands
        kwargs.setdefault("reference", k * max(1, -(-max(DEFAULT_REFERENCE, cands[-1] + 1)
                                                   // k)))

    def build(n: int) -> Any:
        return TrimModel(transition, observation, n_score_bins=n, n_min_bins=n_min_bins,
                         n_token_bins=n_token_bins)

    return choose_n_bins(build, **kwargs)
