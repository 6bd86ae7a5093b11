"""Online refit (issue 15, item 2): re-estimate the observation model from routed traces.

Routed traces carry PRM scores, the router's decisions and the checked final answers, but
no step labels.  :func:`refit_observation` re-estimates the per-state score histograms by
the outcome EM of :class:`~trim_pomdp.outcome.OutcomeEM` with the **transition model held**
(``p_w``, ``p_s``, hazard and token bins stay the fitted ones: a PRM drift changes the
scores, not how often the models are right), at the model's own score bins, and rebuilds the
:class:`~trim_pomdp.trim.TrimModel`; :func:`refit_bank` re-solves the same lambda grid on it
(milliseconds per lambda), ready to swap into routers between episodes.

Traces are in the serving format (:mod:`trim_pomdp.serving`): a regenerated step has
``writer="strong"``, ``prm_score=None`` and the cheap draft's score in
``extra["draft_prm_score"]``.  :func:`served_format` converts the simulator's
:func:`~trim_pomdp.simulator.routed_traces` (which keep the draft score in ``prm_score``).

Failure is never silent: no scored step, no correct or no wrong outcome is an
:class:`~trim_pomdp.errors.InsufficientDataError`; an EM that does not converge within
``max_iter`` is a :class:`RefitError` (the caller keeps its bank; :class:`RefitResult`
records what changed when it succeeds).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trim_pomdp.errors import ModelValidationError, TrimPomdpError
from trim_pomdp.outcome import OutcomeEM

__all__ = ["RefitError", "RefitResult", "refit_observation", "refit_bank", "served_format"]


class RefitError(TrimPomdpError, RuntimeError):
    """The refit EM did not converge; nothing was swapped."""


class _HeldEM(OutcomeEM):
    """OutcomeEM with ``p_w`` held at a given value (``p_s`` is held through ``p_s=``):
    the M-step's ``kw / nw`` is replaced by the held value, so only the histograms move.
    With ``tie_wrong`` the S1 and S2 histograms are one (pooled expected counts)."""

    def __init__(self, p_w: float, tie_wrong: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        self._held_pw = float(p_w)
        self._tie = bool(tie_wrong)

    def _init(self, ep):  # type: ignore[override]
        _, p_s, hist = super()._init(ep)
        return self._held_pw, p_s, hist

    def _stats(self, ep, post, r):  # type: ignore[override]
        kw, nw, ks, ns, counts = super()._stats(ep, post, r)
        if self._tie:
            counts = counts.copy()
            counts[1] = counts[2] = counts[1] + counts[2]
        return self._held_pw * nw, nw, ks, ns, counts


@dataclass(frozen=True)
class RefitResult:
    """What a refit changed: the old and new observation matrices, the EM's summary and
    the total-variation distance per hidden state (S0, S1, S2)."""

    model: Any
    old_obs_matrix: np.ndarray
    new_obs_matrix: np.ndarray
    em: dict[str, Any]
    n_traces: int

    @property
    def tv_distance(self) -> list[float]:
        return [float(0.5 * np.abs(a - b).sum())
                for a, b in zip(self.old_obs_matrix, self.new_obs_matrix, strict=True)]

    def summary(self) -> dict[str, Any]:
        return {"n_traces": self.n_traces, "tv_distance": self.tv_distance,
                "old_obs_matrix": self.old_obs_matrix.tolist(),
                "new_obs_matrix": self.new_obs_matrix.tolist(), "em": self.em}


def refit_observation(model: Any, traces: Sequence[Any], *, pseudocount: float = 0.5,
                      max_iter: int = 500, tol: float = 1e-9,
                      tie_wrong: bool = True) -> RefitResult:
    """Outcome-EM estimate of the observation matrix with the transition model held.

    Parameters
    ----------
    model : TrimModel
        The model in use (equal-width score bins, no min feature).
    traces : sequence of Trace
        Routed traces in the serving format, with ``final_correct``.
    tie_wrong : bool
        Estimate one score histogram for S1 and S2 (pooled).  Without step labels the
        position of the first wrong step is identified only through the scores, so with a
        weak PRM the separate S1 and S2 rows are poorly determined (measured: on
        ``drift_noisy`` the untied refit lost half the gain, ``docs/readme_drift.md``);
        the tied refit keeps S0 against "wrong", which is what the routing value rests on.

    Raises
    ------
    ModelValidationError
        The model's observations are not equal-width score bins alone.
    InsufficientDataError
        No scored step, or no correct / no wrong outcome.
    RefitError
        The EM did not converge within ``max_iter`` iterations.
    """
    from trim_pomdp.trim import TrimModel

    nb = int(model.n_score_bins)
    if model.uses_min or not np.allclose(model.score_edges, np.arange(1, nb) / nb):
        raise ModelValidationError("refit_observation needs a model with equal-width score "
                                   "bins and no min-previous-score feature")
    em = _HeldEM(model.p_w, tie_wrong=tie_wrong, n_bins=nb, p_s=model.p_s, pseudocount=pseudocount,
                 max_iter=max_iter, tol=tol).fit(list(traces))
    if not em.converged_:
        raise RefitError(f"refit EM did not converge in {em.n_iter_} iterations on "
                         f"{em.n_traces_} traces; the bank was left unchanged")
    obs = em.hist_ / em.hist_.sum(axis=1, keepdims=True)
    new = TrimModel.from_parameters(
        p_w=model.p_w, p_s=model.p_s, hazard=model.hazard, obs_matrix=obs,
        token_probs=model.token_probs, strong_tokens=model.strong_tokens,
        token_edges=model.token_edges, score_edges=model.score_edges,
        max_steps=model.max_steps)
    return RefitResult(model=new, old_obs_matrix=np.array(model.obs_matrix),
                       new_obs_matrix=np.array(new.obs_matrix), em=em.summary(),
                       n_traces=em.n_traces_)


def refit_bank(bank: Any, traces: Sequence[Any], **kw: Any) -> tuple[Any, RefitResult]:
    """:func:`refit_observation` then :func:`~trim_pomdp.trim.solve_grid` on the bank's
    lambdas.  Returns ``(new_bank, result)``."""
    from trim_pomdp.trim import solve_grid

    res = refit_observation(bank.model, traces, **kw)
    return solve_grid(res.model, np.asarray(bank.lambdas)), res


def served_format(traces: Sequence[Any]) -> list[Any]:
    """The simulator's routed traces in the serving format: on a regenerated step the
    draft's score moves to ``extra["draft_prm_score"]`` and ``prm_score`` becomes None (the
    strong rewrite is not scored); step labels are dropped (a deployment has none)."""
    out = []
    for tr in traces:
        steps = []
        for st in tr.steps:
            extra = dict(st.extra or {})
            if extra.get("writer") == "strong":
                extra["draft_prm_score"] = st.prm_score
                steps.append(dataclasses.replace(st, prm_score=None, label=None, extra=extra))
            else:
                steps.append(dataclasses.replace(st, label=None, extra=extra))
        out.append(dataclasses.replace(tr, steps=steps))
    return out
