"""Paired, vectorised simulation of step-level routing policies (Numba).

World semantics are the TRIM transition rules (hidden states S0 = 0, S1 = 1, S2 = 2 at
decision time, *including* the current cheap draft; actions 0 = continue, 1 = regenerate):

* step 1: the cheap model drafts; the draft is S0 w.p. ``p_w[i]`` else S2.
* continue on the final draft: the episode ends, correct iff S0.
* continue otherwise: next draft S0 -> S0 w.p. ``p_w[i]`` else S2; S2 -> S1; S1 -> S1.
* regenerate: the strong model rewrites the step (its tokens are paid).  From S0 or S2 the
  rewrite is right w.p. ``p_s[i]``; from S1 it cannot help.  Final step: the episode ends,
  correct iff the rewrite is right.  Otherwise a right rewrite is followed by a new cheap
  draft (S0 w.p. ``p_w[i]`` else S2) and a wrong rewrite leads to S1.
* the number of steps ``L`` of problem ``i`` is drawn from the hazard and does not depend
  on the actions (the draft at step ``L`` is final; ``L <= 30``).

Common random numbers: a :class:`World` holds every random draw per (problem, step) --
the uniforms deciding cheap-draft and strong-rewrite correctness, the PRM-score latents,
token counts and the length -- so every policy meets exactly the same problems and the
same luck, and differences between policies are paired.  A draw is used only through the
rule above, e.g. ``u_w[i, j]`` decides the draft of step ``j + 1`` whatever happened before.

The PRM feature ``min_prev`` given to policies is the minimum PRM score of the earlier steps
that are *kept in the solution*: with ``min_prev_rule="kept"`` (default) only continued cheap
drafts enter it (a regenerated draft is discarded and the strong rewrite is not re-scored);
with ``"all"`` every earlier draft score enters it.  On the first step it is 1.0 (empty
minimum).  On an always-cheap trajectory both rules give the minimum of the earlier scores,
which is what the observation model is fitted on.

Policies run in lockstep through the :class:`BatchPolicy` protocol: for t = 1..30 the
simulator computes the observation of every active episode (one Numba pass), asks the
policy for a whole batch of actions, and advances all episodes (another Numba pass).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numba import njit
from numpy.typing import NDArray

from trim_pomdp.scenario import MAX_STEPS, Scenario, load_scenario

S0, S1, S2 = 0, 1, 2
CONTINUE, REGENERATE = 0, 1
_MIN_RULES = {"kept": 0, "all": 1}

# Quantile tables Q_s(Phi(z)) on a z grid; linear interpolation in z is accurate to ~1e-6
# for the Beta shapes we use (checked against scipy in tests/test_simulator.py).
_Z_LO, _Z_HI, _N_GRID = -8.5, 8.5, 8193


@runtime_checkable
class BatchPolicy(Protocol):
    """What the simulator needs from a policy.

    Attributes
    ----------
    name : str
    needs_truth : bool
        ``True`` only for clairvoyant policies (simulation only): ``act`` then receives the
        hidden state of every draft.

    Notes
    -----
    ``act(t, score, min_prev, tokens, is_final, active, truth=None)`` receives arrays of
    length ``n`` (``t`` is the 1-based step index) and returns 0 (continue) / 1
    (regenerate) per episode as an integer or bool array of length ``n``; entries of
    inactive episodes are ignored.  The arrays are the simulator's buffers: read them, do
    not keep or modify them.  ``executed(actions)`` is then called with the actions that
    were executed (for belief tracking).
    """

    name: str
    needs_truth: bool

    def reset_batch(self, n: int) -> None: ...

    def act(self, t: int, score: NDArray[np.float64], min_prev: NDArray[np.float64],
            tokens: NDArray[np.int64], is_final: NDArray[np.bool_], active: NDArray[np.bool_],
            truth: NDArray[np.int8] | None = None) -> NDArray[np.int8]: ...

    def executed(self, actions: NDArray[np.int8]) -> None: ...


# ============================================================================ world
@dataclass(frozen=True, eq=False)
class World:
    """Sampled problems and every per-(problem, step) random draw (common random numbers).

    Attributes
    ----------
    p_w, p_s : ndarray (n,)
        Per-problem next-step accuracies of the cheap / strong model.
    length : ndarray[int32] (n,)
        Number of steps ``L`` (the draft of step ``L`` is final).
    u_w, u_s : ndarray[float32] (n, 30)
        Uniforms: the draft of step ``j+1`` after a correct prefix is right iff
        ``u_w[i, j] < p_w[i]``; a strong rewrite of step ``j+1`` is right iff
        ``u_s[i, j] < p_s[i]``.
    z_draft, z_strong : ndarray[float32] (n, 30)
        Standard-normal AR(1) latents of the PRM score of the cheap draft / the strong
        rewrite of each step.
    bias : ndarray (n,)
        Per-trace PRM logit bias.
    cheap_tokens, strong_tokens : ndarray[int32] (n, 30)
        Tokens of the cheap draft / the strong rewrite of each step.
    score_table : ndarray (3, G)
        ``Q_s(Phi(z))`` on the grid ``z_lo + k * dz``.
    """

    p_w: NDArray[np.float64]
    p_s: NDArray[np.float64]
    length: NDArray[np.int32]
    u_w: NDArray[np.float32]
    u_s: NDArray[np.float32]
    z_draft: NDArray[np.float32]
    z_strong: NDArray[np.float32]
    bias: NDArray[np.float64]
    cheap_tokens: NDArray[np.int32]
    strong_tokens: NDArray[np.int32]
    score_table: NDArray[np.float64]
    z_lo: float
    dz: float
    scenario: Scenario | None = None
    seed: int | None = None

    @property
    def n_problems(self) -> int:
        return int(self.p_w.shape[0])

    @property
    def n_steps(self) -> int:
        """Total number of decision steps (sum of the lengths)."""
        return int(self.length.sum())

    def step_mask(self) -> NDArray[np.bool_]:
        """(n, 30) mask of the steps that exist (``t <= L``)."""
        return np.arange(1, MAX_STEPS + 1)[None, :] <= self.length[:, None]

    def always_strong_tokens(self) -> NDArray[np.int64]:
        """Strong tokens per problem when every step is regenerated (cost denominator)."""
        return self._always_strong_tokens.copy()

    @cached_property
    def _always_strong_tokens(self) -> NDArray[np.int64]:
        return np.where(self.step_mask(), self.strong_tokens, 0).sum(axis=1, dtype=np.int64)

    def prm_scores(self, states: NDArray[Any], z: NDArray[Any],
                   bias: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
        """Vectorised NumPy PRM score model (reference for the Numba kernel).

        ``score = expit(logit(Q_s(Phi(z))) + bias)`` elementwise for states/latents of shape
        (m, k) (row r uses ``bias[r]``, default the world's per-problem bias, so rows are
        problems); entries with a negative state give NaN.
        """
        return _prm_scores(self.score_table, self.z_lo, self.dz, states, z,
                           self.bias if bias is None else bias)


def _prm_scores(table: NDArray[np.float64], z_lo: float, dz: float, states: NDArray[Any],
                z: NDArray[Any], bias: NDArray[np.float64]) -> NDArray[np.float64]:
    states = np.asarray(states)
    z = np.asarray(z, dtype=np.float64)
    grid = z_lo + dz * np.arange(table.shape[1])
    out = np.full(z.shape, np.nan)
    for s in range(3):
        m = states == s
        out[m] = np.interp(z[m], grid, table[s])
    b = np.broadcast_to(np.asarray(bias, np.float64).reshape((-1,) + (1,) * (z.ndim - 1)),
                        z.shape)
    nz = (b != 0.0) & ~np.isnan(out)
    v = np.clip(out[nz], 1e-12, 1.0 - 1e-12)
    out[nz] = 1.0 / (1.0 + np.exp(-(np.log(v / (1.0 - v)) + b[nz])))
    return out


def sample_world(scenario: Scenario | str, *, n_problems: int | None = None,
                 seed: int | None = None) -> World:
    """Draw ``n_problems`` problems and all their random numbers from a scenario.

    A scenario with a ``deployment`` section (PRM drift) gives its *deployment* world:
    the PRM scores follow ``scenario.deployment_prm()``; sample ``scenario.training()`` for
    the world the models are fitted on (same problems and draws, the training PRM).

    Parameters
    ----------
    scenario : Scenario or str
        A scenario, a path to a scenario JSON file or a built-in name.
    n_problems, seed : int, optional
        Override the scenario's ``n_problems`` / ``seed``.  The same (scenario, n, seed)
        always gives the same world.
    """
    from scipy import special, stats

    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    n = scenario.n_problems if n_problems is None else int(n_problems)
    if n < 1:
        raise ValueError(f"n_problems must be >= 1; got {n}")
    seed = scenario.seed if seed is None else int(seed)
    # independent streams per component: adding a feature never reshuffles the others
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(8)]

    # problem difficulty: Gaussian copula coupling p_w and p_s
    rho = scenario.difficulty_correlation
    g = streams[0].standard_normal((2, n))
    g[1] = rho * g[0] + math.sqrt(max(0.0, 1.0 - rho * rho)) * g[1]
    u = special.ndtr(g)

    def _acc(mean: float, conc: float | None, uu: NDArray[np.float64]) -> NDArray[np.float64]:
        if conc is None:
            return np.full(n, mean)
        return np.asarray(stats.beta.ppf(uu, mean * conc, (1.0 - mean) * conc), dtype=np.float64)

    p_w = _acc(scenario.p_w_mean, scenario.p_w_concentration, u[0])
    p_s = _acc(scenario.p_s_mean, scenario.p_s_concentration, u[1])

    h = scenario.hazard_array()
    surv = np.concatenate(([1.0], np.cumprod(1.0 - h)[:-1]))
    p_len = surv * h
    p_len /= p_len.sum()
    length = (streams[1].choice(MAX_STEPS, size=n, p=p_len) + 1).astype(np.int32)

    rs = scenario.step_correlation
    if rs == 0.0:
        u_w = streams[2].random((n, MAX_STEPS), dtype=np.float32)
        u_s = streams[3].random((n, MAX_STEPS), dtype=np.float32)
    else:  # Gaussian copula between the two correctness draws of the same step
        g_w = streams[2].standard_normal((n, MAX_STEPS))
        g_s = rs * g_w + math.sqrt(max(0.0, 1.0 - rs * rs)) * streams[3].standard_normal(
            (n, MAX_STEPS))
        u_w = special.ndtr(g_w).astype(np.float32)
        u_s = special.ndtr(g_s).astype(np.float32)

    # the world routers are evaluated in scores with the deployment PRM (the training PRM
    # when the scenario has no drift); every other draw is the same either way
    prm = scenario.deployment_prm()
    r = prm["correlation"]
    innov = math.sqrt(1.0 - r * r)

    def _ar1(rng: np.random.Generator) -> NDArray[np.float32]:
        e = rng.standard_normal((n, MAX_STEPS))
        for j in range(1, MAX_STEPS):
            e[:, j] = r * e[:, j - 1] + innov * e[:, j]
        return e.astype(np.float32)

    z_draft = _ar1(streams[4])
    z_strong = _ar1(streams[5])
    # expit(scale * (logit(q) + b) + shift) = expit(scale * logit(q) + shift + scale * b):
    # the drift map is folded into the quantile table and the bias, so the kernels and
    # the Python reference need no change
    scale, shift = prm["logit_scale"], prm["logit_shift"]
    bias = streams[6].standard_normal(n) * (prm["bias_sd"] * scale)

    (mc, sc), (ms, ss) = scenario.cheap_tokens, scenario.strong_tokens
    rt = scenario.token_correlation
    gt = streams[7].standard_normal((2, n, MAX_STEPS))
    log_c = mc + sc * gt[0]
    log_s = ms + ss * (rt * gt[0] + math.sqrt(max(0.0, 1.0 - rt * rt)) * gt[1])
    cheap_tokens = np.maximum(1, np.rint(np.exp(np.minimum(log_c, 20.0)))).astype(np.int32)
    strong_tokens = np.maximum(1, np.rint(np.exp(np.minimum(log_s, 20.0)))).astype(np.int32)

    # Column-major (Fortran) storage: the lockstep kernels read one step column of every
    # problem at a time, so step j of all problems must be contiguous (several-fold faster).
    u_w, u_s, z_draft, z_strong, cheap_tokens, strong_tokens = (
        np.asfortranarray(a) for a in (u_w, u_s, z_draft, z_strong, cheap_tokens, strong_tokens))

    zg = np.linspace(_Z_LO, _Z_HI, _N_GRID)
    table = np.empty((3, _N_GRID))
    for s, (a, b) in enumerate(prm["score_beta"]):
        table[s] = stats.beta.ppf(special.ndtr(zg), a, b)
    if scale != 1.0 or shift != 0.0:
        table = special.expit(scale * special.logit(np.clip(table, 1e-12, 1.0 - 1e-12))
                              + shift)
    dz = (_Z_HI - _Z_LO) / (_N_GRID - 1)
    # read-only: every policy must see exactly the same draws (common random numbers)
    for a in (p_w, p_s, length, u_w, u_s, z_draft, z_strong, bias, cheap_tokens,
              strong_tokens, table):
        a.setflags(write=False)
    return World(p_w=p_w, p_s=p_s, length=length, u_w=u_w, u_s=u_s, z_draft=z_draft,
                 z_strong=z_strong, bias=bias, cheap_tokens=cheap_tokens,
                 strong_tokens=strong_tokens, score_table=table, z_lo=_Z_LO, dz=dz,
                 scenario=scenario, seed=seed)


def as_world(source: Scenario | World | str, *, n_problems: int | None = None,
             seed: int | None = None) -> World:
    """A :class:`World` from a world (returned as is), a scenario, a path or a built-in name."""
    if isinstance(source, World):
        if n_problems is not None or seed is not None:
            raise ValueError("n_problems/seed cannot be changed on an existing World")
        return source
    return sample_world(source, n_problems=n_problems, seed=seed)


# ============================================================================ kernels
@njit(cache=True, inline="always")
def _score_at(table, s, z, bias, z_lo, inv_dz):
    g = table.shape[1]
    x = (z - z_lo) * inv_dz
    if x <= 0.0:
        v = table[s, 0]
    elif x >= g - 1:
        v = table[s, g - 1]
    else:
        k = int(x)
        f = x - k
        v = table[s, k] * (1.0 - f) + table[s, k + 1] * f
    if bias != 0.0:
        v = min(max(v, 1e-12), 1.0 - 1e-12)
        v = 1.0 / (1.0 + math.exp(-(math.log(v / (1.0 - v)) + bias)))
    return v


@njit(cache=True)
def _init_kernel(u_w, p_w, state, active, min_prev, correct, strong_tok, cheap_tok,
                 steps, regens):
    for i in range(state.shape[0]):
        state[i] = S0 if u_w[i, 0] < p_w[i] else S2
        active[i] = True
        min_prev[i] = 1.0
        correct[i] = False
        strong_tok[i] = 0
        cheap_tok[i] = 0
        steps[i] = 0
        regens[i] = 0


@njit(cache=True)
def _observe_kernel(t, idx, n_idx, state, length, z_draft, bias, cheap_tokens, table, z_lo,
                    inv_dz, score, tokens, is_final):
    # idx[:n_idx] lists the active episodes in increasing order (compacted every step,
    # so the work per step is proportional to the number of live episodes)
    j = t - 1
    for k in range(n_idx):
        i = idx[k]
        score[i] = _score_at(table, state[i], z_draft[i, j], bias[i], z_lo, inv_dz)
        tokens[i] = cheap_tokens[i, j]
        is_final[i] = length[i] == t


@njit(cache=True)
def _advance_kernel(t, idx, n_idx, actions, state, active, score, min_prev, min_rule, length,
                    u_w, u_s, p_w, p_s, cheap_tokens, strong_tokens, correct, strong_tok,
                    cheap_tok, steps, regens, rec_on, rec_state, rec_action, rec_score,
                    rec_strong_ok, rec_min_prev):
    """Advance every active episode by one step and compact ``idx``.

    Returns ``(n_active_after, bad)`` where ``bad`` is the first episode with an action
    outside {0, 1} (then nothing is advanced) or -1."""
    j = t - 1
    for k in range(n_idx):
        i = idx[k]
        if actions[i] != 0 and actions[i] != 1:
            return n_idx, i
    n_new = 0
    for k in range(n_idx):
        i = idx[k]
        a = actions[i]
        s = state[i]
        final = length[i] == t
        cheap_tok[i] += cheap_tokens[i, j]
        steps[i] = t
        strong_ok = -1
        if rec_on:
            rec_state[i, j] = s
            rec_action[i, j] = a
            rec_score[i, j] = score[i]
            rec_min_prev[i, j] = min_prev[i]
        if a == 0:
            if score[i] < min_prev[i]:
                min_prev[i] = score[i]
            if final:
                correct[i] = s == S0
                active[i] = False
            elif s == S0:
                state[i] = S0 if u_w[i, t] < p_w[i] else S2
            else:
                state[i] = S1
        else:
            strong_tok[i] += strong_tokens[i, j]
            regens[i] += 1
            if min_rule == 1 and score[i] < min_prev[i]:
                min_prev[i] = score[i]
            ok = (s != S1) and (u_s[i, j] < p_s[i])
            strong_ok = 1 if ok else 0
            if final:
                correct[i] = ok
                active[i] = False
            elif ok:
                state[i] = S0 if u_w[i, t] < p_w[i] else S2
            else:
                state[i] = S1
        if rec_on:
            rec_strong_ok[i, j] = strong_ok
        if active[i]:
            idx[n_new] = i
            n_new += 1
    return n_new, -1


# ============================================================================ results
@dataclass(frozen=True, eq=False)
class StepRecord:
    """Per-(problem, step) record of a run; entries past an episode's end are -1 / NaN.

    Attributes
    ----------
    state : ndarray[int8] (n, 30)
        Hidden state of the cheap draft at decision time.
    action : ndarray[int8] (n, 30)
        Executed action.
    score : ndarray[float32] (n, 30)
        PRM score of the draft (what the policy saw).
    min_prev : ndarray[float32] (n, 30)
        The ``min_prev`` feature the policy saw.
    strong_ok : ndarray[int8] (n, 30)
        1/0 if the step was regenerated and the rewrite was right/wrong, -1 otherwise.
    """

    state: NDArray[np.int8]
    action: NDArray[np.int8]
    score: NDArray[np.float32]
    min_prev: NDArray[np.float32]
    strong_ok: NDArray[np.int8]


@dataclass(frozen=True, eq=False)
class RoutingResult:
    """Per-problem outcome of running one policy on a world.

    Attributes
    ----------
    policy : str
    correct : ndarray[bool] (n,)
    strong_tokens, cheap_tokens : ndarray[int64] (n,)
        Tokens written by the strong model (regenerations) / drafted by the cheap model
        (every step is drafted, including the ones later regenerated).
    steps, regenerations : ndarray[int32] (n,)
    always_strong_tokens : ndarray[int64] (n,)
        Strong tokens the same problems cost when every step is regenerated (paired
        denominator of the cost fraction).
    record : StepRecord or None
    """

    policy: str
    correct: NDArray[np.bool_]
    strong_tokens: NDArray[np.int64]
    cheap_tokens: NDArray[np.int64]
    steps: NDArray[np.int32]
    regenerations: NDArray[np.int32]
    always_strong_tokens: NDArray[np.int64]
    record: StepRecord | None = None

    @property
    def n_problems(self) -> int:
        return int(self.correct.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.steps.sum())

    @property
    def accuracy(self) -> float:
        """Fraction of problems solved."""
        return float(self.correct.mean())

    @property
    def accuracy_stderr(self) -> float:
        """Binomial standard error of :attr:`accuracy`."""
        a = self.accuracy
        return math.sqrt(a * (1.0 - a) / max(1, self.n_problems - 1))

    @property
    def mean_strong_tokens(self) -> float:
        """Mean strong tokens per query."""
        return float(self.strong_tokens.mean())

    @property
    def cost_fraction(self) -> float:
        """Strong tokens as a fraction of the always-strong strong tokens on the same problems."""
        return float(self.strong_tokens.sum() / self.always_strong_tokens.sum())

    @property
    def regeneration_rate(self) -> float:
        """Fraction of steps regenerated."""
        return float(self.regenerations.sum() / max(1, self.n_steps))

    def summary(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "accuracy_stderr": self.accuracy_stderr,
                "mean_strong_tokens": self.mean_strong_tokens,
                "cost_fraction": self.cost_fraction,
                "regeneration_rate": self.regeneration_rate}


# ============================================================================ driver
def simulate_routing(source: Scenario | World | str, policy: BatchPolicy, *,
                     n_problems: int | None = None, seed: int | None = None,
                     record: bool = False, min_prev_rule: str = "kept") -> RoutingResult:
    """Run a :class:`BatchPolicy` on every problem of a world, all episodes in lockstep.

    Parameters
    ----------
    source : Scenario, World or str
        A world (for paired comparisons pass the same one to every policy), or a scenario /
        path / built-in name to sample one from (with ``n_problems``/``seed`` overrides).
    policy : BatchPolicy
    record : bool
        Keep the per-step :class:`StepRecord` (needed by :func:`routed_traces`).
    min_prev_rule : {"kept", "all"}
        Which earlier scores enter the ``min_prev`` feature (see the module docstring).

    Returns
    -------
    RoutingResult

    Raises
    ------
    ValueError
        The policy returned an array of the wrong shape or an action outside {0, 1}.
    """
    world = as_world(source, n_problems=n_problems, seed=seed)
    if min_prev_rule not in _MIN_RULES:
        raise ValueError(f"min_prev_rule must be one of {sorted(_MIN_RULES)}; "
                         f"got {min_prev_rule!r}")
    rule = _MIN_RULES[min_prev_rule]
    n = world.n_problems
    state = np.empty(n, np.int8)
    active = np.empty(n, np.bool_)
    min_prev = np.empty(n, np.float64)
    correct = np.empty(n, np.bool_)
    strong_tok = np.empty(n, np.int64)
    cheap_tok = np.empty(n, np.int64)
    steps = np.empty(n, np.int32)
    regens = np.empty(n, np.int32)
    score = np.zeros(n, np.float64)
    tokens = np.zeros(n, np.int64)
    is_final = np.zeros(n, np.bool_)
    shape = (n, MAX_STEPS) if record else (1, 1)
    rec_state = np.full(shape, -1, np.int8, order="F")
    rec_action = np.full(shape, -1, np.int8, order="F")
    rec_score = np.full(shape, np.nan, np.float32, order="F")
    rec_min = np.full(shape, np.nan, np.float32, order="F")
    rec_ok = np.full(shape, -1, np.int8, order="F")
    inv_dz = 1.0 / world.dz

    _init_kernel(world.u_w, world.p_w, state, active, min_prev, correct, strong_tok,
                 cheap_tok, steps, regens)
    idx = np.arange(n, dtype=np.int64)
    n_active = n
    name = getattr(policy, "name", type(policy).__name__)
    policy.reset_batch(n)
    for t in range(1, MAX_STEPS + 1):
        if n_active == 0:
            break
        _observe_kernel(t, idx, n_active, state, world.length, world.z_draft, world.bias,
                        world.cheap_tokens, world.score_table, world.z_lo, inv_dz, score,
                        tokens, is_final)
        truth = state if policy.needs_truth else None
        raw = policy.act(t, score, min_prev, tokens, is_final, active, truth)
        acts = _as_actions(raw, n, name, t)
        n_active, bad = _advance_kernel(t, idx, n_active, acts, state, active, score, min_prev,
                                        rule, world.length, world.u_w, world.u_s, world.p_w,
                                        world.p_s, world.cheap_tokens, world.strong_tokens,
                                        correct, strong_tok, cheap_tok, steps, regens, record,
                                        rec_state, rec_action, rec_score, rec_ok, rec_min)
        if bad >= 0:
            got = np.asarray(raw)[bad].item()
            raise ValueError(f"policy {name!r} returned action {got!r} for episode {bad} at "
                             f"step {t}; expected 0 (continue) or 1 (regenerate)")
        policy.executed(acts)
    rec = (StepRecord(state=rec_state, action=rec_action, score=rec_score, min_prev=rec_min,
                      strong_ok=rec_ok) if record else None)
    return RoutingResult(policy=name, correct=correct, strong_tokens=strong_tok,
                         cheap_tokens=cheap_tok, steps=steps, regenerations=regens,
                         always_strong_tokens=world._always_strong_tokens, record=rec)


def _as_actions(acts: Any, n: int, name: str, t: int) -> NDArray[np.int8]:
    a = np.asarray(acts)
    if a.shape != (n,):
        raise ValueError(f"policy {name!r} at step {t} returned actions of shape {a.shape}; "
                         f"expected ({n},)")
    if a.dtype == np.int8:
        return a
    if a.dtype.kind not in "biu":
        raise ValueError(f"policy {name!r} at step {t} returned actions of dtype {a.dtype}; "
                         "expected an integer or bool array of 0/1")
    # out-of-range values must survive the cast so that the kernel can report them
    return np.where((a == 0) | (a == 1), a, 2).astype(np.int8)


# ============================================================================ reference
def simulate_routing_python(source: Scenario | World | str, router: Any, *,
                            n_problems: int | None = None, seed: int | None = None,
                            problems: Sequence[int] | None = None) -> RoutingResult:
    """Plain-Python, one-episode-at-a-time reference simulator driving a *Router*.

    The router protocol is ``reset()``, ``step(prm_score, tokens, is_final) -> "continue" |
    "regenerate"`` and optionally ``executed(action)``; a router with ``needs_truth = True``
    gets ``truth=<hidden state>`` as a keyword.  Same semantics and draws as
    :func:`simulate_routing` (it is its independent reference implementation), but slow:
    use it on small worlds, e.g. to check a Router against its BatchPolicy.  The router
    keeps its own ``min_prev`` feature from the scores and decisions it sees.
    """
    world = as_world(source, n_problems=n_problems, seed=seed)
    idx = np.arange(world.n_problems) if problems is None else np.asarray(problems)
    m = len(idx)
    correct = np.zeros(m, bool)
    strong_tok = np.zeros(m, np.int64)
    cheap_tok = np.zeros(m, np.int64)
    steps = np.zeros(m, np.int32)
    regens = np.zeros(m, np.int32)
    needs_truth = bool(getattr(router, "needs_truth", False))
    for k, i in enumerate(idx):
        pw, ps, L = float(world.p_w[i]), float(world.p_s[i]), int(world.length[i])
        s = S0 if world.u_w[i, 0] < pw else S2
        router.reset()
        for t in range(1, L + 1):
            j = t - 1
            score = _py_score(world, s, float(world.z_draft[i, j]), float(world.bias[i]))
            final = t == L
            kw = {"truth": s} if needs_truth else {}
            decision = router.step(score, int(world.cheap_tokens[i, j]), final, **kw)
            if decision not in ("continue", "regenerate"):
                raise ValueError(f"router returned {decision!r}; expected 'continue' or "
                                 "'regenerate'")
            cheap_tok[k] += world.cheap_tokens[i, j]
            steps[k] = t
            if decision == "continue":
                if final:
                    correct[k] = s == S0
                elif s == S0:
                    s = S0 if world.u_w[i, t] < pw else S2
                else:
                    s = S1
            else:
                strong_tok[k] += world.strong_tokens[i, j]
                regens[k] += 1
                ok = s != S1 and world.u_s[i, j] < ps
                if final:
                    correct[k] = ok
                elif ok:
                    s = S0 if world.u_w[i, t] < pw else S2
                else:
                    s = S1
    ast = world.always_strong_tokens()[idx]
    return RoutingResult(policy=getattr(router, "name", type(router).__name__),
                         correct=correct, strong_tokens=strong_tok, cheap_tokens=cheap_tok,
                         steps=steps, regenerations=regens, always_strong_tokens=ast)


def _py_score(world: World, s: int, z: float, bias: float) -> float:
    grid_x = (z - world.z_lo) / world.dz
    g = world.score_table.shape[1]
    if grid_x <= 0:
        v = float(world.score_table[s, 0])
    elif grid_x >= g - 1:
        v = float(world.score_table[s, g - 1])
    else:
        k = int(grid_x)
        f = grid_x - k
        v = float(world.score_table[s, k] * (1 - f) + world.score_table[s, k + 1] * f)
    if bias != 0.0:
        v = min(max(v, 1e-12), 1 - 1e-12)
        v = 1.0 / (1.0 + math.exp(-(math.log(v / (1 - v)) + bias)))
    return v


# ============================================================================ traces
_LABELS = {S0: "correct", S2: "incorrect", S1: None}


def _single_model_states(u: NDArray[Any], p: NDArray[np.float64],
                         length: NDArray[np.int32]) -> NDArray[np.int8]:
    """Hidden state per step of a trace written entirely by one model: S0 before the first
    wrong step (``u >= p``), S2 at it, S1 after it, -1 past the end."""
    wrong = u >= p[:, None]
    first = np.where(wrong.any(axis=1), wrong.argmax(axis=1), MAX_STEPS)
    j = np.arange(MAX_STEPS)[None, :]
    st = np.where(j < first[:, None], S0, np.where(j == first[:, None], S2, S1)).astype(np.int8)
    st[j >= length[:, None]] = -1
    return st


def simulate_traces(source: Scenario | World | str, *, model: str = "cheap",
                    n_problems: int | None = None, seed: int | None = None,
                    problems: Sequence[int] | None = None) -> list[Any]:
    """Labelled single-model traces of the world's problems (for fitting the models).

    ``model="cheap"``: the cheap model writes every step (the always-cheap trajectory);
    ``model="strong"``: the strong model writes every step (step ``j`` right iff
    ``u_s[i, j] < p_s[i]`` after a right prefix).  Each step carries the PRM score, the
    token count and the first-error label: ``"correct"`` before the first wrong step,
    ``"incorrect"`` at it and ``None`` (not evidence) after it -- the ProcessBench
    convention, so ``hidden_state_labels`` gives S0 / S2 / S1.  ``final_correct`` is whether
    every step is right.  Trace ids are ``"<model>-<problem index>"``.
    """
    if model not in ("cheap", "strong"):
        raise ValueError(f"model must be 'cheap' or 'strong'; got {model!r}")
    world = as_world(source, n_problems=n_problems, seed=seed)
    idx = np.arange(world.n_problems) if problems is None else np.asarray(problems)
    u = world.u_w if model == "cheap" else world.u_s
    p = world.p_w if model == "cheap" else world.p_s
    z = world.z_draft if model == "cheap" else world.z_strong
    tok = world.cheap_tokens if model == "cheap" else world.strong_tokens
    states = _single_model_states(u[idx], p[idx], world.length[idx])
    sub_bias = world.bias[idx]
    scores = world.prm_scores(states, z[idx], sub_bias)
    from trim_pomdp.traces import Step, Trace

    out = []
    for k, i in enumerate(idx):
        L = int(world.length[i])
        steps = [Step(prm_score=float(scores[k, j]), tokens=int(tok[i, j]),
                      label=_LABELS[int(states[k, j])]) for j in range(L)]
        out.append(Trace(id=f"{model}-{int(i)}", model=model, steps=steps,
                         final_correct=bool(states[k, L - 1] == S0), problem=str(int(i))))
    return out


def routed_traces(world: World, result: RoutingResult, *,
                  problems: Sequence[int] | None = None) -> list[Any]:
    """Labelled traces of a recorded hybrid run (``simulate_routing(..., record=True)``).

    Step ``j`` of a trace is the step as written: by the cheap model when continued, by the
    strong model when regenerated.  ``prm_score`` is the score of the cheap draft the
    router saw, ``tokens`` the tokens of the written step, ``label`` the first-error label of
    the written step.  Extra fields (when the trace format accepts them) are ``writer``,
    ``decision``, ``draft_label``, ``cheap_tokens`` and ``strong_tokens``.
    """
    rec = result.record
    if rec is None:
        raise ValueError("routed_traces needs a result from simulate_routing(..., record=True)")
    if rec.state.shape[0] != world.n_problems:
        raise ValueError(f"result has {rec.state.shape[0]} problems; world has "
                         f"{world.n_problems}")
    idx = np.arange(world.n_problems) if problems is None else np.asarray(problems)
    from trim_pomdp.traces import Step, Trace

    out = []
    for i in idx:
        L = int(world.length[i])
        steps = []
        wrong_seen = False
        for j in range(L):
            a = int(rec.action[i, j])
            if a == 0:
                ok = int(rec.state[i, j]) == S0
            else:
                ok = int(rec.strong_ok[i, j]) == 1
            if wrong_seen:
                label = None
            else:
                label = "correct" if ok else "incorrect"
                wrong_seen = not ok
            extra = {
                "writer": "strong" if a == 1 else "cheap",
                "decision": "regenerate" if a == 1 else "continue",
                "draft_label": _LABELS[int(rec.state[i, j])],
                "cheap_tokens": int(world.cheap_tokens[i, j]),
                "strong_tokens": int(world.strong_tokens[i, j]) if a == 1 else 0,
            }
            tokens = int(world.strong_tokens[i, j] if a == 1 else world.cheap_tokens[i, j])
            steps.append(Step(prm_score=float(rec.score[i, j]), tokens=tokens, label=label,
                              extra=extra))
        out.append(Trace(id=f"{result.policy}-{int(i)}", model="hybrid", steps=steps,
                         final_correct=bool(result.correct[i]), problem=str(int(i))))
    return out


#: Former name of :func:`simulate_traces` (kept: piece router calls it).
generate_traces = simulate_traces
