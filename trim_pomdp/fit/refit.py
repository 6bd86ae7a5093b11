"""Online refit: re-estimate the observation model from routed traces.

Routed traces carry PRM scores, the router's decisions and the checked final answers, but
no step labels.  :func:`refit_observation` re-estimates the per-state score histograms by
the outcome EM of :class:`~trim_pomdp.fit.outcome.OutcomeEM` with the **transition model held**
(``p_w``, ``p_s``, hazard and token bins stay the fitted ones: a PRM drift changes the
scores, not how often the models are right), at the model's own score bins, and rebuilds the
:class:`~trim_pomdp.routing.model.TrimModel`; :func:`refit_bank` re-solves the same lambda
grid on it
(milliseconds per lambda), ready to swap into routers between episodes.

Traces are in the serving format (:mod:`trim_pomdp.serving`): a regenerated step has
``writer="strong"``, ``prm_score=None`` and the cheap draft's score in
``extra["draft_prm_score"]``.  :func:`served_format` converts the simulator's
:func:`~trim_pomdp.simulation.synth_traces.routed_traces` (which keep the draft score in
``prm_score``).

Failure is never silent: no scored step, no correct or no wrong outcome is an
:class:`~trim_pomdp.errors.InsufficientDataError`; an EM that does not converge within
``max_iter`` is a :class:`RefitError` (the caller keeps its bank; :class:`RefitResult`
records what changed when it succeeds).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trim_pomdp.errors import ModelValidationError, RefitError
from trim_pomdp.fit.outcome import OutcomeEM

__all__ = ["RefitError", "RefitResult", "refit_observation", "refit_bank", "served_format",
           "lineage_key", "bank_key", "router_tag", "load_routed", "RoutedFile"]

_STATES = ("S0", "S1", "S2")


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


def rebin(hist: Any, old_edges: Any, new_edges: Any) -> np.ndarray:
    """Rows of ``P(score bin | state)`` at the bins of ``old_edges`` re-expressed at the bins
    of ``new_edges`` (both inner edges of a partition of [0, 1]), the mass of each old bin
    spread uniformly over it: ``new[j] = sum_i old[i] |B_i & B'_j| / |B_i|``.  Identity when
    the edges agree; used to compare a refit at other bins with the model it replaces."""
    h = np.atleast_2d(np.asarray(hist, dtype=np.float64))
    lo = np.concatenate([[0.0], np.asarray(old_edges, np.float64), [1.0]])
    hi = np.concatenate([[0.0], np.asarray(new_edges, np.float64), [1.0]])
    if lo.size == hi.size and np.array_equal(lo, hi):
        return h.copy()
    a0, a1 = lo[:-1, None], lo[1:, None]
    b0, b1 = hi[None, :-1], hi[None, 1:]
    overlap = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0.0, None)
    width = np.maximum(a1 - a0, 1e-300)
    return h @ (overlap / width)


@dataclass(frozen=True)
class RefitResult:
    """What a refit changed: the old and new observation matrices, the EM's summary, the
    log-likelihood of the routed traces under the old and the new observation model (same
    data, the new bins, transition held) and the total-variation distance per hidden state
    (S0, S1, S2).  When the refit chose other score bins (``n_bins``), the old matrix is
    compared at the new bins (:func:`rebin`); ``old_obs_matrix`` keeps it at its own."""

    model: Any
    old_obs_matrix: np.ndarray
    new_obs_matrix: np.ndarray
    em: dict[str, Any]
    n_traces: int
    loglik_before: float = float("nan")
    loglik_after: float = float("nan")
    old_on_new_bins: np.ndarray | None = None

    @property
    def _old(self) -> np.ndarray:
        return self.old_obs_matrix if self.old_on_new_bins is None else self.old_on_new_bins

    @property
    def tv_distance(self) -> list[float]:
        return [float(0.5 * np.abs(a - b).sum())
                for a, b in zip(self._old, self.new_obs_matrix, strict=True)]

    def per_bin(self) -> dict[str, dict[str, list[float]]]:
        """Per hidden state, the old and new ``P(score bin | state)`` (the old one at the new
        bins) and their difference."""
        return {st: {"old": a.tolist(), "new": b.tolist(), "delta": (b - a).tolist()}
                for st, a, b in zip(_STATES, self._old, self.new_obs_matrix, strict=True)}

    def summary(self) -> dict[str, Any]:
        return {"n_traces": self.n_traces, "tv_distance": self.tv_distance,
                "loglik_before": self.loglik_before, "loglik_after": self.loglik_after,
                "old_obs_matrix": self.old_obs_matrix.tolist(),
                "new_obs_matrix": self.new_obs_matrix.tolist(), "per_bin": self.per_bin(),
                "em": self.em}


def _to_equal_width(model: Any, traces: Sequence[Any]) -> list[Any]:
    """Scores replaced by the centre of their model bin in equal-width coordinates, so the
    EM's equal-width histogram of ``n_score_bins`` bins *is* the model's binning (bin
    ``k = #{edges <= score}``, as the router's kernel counts)."""
    edges = np.asarray(model.score_edges, dtype=np.float64)
    nb = int(model.n_score_bins)

    def centre(x: Any) -> Any:
        if x is None or isinstance(x, bool) or not isinstance(x, (int, float)):
            return x
        return (int(np.searchsorted(edges, float(x), side="right")) + 0.5) / nb

    out = []
    for tr in traces:
        steps = []
        for st in tr.steps:
            extra = st.extra
            if extra and extra.get("draft_prm_score") is not None:
                extra = dict(extra)
                extra["draft_prm_score"] = centre(extra["draft_prm_score"])
            steps.append(dataclasses.replace(st, prm_score=centre(st.prm_score), extra=extra))
        out.append(dataclasses.replace(tr, steps=steps))
    return out


def _loglik(em: OutcomeEM, traces: Sequence[Any], p_w: float, p_s: float,
            hist: np.ndarray) -> float:
    """Log-likelihood of ``traces`` (scores and outcomes) under ``(p_w, p_s, hist)``, the
    sum over traces of ``log sum_k L(k)`` as the EM computes it."""
    from trim_pomdp.fit.outcome import _Episodes

    ep = _Episodes([tr for tr in traces if tr.steps], int(hist.shape[1]))
    L, _ = em._loglik_k(ep, p_w, p_s, np.maximum(np.asarray(hist, np.float64), 1e-12))
    mx = L.max(axis=1, keepdims=True)
    return float((mx[:, 0] + np.log(np.exp(L - mx).sum(axis=1))).sum())


#: ``n_bins="auto"`` tries no more score bins than one per this many scored steps.
MIN_STEPS_PER_BIN = 20


def refit_observation(model: Any, traces: Sequence[Any], *, pseudocount: float = 0.5,
                      max_iter: int = 500, tol: float = 1e-9,
                      tie_wrong: bool = True, n_bins: int | str | None = None) -> RefitResult:
    """Outcome-EM estimate of the observation matrix with the transition model held.

    The EM maximises the likelihood of the routed traces' scores and outcomes over the
    per-state score histograms at equal-width score bins, with ``p_w``, ``p_s``, the hazard
    and the token model fixed.  :attr:`RefitResult.loglik_before` and ``loglik_after`` are
    that likelihood at the old histograms (re-expressed at the new bins when they differ,
    :func:`rebin`) and at the new ones; EM never decreases it, so ``after >= before`` up to
    the pseudocount's prior.

    Parameters
    ----------
    model : TrimModel
        The model in use.  With the min-previous-score feature the refitted model observes
        the score alone (:func:`_refit_score_of_min_model` says why): the EM starts from the
        score marginal, ``old_on_new_bins`` is that marginal and ``em["features"]`` records
        the change.
    traces : sequence of Trace
        Routed traces in the serving format, with ``final_correct``.
    tie_wrong : bool
        Estimate one score histogram for S1 and S2 (pooled).  Without step labels the
        position of the first wrong step is identified only through the scores, so with a
        weak PRM the separate S1 and S2 rows are poorly determined (measured: on
        ``drift_noisy`` the untied refit lost half the gain, ``docs/readme_drift.md``);
        the tied refit keeps S0 against "wrong", which is what the routing value rests on.
    n_bins : None, int or "auto"
        Score bins of the refitted model.  ``None``: the model's own (any edges: scores are
        mapped to their bin first).  An int: that many equal-width bins over the traces'
        raw scores.  ``"auto"``: the count chosen by solved value, as ``trim-pomdp fit``
        chooses it from labelled traces (:mod:`trim_pomdp.routing.binning`): the EM at
        the reference resolution (64 bins), each candidate count built from it by
        :func:`rebin` and solved at the probe lambdas, the smallest count within the
        tolerance of the reference kept, and the EM run again at that count.  Only counts
        with at least :data:`MIN_STEPS_PER_BIN` scored steps per bin are tried, besides the
        model's own.  A deployment
        whose scores moved (``drift_shifted``: 12 training bins; 32 chosen from the
        deployment's labelled traces) needs other bins than the ones it was trained at.

    Raises
    ------
    ModelValidationError
        A TRIM-POMDP+ model (more than 3 hidden states).
    InsufficientDataError
        No scored step, or no correct / no wrong outcome.
    RefitError
        The EM did not converge within ``max_iter`` iterations.
    ValueError
        ``n_bins`` is not None, a positive int or ``"auto"``.
    """
    if getattr(model, "n_hidden", 3) != 3:
        raise ModelValidationError("refit_observation needs a TRIM-POMDP model (3 hidden "
                                   "states); this one is a TRIM-POMDP+ model")
    if n_bins is not None and n_bins != "auto" and (
            isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer))
            or int(n_bins) < 2):
        raise ValueError(f"n_bins must be None, an int >= 2 or 'auto'; got {n_bins!r}")
    traces = list(traces)
    if model.uses_min:
        return _refit_score_of_min_model(model, traces, pseudocount=pseudocount,
                                         max_iter=max_iter, tol=tol, tie_wrong=tie_wrong,
                                         n_bins=n_bins)
    choice = None
    if n_bins == "auto":
        from trim_pomdp.routing.binning import (
            DEFAULT_CANDIDATES,
            DEFAULT_REFERENCE,
            choose_n_bins,
        )

        # At least ~MIN_STEPS_PER_BIN scored steps per bin: a few dozen routed traces cannot
        # resolve 32 bins (on 50 three-step traces the 64-bin EM put the mode of the correct
        # steps' scores in an empty bin), so counts above that are not tried.
        n_scored = sum(st.prm_score is not None for tr in traces for st in tr.steps)
        cap = n_scored // MIN_STEPS_PER_BIN
        cands = sorted({c for c in DEFAULT_CANDIDATES if c <= cap} | {int(model.n_score_bins)})
        ref = DEFAULT_REFERENCE
        em_ref = _held_em(model, traces, ref, pseudocount, max_iter, tol, tie_wrong)
        ref_obs = em_ref.hist_ / em_ref.hist_.sum(axis=1, keepdims=True)
        ref_edges = np.arange(1, ref) / ref
        choice = choose_n_bins(lambda n: _with_obs(model, rebin(ref_obs, ref_edges,
                                                                np.arange(1, n) / n), n),
                               candidates=cands, reference=max(ref, cands[-1] + 1))
        n_bins = int(choice.n_bins)
    nb = int(model.n_score_bins) if n_bins is None else int(n_bins)
    if n_bins is None and not np.allclose(model.score_edges, np.arange(1, nb) / nb):
        traces = _to_equal_width(model, traces)
    em = _held_em(model, traces, nb, pseudocount, max_iter, tol, tie_wrong)
    obs = em.hist_ / em.hist_.sum(axis=1, keepdims=True)
    new = _with_obs(model, obs, None if n_bins is None else nb)
    old = np.array(model.obs_matrix)
    old_new = None if n_bins is None else rebin(old, model.score_edges, new.score_edges)
    em_summary = em.summary()
    if choice is not None:
        em_summary["bin_choice"] = {"n_bins": int(choice.n_bins), "met": bool(choice.met),
                                    "reference": int(choice.reference),
                                    "from_bins": int(model.n_score_bins)}
    return RefitResult(model=new, old_obs_matrix=old,
                       new_obs_matrix=np.array(new.obs_matrix), em=em_summary,
                       n_traces=em.n_traces_,
                       loglik_before=_loglik(em, traces, model.p_w, model.p_s,
                                             old if old_new is None else old_new),
                       loglik_after=_loglik(em, traces, model.p_w, model.p_s, obs),
                       old_on_new_bins=old_new)


def _refit_score_of_min_model(model: Any, traces: list[Any], **kw: Any) -> RefitResult:
    """A model with the min-previous-score feature is refitted as a score-only model.

    The outcome EM treats each step's observation as drawn from its hidden state alone.
    That holds for the current draft's score, but not for the minimum of the earlier *kept*
    drafts' scores: which drafts were kept is the routing policy's choice, so under routing
    that minimum's distribution given the state depends on the policy that routed the traffic
    (a low-scored draft is regenerated and never enters it), and a refit of the joint cells
    learns the old policy's footprint instead of the PRM (tried: it lost most of the old
    bank's gain on the drift scenarios).  So the refit drops the min axis, starting from the
    model's score marginal (:meth:`~trim_pomdp.routing.model.TrimModel.score_marginal`), and
    says so in ``em["features"]``; ``benchmarks/bench_adapt.py --features score+min``
    measures what the closed loop keeps with it."""
    res = refit_observation(model.score_marginal(), traces, **kw)
    nm = int(model.min_edges.size) + 1
    em = dict(res.em)
    em["features"] = {"from": f"score+min ({model.n_score_bins} x {nm} bins)",
                      "to": f"score ({res.model.n_score_bins} bins)",
                      "why": "the min of the kept scores depends on the routing policy; the "
                             "refit models the PRM score alone"}
    return RefitResult(model=res.model, old_obs_matrix=np.array(model.obs_matrix),
                       new_obs_matrix=res.new_obs_matrix, em=em, n_traces=res.n_traces,
                       loglik_before=res.loglik_before, loglik_after=res.loglik_after,
                       old_on_new_bins=res._old)


def _held_em(model: Any, traces: list[Any], nb: int, pseudocount: float, max_iter: int,
             tol: float, tie_wrong: bool) -> Any:
    em = _HeldEM(model.p_w, tie_wrong=tie_wrong, n_bins=nb, p_s=model.p_s,
                 pseudocount=pseudocount, max_iter=max_iter, tol=tol).fit(traces)
    if not em.converged_:
        raise RefitError(f"refit EM did not converge in {em.n_iter_} iterations on "
                         f"{em.n_traces_} traces; the bank was left unchanged")
    return em


def _with_obs(model: Any, obs: np.ndarray, n_bins: int | None) -> Any:
    """``model`` with observation matrix ``obs``, at its own score edges (``n_bins`` None)
    or at ``n_bins`` equal-width bins."""
    from trim_pomdp.routing.model import TrimModel

    return TrimModel.from_parameters(
        p_w=model.p_w, p_s=model.p_s, hazard=model.hazard, obs_matrix=obs,
        token_probs=model.token_probs, strong_tokens=model.strong_tokens,
        token_edges=model.token_edges,
        score_edges=model.score_edges if n_bins is None else np.arange(1, n_bins) / n_bins,
        max_steps=model.max_steps)


def refit_bank(bank: Any, traces: Sequence[Any], **kw: Any) -> tuple[Any, RefitResult]:
    """:func:`refit_observation` then :func:`~trim_pomdp.routing.bank.solve_grid` on the bank's
    lambdas.  Returns ``(new_bank, result)``.  When the old bank records a default budget
    for a target cost fraction, the new one records the lambda of the same fraction in the
    refitted model (:func:`~trim_pomdp.routing.bank.default_budget`)."""
    from trim_pomdp.routing.bank import default_budget, solve_grid

    res = refit_observation(bank.model, traces, **kw)
    new = solve_grid(res.model, np.asarray(bank.lambdas))
    tcf = getattr(bank, "target_cost_fraction", None)
    if tcf is not None:
        new.target_cost_fraction = float(tcf)
        new.default_lambda = default_budget(new, float(tcf))
    elif getattr(bank, "default_lambda", None) is not None:
        new.default_lambda = float(bank.default_lambda)
    return new, res


# --------------------------------------------------------------------------------------------
# which bank routed a trace


def _digest(parts: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray) or isinstance(p, (list, tuple)):
            # 12 decimals: a saved and re-loaded bank renormalises its rows, which moves the
            # last bits; the key must survive that round trip
            a = np.ascontiguousarray(np.round(np.asarray(p, dtype=np.float64), 12) + 0.0)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
        elif isinstance(p, float):
            h.update(repr(round(p, 12) + 0.0).encode())
        else:
            h.update(repr(p).encode())
        h.update(b"|")
    return h.hexdigest()[:16]


def lineage_key(model: Any) -> str:
    """Fingerprint of everything a refit holds fixed: ``p_w``, ``p_s``, hazard, token model
    and the observation *features* (score and min-score bin edges, ``max_steps``), but not
    the observation matrix.  A bank and its refits share it; traces routed by a bank of
    another lineage (another fit, other bins) cannot be refitted against this one."""
    return _digest(["lineage-v1", float(model.p_w), float(model.p_s), model.hazard,
                    model.token_probs, model.strong_tokens, model.token_edges,
                    model.score_edges, model.min_edges, int(model.max_steps),
                    bool(model.uses_min), int(getattr(model, "n_hidden", 3))])


def bank_key(bank: Any) -> str:
    """Fingerprint of a whole bank: its lineage, observation matrix and lambdas."""
    return _digest(["bank-v1", lineage_key(bank.model), bank.model.obs_matrix,
                    np.asarray(bank.lambdas)])


def _features(model: Any) -> str:
    nb = int(model.n_score_bins)
    f = f"score ({nb} bins)"
    if model.uses_min:
        f = f"score+min ({nb} x {model.min_edges.size + 1} bins)"
    return f


def router_tag(bank: Any, lam: float, *, version: int = 0,
               path: str | None = None) -> dict[str, Any]:
    """What a routed trace records about the bank that routed it (``"router"`` field of a
    ``trim-pomdp route`` record): lineage and bank keys, features, lambda, adapt version and
    the bank's path."""
    tag: dict[str, Any] = {"lineage": lineage_key(bank.model), "bank": bank_key(bank),
                           "features": _features(bank.model), "lambda": float(lam),
                           "version": int(version)}
    if path is not None:
        tag["bank_path"] = str(path)
    return tag


@dataclass
class RoutedFile:
    """Routed traces read by :func:`load_routed`, with what the file says about them."""

    traces: list[Any]
    path: str
    n_untagged: int
    bank_paths: list[str]
    versions: list[int]


def load_routed(path: Any, model: Any | None = None, *, bank_label: str = "the bank"
                ) -> RoutedFile:
    """Read a trace file ``trim-pomdp route`` wrote, for a refit.

    Every record is validated (:func:`~trim_pomdp.traces.records.trace_from_dict`); every
    step the router decided on must carry the score it saw (``prm_score`` on a kept draft,
    ``draft_prm_score`` on a regenerated one); with ``model``, a record's ``"router"`` tag
    must have ``model``'s :func:`lineage_key`.

    Raises
    ------
    TraceFormatError
        Naming ``file:line``: a malformed record, a routed step without its score, or no
        record at all.
    ModelValidationError
        ``file:line``: the trace was routed by a bank of another lineage (another fit or
        feature set); names both.
    """
    import json

    from trim_pomdp.errors import TraceFormatError
    from trim_pomdp.traces.records import trace_from_dict

    name = str(path)
    want = lineage_key(model) if model is not None else None
    traces: list[Any] = []
    untagged = 0
    paths: list[str] = []
    versions: set[int] = set()
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{name}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TraceFormatError(f"{where}: not valid UTF-8 ({exc.reason})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, RecursionError, ValueError) as exc:
                raise TraceFormatError(f"{where}: invalid JSON ({str(exc)[:200]})") from None
            tr = trace_from_dict(obj, where)
            for j, st in enumerate(tr.steps):
                extra = st.extra or {}
                strong = extra.get("writer") == "strong"
                if strong and extra.get("decision") is None:
                    continue  # the strong model finishing on its own: no routing decision
                seen = extra.get("draft_prm_score") if strong else st.prm_score
                if seen is None:
                    what = "draft_prm_score (the regenerated draft's score)" if strong \
                        else "prm_score"
                    raise TraceFormatError(
                        f"{where}: steps[{j}]: a routed step without {what}; a refit needs "
                        "the PRM score the router saw at every step (trace "
                        f"{tr.id!r})")
            tag = tr.extra.get("router")
            if not isinstance(tag, dict) or "lineage" not in tag:
                untagged += 1
            else:
                if want is not None and tag["lineage"] != want:
                    raise ModelValidationError(
                        f"{where}: trace {tr.id!r} was routed by bank {tag.get('bank')} "
                        f"(lineage {tag['lineage']}, features {tag.get('features')}, "
                        f"{tag.get('bank_path', 'path not recorded')}), not by {bank_label} "
                        f"(lineage {want}, features {_features(model)}): another fit or "
                        "feature set; refit with the bank that routed these traces")
                bp = tag.get("bank_path")
                if isinstance(bp, str) and bp not in paths:
                    paths.append(bp)
                v = tag.get("version")
                if isinstance(v, int) and not isinstance(v, bool):
                    versions.add(v)
            traces.append(tr)
    if not traces:
        raise TraceFormatError(f"{name}: no routed traces")
    return RoutedFile(traces=traces, path=name, n_untagged=untagged, bank_paths=paths,
                      versions=sorted(versions))


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
