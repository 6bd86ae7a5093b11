"""Numba kernels of the online TRIM router: the Bayes filter over the hidden step states
and the alpha-vector lookup, for one trace (:class:`~trim_pomdp.routing.router.Router`) and for a
batch of traces in lockstep (:class:`~trim_pomdp.routing.router.TrimBatchPolicy`).

Everything is preallocated by the caller; the kernels write into the arrays they get and
return a status code, so a router step allocates nothing.

Filter (mixed observability, observed ``x`` and hidden ``s``): after action ``a`` at epoch
``t`` in ``(x, b)``, observing the next observed value ``x'`` and observation ``o``,

    b'(s') = Z[a, x', s', o] * sum_s T[t, a, x, s, x', s'] b(s) / P(x', o | x, b, a).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# status codes returned by the kernels (>= 0 is an action)
ZERO_PROBABILITY = -1
PAST_MAX_STEPS = -2
AFTER_FINAL = -3

# layout of the router's integer state vector
I_T, I_X, I_A, I_STATUS = 0, 1, 2, 3
# status values
FRESH, RUNNING, DONE = 0, 1, 2


@njit(cache=True)
def _count_le(edges, v):
    """Number of inner edges <= v (the bin index); edges are few, so a linear scan."""
    n = 0
    for i in range(edges.shape[0]):
        if edges[i] <= v:
            n += 1
        else:
            break
    return n


@njit(cache=True)
def filter_decide(T, Z, alphas, actions, offsets, t, x, a, x_new, o, b, tmp):
    """Predict ``b`` with action ``a`` from epoch ``t`` at observed ``x``, correct with
    ``(x_new, o)`` in place, then return the greedy action of epoch ``t + 1`` at
    ``x_new`` (``ZERO_PROBABILITY`` if the evidence has probability 0; ``b`` untouched)."""
    S = b.shape[0]
    X = T.shape[2]
    total = 0.0
    for s2 in range(S):
        acc = 0.0
        for s in range(S):
            acc += T[t, a, x, s, x_new, s2] * b[s]
        acc *= Z[a, x_new, s2, o]
        tmp[s2] = acc
        total += acc
    if not (total > 0.0):
        return ZERO_PROBABILITY
    for s2 in range(S):
        b[s2] = tmp[s2] / total
    blk = (t + 1) * X + x_new
    lo = offsets[blk]
    hi = offsets[blk + 1]
    best = -np.inf
    best_a = 0
    for k in range(lo, hi):
        v = 0.0
        for s in range(S):
            v += alphas[k, s] * b[s]
        if v > best:
            best = v
            best_a = actions[k]
    return best_a


@njit(cache=True)
def router_step(T, Z, alphas, actions, offsets, score_edges, min_edges, token_edges,
                uses_min, max_steps, ist, b, fst, tmp, score, tokens, is_final):
    """One router step.  ``ist = [t, x, a, status]`` (epoch and observed value of the last
    decision, the action executed there, FRESH/RUNNING/DONE); ``fst = [min_prev,
    last_score, rule_all]``: the min of the earlier scores that count (1.0 before any),
    the previous step's score, and 1.0 if every earlier score counts (rule "all") or 0.0 if
    only kept (continued) drafts count (rule "kept").  Returns the action or a negative
    status; on a negative status nothing is changed."""
    status = ist[I_STATUS]
    t = ist[I_T]
    if t >= max_steps:
        return PAST_MAX_STEPS
    if status == DONE:
        return AFTER_FINAL
    m = fst[0]
    if status == RUNNING and (ist[I_A] == 0 or fst[2] != 0.0) and fst[1] < m:
        m = fst[1]
    K = token_edges.shape[0] + 1
    n_min = min_edges.shape[0] + 1
    k = _count_le(token_edges, tokens)
    final = is_final or (t + 1 == max_steps)
    x_new = 1 + (K if final else 0) + k
    o = _count_le(score_edges, score) * n_min
    if uses_min:
        o += _count_le(min_edges, m)
    act = filter_decide(T, Z, alphas, actions, offsets, t, ist[I_X], ist[I_A], x_new, o, b, tmp)
    if act < 0:
        return act
    ist[I_T] = t + 1
    ist[I_X] = x_new
    ist[I_A] = act
    ist[I_STATUS] = DONE if final else RUNNING
    fst[0] = m
    fst[1] = score
    return act


@njit(cache=True)
def batch_act(T, Z, alphas, actions, offsets, score_edges, min_edges, token_edges, uses_min,
              max_steps, t, score, min_prev, tokens, is_final, active, xs, acts, B, tmp, out):
    """Advance every active episode to step ``t`` (1-based) and decide.  ``xs``/``acts``
    hold each episode's observed value and executed action of epoch ``t - 1``; ``B`` its
    belief.  Returns -1, or the index of an episode whose evidence had probability 0."""
    n = score.shape[0]
    K = token_edges.shape[0] + 1
    n_min = min_edges.shape[0] + 1
    for i in range(n):
        if not active[i]:
            out[i] = 0
            continue
        k = _count_le(token_edges, tokens[i])
        final = is_final[i] or (t == max_steps)
        x_new = 1 + (K if final else 0) + k
        o = _count_le(score_edges, score[i]) * n_min
        if uses_min:
            o += _count_le(min_edges, min_prev[i])
        a = filter_decide(T, Z, alphas, actions, offsets, t - 1, xs[i], acts[i], x_new, o,
                          B[i], tmp)
        if a < 0:
            return i
        xs[i] = x_new
        acts[i] = a
        out[i] = a
    return -1


# ---------------------------------------------------------------------------- drift (PIT)
# The router step fused with the probability integral transform of the live score under the
# belief's predictive mixture (:mod:`trim_pomdp.routing.drift` holds the monitor).

#: layout of a router's per-episode accumulator: sum(u - 1/2), sum((u - 1/2)^2 - 1/12), n
A_LOC, A_SPREAD, A_N = 0, 1, 2


@njit(cache=True)
def _pit(T, Z, score_edges, min_edges, token_edges, uses_min, max_steps, t, x, a, b, m,
         score, tokens, is_final):
    """PIT of ``score`` under the predictive of the draft after epoch ``t`` (see module)."""
    S = b.shape[0]
    Kt = token_edges.shape[0] + 1
    n_min = min_edges.shape[0] + 1
    kk = _count_le(token_edges, tokens)
    final = is_final or (t + 1 == max_steps)
    x_new = 1 + (Kt if final else 0) + kk
    im = _count_le(min_edges, m) if uses_min else 0
    # predicted hidden state of the new draft (unnormalised; normalised through p below)
    n_sb = score_edges.shape[0] + 1
    tot = 0.0
    below = 0.0
    k = _count_le(score_edges, score)
    pk = 0.0
    for i in range(n_sb):
        o = i * n_min + im
        pi = 0.0
        for s2 in range(S):
            acc = 0.0
            for s in range(S):
                acc += T[t, a, x, s, x_new, s2] * b[s]
            pi += acc * Z[a, x_new, s2, o]
        tot += pi
        if i < k:
            below += pi
        elif i == k:
            pk = pi
    if not (tot > 0.0):
        return -1.0
    lo = 0.0 if k == 0 else score_edges[k - 1]
    hi = 1.0 if k == n_sb - 1 else score_edges[k]
    frac = (score - lo) / (hi - lo) if hi > lo else 0.5
    frac = min(max(frac, 0.0), 1.0)
    return (below + pk * frac) / tot


@njit(cache=True)
def router_step_pit(T, Z, alphas, actions, offsets, score_edges, min_edges, token_edges,
                    uses_min, max_steps, ist, b, fst, tmp, score, tokens, is_final, acc):
    """:func:`trim_pomdp.routing._kernels.router_step` plus the PIT of ``score`` under the belief
    before the step, added to the episode accumulator ``acc`` (only when the step is
    accepted).  Returns what ``router_step`` returns."""
    t = ist[I_T]
    status = ist[I_STATUS]
    u = -1.0
    if t < max_steps and status != DONE:
        m = fst[0]
        if status == RUNNING and (ist[I_A] == 0 or fst[2] != 0.0) and fst[1] < m:
            m = fst[1]
        u = _pit(T, Z, score_edges, min_edges, token_edges, uses_min, max_steps, t,
                 ist[I_X], ist[I_A], b, m, score, tokens, is_final)
    code = router_step(T, Z, alphas, actions, offsets, score_edges, min_edges, token_edges,
                         uses_min, max_steps, ist, b, fst, tmp, score, tokens, is_final)
    if code >= 0 and u >= 0.0:
        d = u - 0.5
        acc[A_LOC] += d
        acc[A_SPREAD] += d * d - 1.0 / 12.0
        acc[A_N] += 1.0
    return code


@njit(cache=True)
def batch_pit(T, Z, score_edges, min_edges, token_edges, uses_min, max_steps, t, score,
              min_prev, tokens, is_final, active, xs, acts, B, acc):
    """PIT of every active episode's score at step ``t`` (1-based) under its belief
    *before* :func:`trim_pomdp.routing._kernels.batch_act` advances it; adds to ``acc`` (n, 3)."""
    for i in range(score.shape[0]):
        if not active[i]:
            continue
        u = _pit(T, Z, score_edges, min_edges, token_edges, uses_min, max_steps, t - 1,
                 xs[i], acts[i], B[i], min_prev[i], score[i], tokens[i], is_final[i])
        if u >= 0.0:
            d = u - 0.5
            acc[i, A_LOC] += d
            acc[i, A_SPREAD] += d * d - 1.0 / 12.0
            acc[i, A_N] += 1.0
