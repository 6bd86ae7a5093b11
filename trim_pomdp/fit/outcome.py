r"""Fit TRIM's step accuracies and PRM score model from traces labelled only by their outcome.

Traces that come back from routing real models (:mod:`trim_pomdp.serving`) carry a checked
final answer, ``final_correct``, but no step labels: a wrong answer does not say which step was
wrong.  The supervised fits (:class:`~trim_pomdp.fit.transition.TransitionModel`,
:class:`~trim_pomdp.fit.observation.ObservationModel`) then see only correct episodes and learn
``p_w = 1``.  :class:`OutcomeEM` fits the same quantities by expectation-maximisation over the
hidden position of the first wrong step.

Model (TRIM's).  Executed step ``j`` of an episode, written by the cheap (``w_j = 0``) or the
strong model (``w_j = 1``), is correct with probability ``q_j = p_w`` or ``p_s``, independently
of what came before.  Let ``k`` be the first wrong executed step (``k = T + 1``: none).  Step
``j``'s hidden state is ``S0`` for ``j < k`` (all correct so far), ``S2`` at ``j = k`` (correct
prefix, this step wrong) and ``S1`` for ``j > k`` (an earlier step wrong); its PRM score falls
in bin ``o_j`` with probability ``f_{s_j}(o_j)`` (a histogram per state).  A draft that was
regenerated at step ``j`` was itself correct with probability ``p_w``; its score is in state
``S0``/``S2`` (correct / wrong draft) when the prefix was correct (``k >= j``) and ``S1``
otherwise.  The answer is correct iff ``k = T + 1``.  So

.. math::

    \log L(k) = \sum_{j<k} [\log q_j + \log f_0(o_j) + m_j] + [k \le T]\,
    [\log(1-q_k) + \log f_2(o_k) + m_k] + \sum_{j>k} [\log f_1(o_j) + \log f_1(d_j)],

with ``m_j = log(p_w f_0(d_j) + (1 - p_w) f_2(d_j))`` for a scored regenerated draft (0
otherwise), and the outcome restricts ``k``: ``T + 1`` when correct, ``1..T`` when wrong, any
when unknown.  The E-step computes the posterior of ``k`` per episode (prefix and suffix sums,
``O(T)``); the M-step is closed form: ``p_w``, ``p_s`` = expected correct / expected trials
(executed cheap steps with a correct prefix, plus scored drafts), each histogram = expected
counts per bin plus a pseudo-count.  The routing decisions depend only on observed scores, so
the likelihood ignores them (ignorable design).  Steps without a score contribute no
observation factor; unscored drafts are skipped.  Identifiability: correct episodes pin
``f_0``; each wrong episode holds exactly one ``S2`` step.  With only cheap-written steps
``p_s`` has no data and must be given (``p_s=``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.errors import InsufficientDataError, NotFittedError, TraceFormatError

__all__ = ["OutcomeEM"]

_NEG = -1e300  # log of an impossible configuration (finite, so sums stay well defined)


class _Episodes:
    """The traces as padded ``(N, T)`` arrays (``T`` = longest trace)."""

    def __init__(self, traces: Sequence[Any], n_bins: int,
                 all_strong: Sequence[bool] | None = None) -> None:
        n = len(traces)
        t_max = max((len(tr.steps) for tr in traces), default=0)
        self.mask = np.zeros((n, t_max), bool)
        self.writer = np.zeros((n, t_max), np.int8)
        self.obs = np.full((n, t_max), -1, np.int64)
        self.draft = np.full((n, t_max), -1, np.int64)
        self.outcome = np.full(n, -1, np.int8)  # 1 correct, 0 wrong, -1 unknown
        self.length = np.zeros(n, np.int64)
        for i, tr in enumerate(traces):
            steps = tr.steps
            self.length[i] = len(steps)
            if tr.final_correct is not None:
                self.outcome[i] = 1 if tr.final_correct else 0
            for j, st in enumerate(steps):
                self.mask[i, j] = True
                extra = st.extra or {}
                strong = all_strong is not None and all_strong[i]
                if strong or extra.get("writer") == "strong":
                    self.writer[i, j] = 1
                if st.prm_score is not None and math.isfinite(st.prm_score):
                    self.obs[i, j] = _bin(st.prm_score, n_bins)
                d = extra.get("draft_prm_score")
                if d is not None:
                    if (not isinstance(d, (int, float)) or isinstance(d, bool)
                            or not 0.0 <= d <= 1.0):  # also rejects NaN
                        raise TraceFormatError(
                            f"trace {tr.id!r} step {j + 1}: extra field 'draft_prm_score' "
                            f"must be a number in [0, 1] or null; got {d!r}")
                    self.draft[i, j] = _bin(float(d), n_bins)


def _bin(x: float, n_bins: int) -> int:
    return min(int(max(0.0, min(1.0, x)) * n_bins), n_bins - 1)


class OutcomeEM:
    """EM estimate of ``p_w``, ``p_s`` and per-state PRM-score histograms from traces whose
    only labels are their outcomes (module docstring has the model and the updates).

    Parameters
    ----------
    n_bins : int
        Score histogram bins on [0, 1] (default 20).
    p_s : float, optional
        Strong-step accuracy, if known; required when no trace has a strong-written step.
    pseudocount : float
        Added to every histogram bin in the M-step (default 0.5).
    max_iter, tol : int, float
        EM stops after ``max_iter`` iterations or when the log-likelihood improves by less
        than ``tol`` per episode.
    n_bootstrap : int
        Episode-resampling bootstrap replicates for the 95 % intervals of ``p_w``/``p_s``
        (default 0: no intervals, ``p_w_ci_`` is NaN).
    seed : int
        Seed of the bootstrap.

    Attributes
    ----------
    p_w_, p_s_ : float
    p_w_ci_, p_s_ci_ : ndarray (2,)
    hist_ : ndarray (3, n_bins)
        ``P(score bin | S0, S1, S2)``.
    expected_counts_ : ndarray (3,)
        Expected number of scored steps (and drafts) per state.
    first_error_ : list of ndarray
        Per trace, the posterior of the first wrong step over ``1..T, T+1`` (``T+1``: none).
    loglik_ : float
    n_iter_ : int
    converged_ : bool
    n_traces_, n_wrong_, n_correct_ : int
    """

    def __init__(self, *, n_bins: int = 20, p_s: float | None = None, pseudocount: float = 0.5,
                 max_iter: int = 500, tol: float = 1e-9, n_bootstrap: int = 0,
                 seed: int = 0) -> None:
        self.n_bins = n_bins
        self.p_s = p_s
        self.pseudocount = pseudocount
        self.max_iter = max_iter
        self.tol = tol
        self.n_bootstrap = n_bootstrap
        self.seed = seed

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        if not isinstance(self.n_bins, (int, np.integer)) or self.n_bins < 2:
            raise ValueError(f"n_bins must be an int >= 2; got {self.n_bins!r}")
        if self.p_s is not None and not 0.0 < self.p_s <= 1.0:
            raise ValueError(f"p_s must be in (0, 1]; got {self.p_s!r}")
        if not self.pseudocount >= 0:
            raise ValueError(f"pseudocount must be >= 0; got {self.pseudocount!r}")
        if not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 1:
            raise ValueError(f"max_iter must be an int >= 1; got {self.max_iter!r}")
        if not isinstance(self.n_bootstrap, (int, np.integer)) or self.n_bootstrap < 0:
            raise ValueError(f"n_bootstrap must be an int >= 0; got {self.n_bootstrap!r}")

    # ------------------------------------------------------------------ fit
    def fit(self, traces: Sequence[Any],
            strong_traces: Sequence[Any] | None = None) -> OutcomeEM:
        """Fit on traces (:class:`~trim_pomdp.traces.Trace`; routed ones mark strong steps with
        ``extra["writer"] == "strong"`` and regenerated drafts' scores with
        ``extra["draft_prm_score"]``, as :mod:`trim_pomdp.serving` writes them), plus
        optional traces written by the strong model alone (every step strong).

        Raises
        ------
        InsufficientDataError
            No trace with a known outcome, no wrong or no correct outcome, no scored step, or
            no strong-written step while ``p_s`` is not given.
        """
        self._check_params()
        traces = [tr for tr in traces if tr.steps]
        strong_only = [tr for tr in (strong_traces or ()) if tr.steps]
        flags = [False] * len(traces) + [True] * len(strong_only)
        traces = traces + strong_only
        ep = _Episodes(traces, self.n_bins, flags)
        known = ep.outcome >= 0
        self.n_traces_ = len(traces)
        self.n_correct_ = int((ep.outcome == 1).sum())
        self.n_wrong_ = int((ep.outcome == 0).sum())
        if not known.any():
            raise InsufficientDataError(
                "OutcomeEM.fit: no trace has a known outcome (final_correct); label the "
                "answers, e.g. with trim_pomdp.serving.MathAnswerChecker")
        if self.n_wrong_ == 0 or self.n_correct_ == 0:
            raise InsufficientDataError(
                f"OutcomeEM.fit: {self.n_correct_} correct and {self.n_wrong_} wrong outcomes; "
                "both kinds are needed to tell correct from wrong steps")
        if not ((ep.obs >= 0).any() or (ep.draft >= 0).any()):
            # a regenerated draft's score is evidence too: routed traffic that regenerated
            # every step still has scores
            raise InsufficientDataError("OutcomeEM.fit: no step carries a PRM score")
        has_strong = bool((ep.writer[ep.mask] == 1).any())
        if not has_strong and self.p_s is None:
            raise InsufficientDataError(
                "OutcomeEM.fit: no strong-written step, so p_s has no data; pass p_s=")
        p_w, p_s, hist = self._init(ep)
        p_w, p_s, hist, ll, it, conv, post, counts = self._em(ep, p_w, p_s, hist, has_strong)
        self.p_w_, self.p_s_, self.hist_ = p_w, p_s, hist
        self.loglik_, self.n_iter_, self.converged_ = ll, it, conv
        self.first_error_ = [post[i, : ep.length[i] + 1] for i in range(len(traces))]
        self.expected_counts_ = counts.sum(axis=1)
        self.p_w_ci_ = np.full(2, np.nan)
        self.p_s_ci_ = np.full(2, np.nan) if has_strong else np.array([p_s, p_s])
        if self.n_bootstrap:
            rng = np.random.default_rng(self.seed)
            reps = []
            for _ in range(self.n_bootstrap):
                idx = rng.integers(0, len(traces), len(traces))
                sub = _subset(ep, idx)
                # warm start from the full fit; 1e-6 per episode is ample for an interval
                pw, ps, *_ = self._em(sub, p_w, p_s, hist, has_strong, tol=max(self.tol, 1e-6))
                reps.append((pw, ps))
            r = np.array(reps)
            self.p_w_ci_ = np.quantile(r[:, 0], [0.025, 0.975])
            if has_strong:
                self.p_s_ci_ = np.quantile(r[:, 1], [0.025, 0.975])
        return self

    def _init(self, ep: _Episodes) -> tuple[float, float, NDArray[np.float64]]:
        """Start: S0 = scores of correct episodes, S1 = S2 = scores of wrong ones."""
        nb, a = self.n_bins, max(self.pseudocount, 0.5)
        right = ep.mask & (ep.obs >= 0) & (ep.outcome[:, None] == 1)
        wrong = ep.mask & (ep.obs >= 0) & (ep.outcome[:, None] != 1)
        h0 = np.bincount(ep.obs[right], minlength=nb) + a
        h1 = np.bincount(ep.obs[wrong], minlength=nb) + a
        hist = np.stack([h0 / h0.sum(), h1 / h1.sum(), h1 / h1.sum()])
        return 0.9, (self.p_s if self.p_s is not None else 0.95), hist

    def _loglik_k(self, ep: _Episodes, p_w: float, p_s: float,
                  hist: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``log L(k)`` for ``k = 1..T+1`` (shape ``(N, T+1)``, impossible k at _NEG) and the
        per-step draft posteriors ``r`` (draft correct | scored draft, correct prefix)."""
        lh = np.log(hist)
        m = ep.mask
        q = np.where(ep.writer == 1, p_s, p_w)
        f = lambda s, o: np.where(o >= 0, lh[s][np.maximum(o, 0)], 0.0)  # noqa: E731
        has_d = ep.draft >= 0
        d0 = np.exp(lh[0][np.maximum(ep.draft, 0)])
        d2 = np.exp(lh[2][np.maximum(ep.draft, 0)])
        mix = p_w * d0 + (1 - p_w) * d2
        md = np.where(has_d, np.log(mix), 0.0)
        r = np.where(has_d, p_w * d0 / mix, p_w)
        a = np.where(m, np.log(q) + f(0, ep.obs) + md, 0.0)  # step j in S0
        with np.errstate(divide="ignore"):
            c = np.where(m, np.log1p(-q) + f(2, ep.obs) + md, 0.0)  # step j = first wrong
        c = np.where(np.isfinite(c), c, _NEG)
        b = np.where(m, f(1, ep.obs) + np.where(has_d, lh[1][np.maximum(ep.draft, 0)], 0.0),
                     0.0)  # step j after the first wrong one
        n, t = m.shape
        A = np.concatenate([np.zeros((n, 1)), np.cumsum(a, axis=1)], axis=1)  # A[:, k-1]
        B = np.concatenate([np.cumsum(b[:, ::-1], axis=1)[:, ::-1], np.zeros((n, 1))], axis=1)
        L = np.full((n, t + 1), _NEG)
        L[:, :t] = A[:, :t] + c + B[:, 1:]  # first wrong at k = j + 1 (0-based j)
        L[:, :t] = np.where(m, L[:, :t], _NEG)
        L[np.arange(n), ep.length] = A[np.arange(n), ep.length]  # none wrong
        L[ep.outcome == 1, :] = np.where(
            np.arange(t + 1)[None, :] == ep.length[ep.outcome == 1][:, None],
            L[ep.outcome == 1, :], _NEG)
        wrong = ep.outcome == 0
        L[wrong, ep.length[wrong]] = _NEG
        return L, r

    def _stats(self, ep: _Episodes, post: NDArray[np.float64], r: NDArray[np.float64]) -> tuple:
        """Expected counts: (cheap correct, cheap trials, strong correct, strong trials,
        histogram counts (3, n_bins))."""
        n, t = ep.mask.shape
        cum = np.cumsum(post, axis=1)  # P(k <= j+1) at column j
        p_eq = post[:, :t]  # P(k = j+1)
        p_lt = np.concatenate([np.zeros((n, 1)), cum[:, : t - 1]], axis=1)  # P(k < j+1)
        p_gt = 1.0 - p_lt - p_eq  # P(k > j+1)
        p_ge = p_gt + p_eq
        m = ep.mask
        has_d = m & (ep.draft >= 0)
        cheap, strong = m & (ep.writer == 0), m & (ep.writer == 1)
        kw = p_gt[cheap].sum() + (p_ge * r)[has_d].sum()
        nw = p_ge[cheap].sum() + p_ge[has_d].sum()
        ks = p_gt[strong].sum()
        ns = p_ge[strong].sum()
        counts = np.zeros((3, self.n_bins))
        so = m & (ep.obs >= 0)
        o = ep.obs[so]
        np.add.at(counts[0], o, p_gt[so])
        np.add.at(counts[2], o, p_eq[so])
        np.add.at(counts[1], o, p_lt[so])
        od = ep.draft[has_d]
        np.add.at(counts[0], od, (p_ge * r)[has_d])
        np.add.at(counts[2], od, (p_ge * (1 - r))[has_d])
        np.add.at(counts[1], od, p_lt[has_d])
        return kw, nw, ks, ns, counts

    def _em(self, ep: _Episodes, p_w: float, p_s: float, hist: NDArray[np.float64],
            has_strong: bool, tol: float | None = None) -> tuple:
        tol = self.tol if tol is None else tol
        n_ep = max(ep.length.size, 1)
        ll_old = -np.inf
        conv = False
        n_iter = 0
        post = counts = None
        ll = -np.inf
        for it in range(1, self.max_iter + 1):
            n_iter = it
            L, r = self._loglik_k(ep, p_w, p_s, hist)
            mx = L.max(axis=1, keepdims=True)
            w = np.exp(L - mx)
            z = w.sum(axis=1, keepdims=True)
            post = w / z
            ll = float((mx[:, 0] + np.log(z[:, 0])).sum())
            kw, nw, ks, ns, counts = self._stats(ep, post, r)
            p_w = float(np.clip(kw / nw, 1e-6, 1 - 1e-6)) if nw > 0 else p_w
            if has_strong and self.p_s is None and ns > 0:
                p_s = float(np.clip(ks / ns, 1e-6, 1 - 1e-6))
            hist = (counts + self.pseudocount) / (
                counts.sum(axis=1, keepdims=True) + self.pseudocount * self.n_bins)
            hist = np.maximum(hist, 1e-12)
            if ll - ll_old < tol * n_ep:
                conv = True
                break
            ll_old = ll
        # counts: the last E-step's expected scored steps per state (at convergence)
        return p_w, p_s, hist, ll, n_iter, conv, post, counts

    # ------------------------------------------------------------------ outputs
    def _check_fitted(self) -> None:
        if not hasattr(self, "hist_"):
            raise NotFittedError("This OutcomeEM instance is not fitted yet; call 'fit' first")

    def observation_model(self) -> Any:
        """The fitted score model as an :class:`~trim_pomdp.fit.observation.ObservationModel`
        (estimator ``"hist"``, features ``"score"``), e.g. for ``TrimModel`` or ``save``."""
        self._check_fitted()
        from trim_pomdp.fit.observation import ObservationModel

        return ObservationModel.from_histograms(self.hist_, self.expected_counts_)

    def summary(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "method": "outcome EM",
            "p_w": self.p_w_, "p_w_ci": [float(v) for v in self.p_w_ci_],
            "p_s": self.p_s_, "p_s_ci": [float(v) for v in self.p_s_ci_],
            "p_s_given": self.p_s is not None,
            "n_traces": self.n_traces_, "n_correct": self.n_correct_, "n_wrong": self.n_wrong_,
            "loglik": self.loglik_, "n_iter": self.n_iter_, "converged": self.converged_,
            "expected_counts": [float(v) for v in self.expected_counts_],
        }


def _subset(ep: _Episodes, idx: NDArray[np.int64]) -> _Episodes:
    sub = object.__new__(_Episodes)
    for name in ("mask", "writer", "obs", "draft", "outcome", "length"):
        setattr(sub, name, getattr(ep, name)[idx])
    return sub
