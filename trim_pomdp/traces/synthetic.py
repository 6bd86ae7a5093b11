"""Synthetic labelled traces drawn from known TRIM parameters (for tests, demos and docs).

Generative model of one trace (problem i):

1. difficulty: the model's per-step accuracy on this problem is ``q_i = p`` or, with
   ``difficulty_concentration = c``, ``q_i ~ Beta(p c, (1 - p) c)`` (mean p), where
   ``p = p_w`` for ``model="cheap"`` and ``p = p_s`` for ``model="strong"``;
2. length: step t is the final one with probability ``hazard[t-1]`` (``hazard[29] = 1``);
3. each step is correct independently with probability ``q_i``; the hidden state is S0
   before the first wrong step, S2 at it, S1 after it;
4. PRM score of a step in state s: ``y ~ Beta(a_s, b_s)``; with ``prm_bias_sd = sigma`` a
   per-trace bias ``beta_i ~ N(0, sigma^2)`` shifts every score of the trace on the logit
   scale, ``score = expit(logit(y) + beta_i)``;
5. tokens: ``max(1, round(exp(N(token_mu, token_sigma^2))))`` per step;
6. labels: ``labels="first_error"`` (default) labels steps up to the first wrong one and
   leaves the rest null (ProcessBench style); ``"full"`` labels every step with its own
   correctness; ``final_correct`` is True iff the last step is in S0.

With ``difficulty_concentration`` the pooled next-step accuracy over steps with a correct
prefix is larger than ``p`` (easy problems keep long correct prefixes: survivorship); the
accuracy of first steps alone stays unbiased for ``p``.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp.traces.records import MAX_STEPS, Step, Trace
from trim_pomdp.traces.table import _states_from_codes

__all__ = ["generate_traces", "DEFAULT_SCORE_PARAMS", "length_distribution"]

#: Beta (a, b) of PRM scores for S0, S1, S2: informative but noisy.
DEFAULT_SCORE_PARAMS = ((6.0, 2.0), (2.0, 4.0), (2.5, 3.5))


def _hazard_array(hazard: float | ArrayLike, max_steps: int) -> NDArray[np.float64]:
    h = np.asarray(hazard, dtype=np.float64)
    if h.ndim == 0:
        h = np.full(max_steps, float(h))
    if h.shape != (max_steps,):
        raise ValueError(f"hazard must be a number or have shape ({max_steps},); got {h.shape}")
    if np.any(~((h >= 0) & (h <= 1))):
        raise ValueError("hazard values must lie in [0, 1]")
    out: NDArray[np.float64] = h.copy()
    out[-1] = 1.0
    return out


def length_distribution(hazard: float | ArrayLike,
                        max_steps: int = MAX_STEPS) -> NDArray[np.float64]:
    """P(length = t) for t = 1..max_steps: ``h(t) prod_{u<t} (1 - h(u))``."""
    h = _hazard_array(hazard, max_steps)
    surv = np.concatenate([[1.0], np.cumprod(1.0 - h)[:-1]])
    return surv * h


def generate_traces(
    *,
    n_traces: int,
    p_w: float,
    p_s: float | None = None,
    hazard: float | ArrayLike = 0.15,
    score_params: Sequence[Sequence[float]] | ArrayLike = DEFAULT_SCORE_PARAMS,
    difficulty_concentration: float | None = None,
    prm_bias_sd: float = 0.0,
    token_mu: float = 4.0,
    token_sigma: float = 0.5,
    model: str = "cheap",
    model_name: str | None = None,
    labels: str = "first_error",
    max_steps: int = MAX_STEPS,
    seed: int | np.random.Generator | None = 0,
) -> list[Trace]:
    """Labelled traces from known parameters (generative model in the module docstring).

    Parameters
    ----------
    n_traces : int
    p_w, p_s : float
        Next-step accuracy of the cheap / strong model (``p_s`` needed for "strong").
    hazard : float or (max_steps,) array
        Termination hazard; a number means a constant hazard (h(30) is forced to 1).
    score_params : (3, 2) array-like
        Beta (a, b) of PRM scores in S0, S1, S2.
    difficulty_concentration : float, optional
        Beta concentration of the per-problem accuracy (None: every problem alike).
    prm_bias_sd : float
        Standard deviation of the per-trace PRM bias on the logit scale.
    token_mu, token_sigma : float
        Log-normal step length (per step, in tokens).
    model : {"cheap", "strong"}
        Which accuracy to use.
    model_name : str, optional
        ``Trace.model`` (default: ``model``).
    labels : {"first_error", "full"}
    seed : int or Generator

    Returns
    -------
    list of Trace
    """
    if model not in ("cheap", "strong"):
        raise ValueError(f"model must be 'cheap' or 'strong'; got {model!r}")
    p = p_w if model == "cheap" else p_s
    if p is None:
        raise ValueError("p_s is required for model='strong'")
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"{'p_w' if model == 'cheap' else 'p_s'} must be in [0, 1]; got {p!r}")
    if not isinstance(n_traces, (int, np.integer)) or n_traces < 1:
        raise ValueError(f"n_traces must be a positive integer; got {n_traces!r}")
    if labels not in ("first_error", "full"):
        raise ValueError(f"labels must be 'first_error' or 'full'; got {labels!r}")
    sp = np.asarray(score_params, dtype=np.float64)
    if sp.shape != (3, 2) or np.any(~(sp > 0)):
        raise ValueError(f"score_params must be (3, 2) positive Beta (a, b); got shape {sp.shape}")
    if difficulty_concentration is not None and not (difficulty_concentration > 0):
        raise ValueError("difficulty_concentration must be > 0 or None")
    if not (prm_bias_sd >= 0):
        raise ValueError("prm_bias_sd must be >= 0")
    rng = np.random.default_rng(seed)
    name = model_name or model

    # 1-2: per-trace accuracy and length
    if difficulty_concentration is None or p in (0.0, 1.0):
        q = np.full(n_traces, float(p))
    else:
        c = float(difficulty_concentration)
        q = rng.beta(p * c, (1.0 - p) * c, size=n_traces)
    pl = length_distribution(hazard, max_steps)
    lengths = rng.choice(np.arange(1, max_steps + 1), size=n_traces, p=pl / pl.sum())
    offsets = np.zeros(n_traces + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    N = int(offsets[-1])
    tr_of_step = np.repeat(np.arange(n_traces), lengths)

    # 3: correctness and hidden states
    correct = rng.random(N) < q[tr_of_step]
    states = _states_from_codes(correct.astype(np.int8), offsets)

    # 4: PRM scores
    a, b = sp[states, 0], sp[states, 1]
    y = rng.beta(a, b)
    if prm_bias_sd > 0:
        bias = rng.normal(0.0, prm_bias_sd, size=n_traces)[tr_of_step]
        y = np.clip(y, 1e-12, 1.0 - 1e-12)
        y = 1.0 / (1.0 + np.exp(-(np.log(y) - np.log1p(-y) + bias)))
    scores = y.tolist()

    # 5: tokens
    tokens = np.maximum(1, np.rint(np.exp(rng.normal(token_mu, token_sigma, size=N)))).astype(
        np.int64).tolist()

    # 6: labels
    if labels == "first_error":
        lab_code = np.where(states == 0, 1, np.where(states == 2, 0, -1))
    else:
        lab_code = correct.astype(np.int64)
    names = {1: "correct", 0: "incorrect", -1: None}
    labs = [names[c] for c in lab_code.tolist()]

    final_ok = (states[offsets[1:] - 1] == 0).tolist()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # many small acyclic objects (see traces.load_traces)
    try:
        return _build(n_traces, offsets, scores, tokens, labs, final_ok, name)
    finally:
        if gc_was_enabled:
            gc.enable()


def _build(n_traces: int, offsets: NDArray[np.int64], scores: list[float], tokens: list[int],
           labs: list[str | None], final_ok: list[bool], name: str) -> list[Trace]:
    new = object.__new__
    out: list[Trace] = []
    for i in range(n_traces):
        steps = []
        for j in range(int(offsets[i]), int(offsets[i + 1])):
            st = new(Step)
            st.text = None
            st.prm_score = scores[j]
            st.tokens = tokens[j]
            st.label = labs[j]
            st.extra = {}
            steps.append(st)
        tr = new(Trace)
        tr.id = f"{name}-{i}"
        tr.model = name
        tr.steps = steps
        tr.final_correct = bool(final_ok[i])
        tr.problem = f"synthetic-{i}"
        tr.extra = {}
        out.append(tr)
    return out
