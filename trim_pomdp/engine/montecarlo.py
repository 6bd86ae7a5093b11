"""Monte Carlo evaluation of a policy on a discrete POMDP (Numba).

Each episode draws ``s_0 ~ b0`` and then, for ``t = 0 .. horizon-1``, takes
``a_t = pi(b_t)``, collects the expected immediate reward ``R[a_t, s_t]``, draws
``s_{t+1} ~ T[a_t, s_t, :]`` and ``o_t ~ Z[a_t, s_{t+1}, :]`` and updates the belief with
the Bayes filter of :mod:`trim_pomdp.engine.belief`.  The episode's return is

    G = sum_{t < horizon} discount^t R[a_t, s_t],

whose expectation is the policy's value from ``b0`` truncated at ``horizon`` (using
``R[a, s]``, the reward already averaged over ``s'`` and ``o``, lowers the variance without
changing the mean).  The truncated tail is at most ``discount^horizon max|R| / (1 - discount)``
in absolute value, reported as ``truncation_bound``; with ``horizon=None`` the horizon is
chosen so that this bound is below ``1e-3``.

``T`` is only ever used as compressed rows (the model's own ``T_csr`` when it is held
sparsely, else built from the dense ``T``): the successor is drawn by a binary search in the
row's cumulative sums, which picks the same state as the dense cumulative sums would for the
same uniform, so a model gives bit-identical returns whichever way it is stored, and a
RockSample[7,8] (12,545 states, 13 actions) is simulated without its 16 GB dense ``T``.

The estimate is the sample mean of the returns; its standard error is the sample standard
deviation (ddof=1) divided by ``sqrt(episodes)``.

Episodes run in chunks of about :data:`STEPS_PER_CHUNK` steps drawn from one random stream,
so the returns do not depend on the chunking.  With ``keep_returns=False`` only the running
count, mean and sum of squared deviations are kept (merged chunk by chunk with Chan et al.'s
update ``M2 = M2_a + M2_b + delta^2 n_a n_b / n``), so memory stays bounded whatever the
number of episodes; Ctrl-C between chunks returns the estimate from the episodes done.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray

from trim_pomdp.engine.belief import (
    belief_update_sparse_kernel,
    transition_csr,
)
from trim_pomdp.errors import (
    MemoryLimitError,
    ModelValidationError,
    ZeroProbabilityObservationError,
)

__all__ = ["SimulationResult", "simulate", "default_horizon"]

#: Target bound on the truncated tail when ``horizon=None``.
TRUNCATION_TOL = 1e-3
#: Largest horizon chosen automatically.
MAX_AUTO_HORIZON = 100_000
#: Steps simulated per compiled call (a chunk takes ~0.1 s; Ctrl-C and progress between).
STEPS_PER_CHUNK = 1 << 20
#: Largest ``returns`` array :func:`simulate` keeps (``keep_returns=True``), in MiB.
MAX_RETURNS_MB = 1024.0


@dataclass(frozen=True)
class SimulationResult:
    """Result of :func:`simulate`.

    Attributes
    ----------
    mean : float
        Mean discounted return over the episodes.
    stderr : float
        Standard error of ``mean``: ``std(returns, ddof=1) / sqrt(episodes)``.
    returns : ndarray of shape (episodes,), or None
        Discounted return of each episode (``None`` when ``keep_returns=False``).
    horizon : int
        Steps simulated per episode.
    discount : float
    seed : int
    truncation_bound : float
        ``discount^horizon max|R| / (1 - discount)`` (``inf`` for discount 1): the most the
        steps after ``horizon`` could add to the infinite-horizon return.
    n_episodes : int or None
        Episodes simulated (``None``: ``len(returns)``); fewer than requested when
        ``interrupted``.
    interrupted : bool
        Ctrl-C stopped the run between two chunks; the estimate uses the episodes done.
    """

    mean: float
    stderr: float
    returns: NDArray[np.float64] | None = field(repr=False)
    horizon: int
    discount: float
    seed: int
    truncation_bound: float
    n_episodes: int | None = None
    interrupted: bool = False

    @property
    def episodes(self) -> int:
        if self.n_episodes is not None:
            return int(self.n_episodes)
        assert self.returns is not None
        return int(self.returns.shape[0])

    def confidence_interval(self, z: float = 1.96) -> tuple[float, float]:
        """Normal-approximation interval ``mean ± z stderr``."""
        return (self.mean - z * self.stderr, self.mean + z * self.stderr)


@njit(cache=True, nogil=True)
def _sample(cum: Any, u: float) -> int:  # pragma: no cover - compiled
    # First index whose cumulative mass exceeds u * total: zero-probability entries have the
    # same cumulative value as their predecessor and so are never chosen.
    x = u * cum[cum.shape[0] - 1]
    lo = 0
    hi = cum.shape[0] - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] > x:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True, nogil=True)
def row_cumsum(indptr: Any, data: Any, out: Any) -> None:  # pragma: no cover - compiled
    """``out[p] = data[ptr[r]] + ... + data[p]`` for ``p`` in row ``r``'s segment
    ``ptr[r]:ptr[r+1]``: the cumulative sums of compressed rows, row by row.

    The sums are left to right, as ``np.cumsum`` of the dense row; the dense row's zeros
    add exactly ``0.0``, so ``out[p]`` is bit for bit the dense cumulative sum at column
    ``indices[p]``."""
    for r in range(indptr.shape[0] - 1):
        c = 0.0
        for p in range(indptr[r], indptr[r + 1]):
            c += data[p]
            out[p] = c


@njit(cache=True, nogil=True)
def sample_row(cum: Any, indices: Any, lo: int, hi: int, u: float) -> int:  # pragma: no cover
    """:func:`_sample` on one compressed row: ``cum[lo:hi]`` (from :func:`row_cumsum`,
    ``hi > lo``) at columns ``indices[lo:hi]``; returns the column.

    The first entry whose cumulative mass exceeds ``u * total`` is chosen.  A dense row's
    cumulative sums only rise at its non-zero entries, and only those are stored, so for
    the same ``u`` this is the column :func:`_sample` picks on the dense row (``u < 1``
    gives ``u * total < total``, so some entry always exceeds it)."""
    x = u * cum[hi - 1]
    last = hi - 1
    while lo < last:
        mid = (lo + last) // 2
        if cum[mid] > x:
            last = mid
        else:
            lo = mid + 1
    return int(indices[lo])


@njit(cache=True, nogil=True)
def simulate_kernel(
    T_indptr: Any,
    T_indices: Any,
    T_data: Any,
    Z: Any,
    R: Any,
    T_cum: Any,
    Z_indptr: Any,
    Z_indices: Any,
    Z_cum: Any,
    b0: Any,
    b0_cum: Any,
    alphas_t: Any,
    actions: Any,
    discount: Any,
    horizon: Any,
    u: Any,
    returns: Any,
    fail: Any,
) -> None:  # pragma: no cover - compiled
    """Fill ``returns[e]`` for every episode, taking uniforms in order from ``u`` (one per
    episode start, two per step: ``len(returns) * (1 + 2 * horizon)`` in all). The caller draws
    them with ``rng.random(out=...)``, the same numbers in the same order as one
    ``rng.random()`` call per draw. The kernel is not handed the ``np.random.Generator`` itself:
    numba's unboxing of a Generator runs Python attribute lookups (``.ctypes``,
    ``.state_address`` ...); with the Generator passed in, a Ctrl-C crashed the
    process with a segmentation fault in 3 of 30 interrupted ``trim-pomdp simulate`` runs (0 of
    40 without it), most likely a KeyboardInterrupt raised inside one of those lookups. ``T``
    comes in CSR form (:func:`~trim_pomdp.engine.belief.transition_csr` or
    ``POMDP.T_csr``) and both the action choice and the filter only visit the belief's
    support, so a step costs O(K |supp| + S + nnz) rather than O(K S + S^2). The successor and
    the observation are drawn from compressed rows too: ``T_cum`` holds the cumulative sums
    of ``T_data`` row by row (:func:`row_cumsum`, the same ``T_indptr``/``T_indices``), and
    ``Z_cum`` those of ``Z``'s rows ``a * S + s'`` (``Z_indptr``, ``Z_indices``), sampled by
    :func:`sample_row`, which picks the state the dense cumulative sums would for the same
    uniform. Only ``Z`` (``A x S x O``) is dense, for the filter's lookups; nothing is
    ``A x S x S``. The vectors come transposed, ``alphas_t[s, k] = alpha_k(s)``, so
    that the K dot products accumulate state by state over contiguous rows (a loop the compiler
    vectorises) instead of gathering ``alpha_k(supp[j])`` vector by vector; each sum still adds
    the same terms in the same order, so the chosen vector is unchanged. (Hallway2's 30 s
    policy, ~5,000 vectors of 92 states: the gathering loop took over 15 min for 10,000
    episodes.) On an impossible observation (only from floating-point underflow of the true
    state in the belief) writes (episode, step, a, o) to ``fail`` and returns early."""
    n_states = b0.shape[0]
    n_vec = alphas_t.shape[1]
    vals = np.empty(n_vec)
    b = np.empty(n_states)
    b_next = np.empty(n_states)
    supp = np.empty(n_states, dtype=np.int64)
    supp_next = np.empty(n_states, dtype=np.int64)
    iu = 0
    for ep in range(returns.shape[0]):
        n_supp = 0
        for i in range(n_states):
            b[i] = b0[i]
            if b0[i] > 0.0:
                supp[n_supp] = i
                n_supp += 1
        s = _sample(b0_cum, u[iu])
        iu += 1
        g = 0.0
        disc = 1.0
        for t in range(horizon):
            vals[:] = 0.0
            for j in range(n_supp):
                bj = b[supp[j]]
                row = alphas_t[supp[j]]
                for k in range(n_vec):
                    vals[k] += row[k] * bj
            best = -np.inf
            k_best = 0
            for k in range(n_vec):
                if vals[k] > best:
                    best = vals[k]
                    k_best = k
            a = actions[k_best]
            g += disc * R[a, s]
            row = a * n_states + s
            s2 = sample_row(T_cum, T_indices, T_indptr[row], T_indptr[row + 1], u[iu])
            row = a * n_states + s2
            o = sample_row(Z_cum, Z_indices, Z_indptr[row], Z_indptr[row + 1], u[iu + 1])
            iu += 2
            norm, n_next = belief_update_sparse_kernel(
                T_indptr, T_indices, T_data, Z, b, supp, n_supp, a, o, b_next, supp_next
            )
            if norm <= 0.0:
                fail[0] = ep
                fail[1] = t
                fail[2] = a
                fail[3] = o
                return
            b, b_next = b_next, b
            supp, supp_next = supp_next, supp
            n_supp = n_next
            s = s2
            disc *= discount
        returns[ep] = g


def _simulate_python(
    T_csr: Any, Z: Any, R: Any, T_cum: Any, Z_csr: Any, Z_cum: Any, b0: Any, b0_cum: Any,
    policy: Any, discount: float, horizon: int, rng: np.random.Generator, returns: Any,
    first_episode: int = 0,
) -> None:
    """:func:`simulate_kernel` for a policy that is only a Python ``action(belief) -> int``
    (slow: one Python call per step).  It draws the same uniforms in the same order, samples
    from the same compressed rows and filters with the same kernel, so a policy that acts
    like an alpha-vector policy gets the same returns for the same seed."""
    T_indptr, T_indices, T_data = T_csr
    Z_indptr, Z_indices = Z_csr
    n_actions, n_states = R.shape
    b = np.empty_like(b0)
    b_next = np.empty_like(b0)
    supp = np.empty(n_states, dtype=np.int64)
    supp_next = np.empty(n_states, dtype=np.int64)
    b0_supp = np.flatnonzero(b0 > 0.0)
    for ep in range(returns.shape[0]):
        b[:] = b0
        n_supp = b0_supp.shape[0]
        supp[:n_supp] = b0_supp
        s = int(_sample(b0_cum, rng.random()))
        g, disc = 0.0, 1.0
        for t in range(horizon):
            a = policy.action(b.copy())
            if (
                isinstance(a, (bool, np.bool_))
                or not isinstance(a, (int, np.integer))
                or not (0 <= a < n_actions)
            ):
                raise ValueError(
                    f"policy.action returned {a!r} at episode {first_episode + ep}, step {t}; "
                    "expected an "
                    f"action index in 0..{n_actions - 1}"
                )
            a = int(a)
            g += disc * R[a, s]
            row = a * n_states + s
            s2 = sample_row(T_cum, T_indices, T_indptr[row], T_indptr[row + 1], rng.random())
            row = a * n_states + s2
            o = sample_row(Z_cum, Z_indices, Z_indptr[row], Z_indptr[row + 1], rng.random())
            norm, n_supp = belief_update_sparse_kernel(
                T_indptr, T_indices, T_data, Z, b, supp, n_supp, a, o, b_next, supp_next
            )
            if norm <= 0.0:
                raise ZeroProbabilityObservationError(
                    f"episode {first_episode + ep}, step {t}: the simulated observation o={o} "
                    f"has zero probability under the filtered belief after action a={a}"
                )
            b, b_next = b_next, b
            supp, supp_next = supp_next, supp
            s = s2
            disc *= discount
        returns[ep] = g


def default_horizon(discount: float, max_abs_reward: float, tol: float = TRUNCATION_TOL) -> int:
    """Smallest ``H`` with ``discount^H max|R| / (1 - discount) <= tol`` (at least 1).

    Raises ``ValueError`` for ``discount >= 1`` (give the horizon explicitly then).
    """
    if discount >= 1.0:
        raise ValueError("horizon must be given explicitly when discount == 1")
    if max_abs_reward == 0.0:
        return 1
    h = math.log(tol * (1.0 - discount) / max_abs_reward) / math.log(discount)
    return int(min(max(1, math.ceil(h)), MAX_AUTO_HORIZON))


ProgressCallback = Callable[[int, int, float, float], Any]


def simulate(
    model: Any,
    policy: Any,
    episodes: int = 1000,
    horizon: int | None = None,
    seed: int = 0,
    *,
    keep_returns: bool = True,
    progress: ProgressCallback | None = None,
) -> SimulationResult:
    """Mean discounted return of ``policy`` on ``model`` by Monte Carlo, with its standard error.

    Parameters
    ----------
    model : POMDP
        Held densely or sparsely (``storage == "sparse"``: simulated from its compressed rows
        ``T_csr``, ``Z_csr``, with a dense ``Z`` of ``A x S x O`` for the filter; no
        ``A x S x S`` array is built), or anything with ``T (A,S,S)``, ``Z (A,S,O)``,
        ``R (A,S)``, ``discount`` and ``b0 (S,)``.  Both storages give identical returns.
    policy : AlphaVectorPolicy
        Or any object with ``alphas (K, S)`` and ``actions (K,)`` (both run compiled, after
        :meth:`AlphaVectorPolicy.check_model`), or any object with a method
        ``action(belief) -> int`` (run step by step from Python: slower, and with its own
        random stream).
    episodes : int
        Number of episodes, >= 2.
    horizon : int or None
        Steps per episode; ``None`` picks the smallest horizon whose truncated tail is
        ``<= 1e-3`` (see :func:`default_horizon`; required when ``discount == 1``).
    seed : int
        Seed in ``0 .. 2**32 - 1`` of a ``np.random.default_rng`` stream; the same seed
        gives the same returns.
    keep_returns : bool, default True
        Keep every episode's return in ``result.returns`` (8 bytes an episode, at most
        :data:`MAX_RETURNS_MB`).  ``False`` keeps only running moments: bounded memory for
        any number of episodes, the same ``mean`` and ``stderr`` up to rounding.
    progress : callable, optional
        Called after each chunk as ``progress(done, episodes, mean, stderr)``.

    Returns
    -------
    SimulationResult
        ``mean``, ``stderr``, ``returns``, ``horizon``, ``truncation_bound``, and
        ``interrupted`` (Ctrl-C between chunks: the estimate of the episodes done, if at
        least 2; otherwise the ``KeyboardInterrupt`` propagates).

    Raises
    ------
    PolicyFormatError
        If the policy does not fit the model.
    MemoryLimitError
        ``keep_returns=True`` and the returns would take more than :data:`MAX_RETURNS_MB`
        (raised before anything is simulated, with the memory they would need); or a
        sparse model whose dense ``Z`` would take more than
        :data:`~trim_pomdp.engine.model.DENSE_VIEW_MAX_MB`.
    ModelValidationError
        A row of ``T`` or ``Z`` with no non-zero entry (a stand-in model; ``POMDP`` rows
        sum to 1).
    ValueError
        Bad ``episodes``, ``horizon`` or ``seed``.
    """
    from trim_pomdp.engine.policy import AlphaVectorPolicy

    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 2:
        raise ValueError(f"episodes must be an integer >= 2; got {episodes!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (0 <= seed < 2**32):
        raise ValueError(f"seed must be an integer in 0..2**32-1; got {seed!r}")
    episodes = int(episodes)
    if keep_returns and episodes * 8 > MAX_RETURNS_MB * 2**20:
        raise MemoryLimitError(
            f"keeping the returns of {episodes} episodes needs {_fmt_bytes(episodes * 8)} "
            f"(8 bytes each), above the {MAX_RETURNS_MB:g} MB limit; pass keep_returns=False "
            "(as trim-pomdp simulate does) for the mean and standard error in bounded memory"
        )
    R = np.ascontiguousarray(model.R, dtype=np.float64)
    b0 = np.ascontiguousarray(model.b0, dtype=np.float64)
    discount = float(model.discount)
    python_policy = None
    if not isinstance(policy, AlphaVectorPolicy):
        if hasattr(policy, "alphas") and hasattr(policy, "actions"):
            policy = AlphaVectorPolicy(policy.alphas, policy.actions)
        elif callable(getattr(policy, "action", None)):
            python_policy = policy
        else:
            raise TypeError(
                "policy must be an AlphaVectorPolicy, have alphas and actions arrays, or have "
                f"an action(belief) -> int method; got {type(policy).__name__}"
            )
    if python_policy is None:
        policy.check_model(model)
    max_abs_r = float(np.max(np.abs(R))) if R.size else 0.0
    if horizon is None:
        horizon = default_horizon(discount, max_abs_r)
    elif isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1; got {horizon!r}")
    horizon = int(horizon)
    if discount < 1.0:
        trunc = discount**horizon * max_abs_r / (1.0 - discount)
    else:
        trunc = 0.0 if max_abs_r == 0.0 else math.inf

    T_csr, Z, Z_csr = _model_rows(model)
    T_cum = np.empty_like(T_csr[2])
    row_cumsum(T_csr[0], T_csr[2], T_cum)
    Z_cum = np.empty_like(Z_csr[2])
    row_cumsum(Z_csr[0], Z_csr[2], Z_cum)
    b0_cum = np.cumsum(b0)
    rng = np.random.default_rng(int(seed))
    chunk = int(max(1, min(episodes, STEPS_PER_CHUNK // horizon)))
    kept = np.empty(episodes) if keep_returns else None
    buf = np.empty(chunk)
    if python_policy is None:
        alphas_t = np.ascontiguousarray(np.asarray(policy.alphas).T)
        acts = np.ascontiguousarray(policy.actions)
        fail = np.full(4, -1, dtype=np.int64)
        draws = np.empty(chunk * (1 + 2 * horizon))
    done, mean, m2, shift = 0, 0.0, 0.0, 0.0
    interrupted = False
    try:
        while done < episodes:
            out = buf[: min(chunk, episodes - done)]
            if python_policy is not None:
                _simulate_python(T_csr, Z, R, T_cum, Z_csr[:2], Z_cum, b0, b0_cum,
                                 python_policy, discount, horizon, rng, out,
                                 first_episode=done)
            else:
                u = draws[: out.shape[0] * (1 + 2 * horizon)]
                rng.random(out=u)
                simulate_kernel(*T_csr, Z, R, T_cum, Z_csr[0], Z_csr[1], Z_cum, b0, b0_cum,
                                alphas_t, acts, discount, horizon, u, out, fail)
                if fail[0] >= 0:
                    raise ZeroProbabilityObservationError(
                        f"episode {done + fail[0]}, step {fail[1]}: the simulated observation "
                        f"o={fail[3]} has zero probability under the filtered belief after "
                        f"action a={fail[2]} (the true state underflowed out of the belief)"
                    )
            if kept is not None:
                kept[done : done + out.shape[0]] = out
            # Chan et al.: merge this chunk's moments into the running ones.  Moments are of
            # the returns minus the first one (shifted data), so equal returns give exactly
            # zero spread instead of rounding noise.
            if done == 0:
                shift = float(out[0])
            n_b = out.shape[0]
            dev = out - shift
            mean_b = float(np.mean(dev))
            m2_b = float(np.sum((dev - mean_b) ** 2))
            n = done + n_b
            delta = mean_b - mean
            mean += delta * n_b / n
            m2 += m2_b + delta * delta * done * n_b / n
            done = n
            if progress is not None:
                progress(done, episodes, shift + mean, math.sqrt(m2 / (done - 1) / done)
                         if done > 1 else math.nan)
    except KeyboardInterrupt:
        if done < 2:
            raise
        interrupted = True
    if kept is not None:
        returns = kept[:done]
        # the same numbers as one pass over every return
        mean = float(np.mean(returns))
        stderr = float(np.std(returns, ddof=1) / math.sqrt(done))
        returns.flags.writeable = False
    else:
        returns = None
        mean = shift + mean
        stderr = math.sqrt(m2 / (done - 1) / done)
    return SimulationResult(
        mean=float(mean),
        stderr=float(stderr),
        returns=returns,
        horizon=horizon,
        discount=discount,
        seed=int(seed),
        truncation_bound=float(trunc),
        n_episodes=done,
        interrupted=interrupted,
    )


def _dense_rows(X: NDArray[np.float64]) -> tuple[Any, Any, Any]:
    """Compressed rows ``(indptr, indices, data)`` of ``X (A, S, C)`` viewed as ``A * S``
    rows of ``C`` columns (:func:`~trim_pomdp.engine.belief.transition_csr` for any ``C``)."""
    A, S, C = X.shape
    flat = X.reshape(A * S, C)
    rows, cols = np.nonzero(flat)  # row-major order: rows ascending, columns ascending
    indptr = np.zeros(A * S + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=A * S), out=indptr[1:])
    return indptr, cols.astype(np.int64), flat[rows, cols].copy()


def _model_rows(model: Any) -> tuple[tuple[Any, Any, Any], Any, tuple[Any, Any, Any]]:
    """``(T rows, dense Z, Z rows)`` for the kernels, rows as int64/float64 ``(indptr,
    indices, data)``.  A sparse model's rows are used as they are, so no ``A x S x S`` array
    is ever built; ``Z`` is made dense (``A x S x O``) for the filter's lookups.

    Raises
    ------
    MemoryLimitError
        A sparse model whose dense ``Z`` would exceed ``DENSE_VIEW_MAX_MB``.
    ModelValidationError
        A row of ``T`` or ``Z`` without any non-zero entry (only possible for an unvalidated
        stand-in model: ``POMDP`` rows sum to 1).
    """
    from trim_pomdp.engine.model import DENSE_VIEW_MAX_MB

    if getattr(model, "storage", "dense") == "sparse":
        A, S, O = int(model.n_actions), int(model.n_states), int(model.n_observations)  # noqa: E741
        mb = 8.0 * A * S * O / 2**20
        if mb > DENSE_VIEW_MAX_MB:
            raise MemoryLimitError(
                f"simulate filters beliefs with a dense Z: this sparse model's Z of shape "
                f"({A}, {S}, {O}) would take {mb:.1f} MB, above DENSE_VIEW_MAX_MB="
                f"{DENSE_VIEW_MAX_MB:g} (its transitions stay compressed); use a model with "
                "fewer actions, states or observations"
            )
        rows = []
        for m in (model.T_csr, model.Z_csr):
            rows.append((np.ascontiguousarray(m[0], dtype=np.int64),
                         np.ascontiguousarray(m[1], dtype=np.int64),
                         np.ascontiguousarray(m[2], dtype=np.float64)))
        Z = np.ascontiguousarray(model.Z, dtype=np.float64)
        T_rows, Z_rows = rows
    else:
        T = np.ascontiguousarray(model.T, dtype=np.float64)
        Z = np.ascontiguousarray(model.Z, dtype=np.float64)
        T_rows = transition_csr(T)
        Z_rows = _dense_rows(Z)
    for name, (indptr, _, _) in (("T", T_rows), ("Z", Z_rows)):
        empty = np.flatnonzero(indptr[1:] == indptr[:-1])
        if empty.size:
            a, s = divmod(int(empty[0]), int(np.shape(model.R)[1]))
            state = "s" if name == "T" else "s'"
            raise ModelValidationError(
                f"{name}[a={a}, {state}={s}, :] has no non-zero entry "
                f"({empty.size} such rows); every row must be a probability distribution"
            )
    return T_rows, Z, Z_rows


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "bytes" else f"{int(n)} bytes"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - unreachable
