"""Anytime point-based solver for discrete POMDPs (HSVI2/SARSOP style, compiled C++).

The solver keeps two bounds on the optimal value function ``V*`` and reports both at the
initial belief ``b0``, as SARSOP does:

* a **lower bound** ``V_L(b) = max_k alpha_k . b`` over a set of alpha vectors, started from
  the best blind policy (``alpha_a = R_a + gamma T_a alpha_a``, one vector per action) and
  improved by point-based backups

  ``alpha(s) = R(a*, s) + gamma sum_{s'} T(s'|s,a*) sum_o Z(o|s',a*) alpha_o(s')``,

  where ``alpha_o`` is the best vector at ``tau(b, a*, o)`` and ``a*`` the best action;
* an **upper bound** ``V_U(b) = min(FIB(b), sawtooth(b))``: the fast informed bound
  ``Q(a,s) = R(a,s) + gamma sum_o max_{a'} sum_{s'} T(s'|s,a) Z(o|s',a) Q(a',s')`` and the
  sawtooth interpolation over the corner values and the belief points whose bound a backup
  ``V_U(b) <- max_a [R(b,a) + gamma sum_o p(o|b,a) V_U(tau(b,a,o))]`` lowered.

Beliefs ``tau(b,a,o)(s') = Z(o|s',a) sum_s T(s'|s,a) b(s) / p(o|b,a)`` are sampled depth
first from ``b0``: the action with the best upper bound, then the observation with the
largest weighted excess uncertainty ``p(o|b,a) [(V_U - V_L)(tau) - eps gamma^-(t+1)]``;
both bounds are backed up along the path on the way back.  Upper-bound points implied by
the others are pruned; alpha vectors are pruned only so that the set stays closed (each
survivor was backed up from survivors, or from vectors pointwise below one), so that
``V_L(b0)`` is the value of the returned greedy policy, not just of the sampled beliefs.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.errors import MemoryLimitError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from trim_pomdp.engine.model import POMDP
    from trim_pomdp.engine.policy import AlphaVectorPolicy

__all__ = ["SolverConfig", "SolveInfo", "solve", "solve_info"]

ProgressCallback = Callable[[float, float, float, int, int], Any]


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, kw_only=True)
class SolverConfig:
    """Settings of :func:`solve` / :func:`solve_info`.

    Parameters
    ----------
    time_limit : float, default 30.0
        Wall-clock seconds (``> 0``; ``math.inf`` for none).  The solver stops when it is
        reached and returns the bounds and policy found so far.
    target_gap : float, default 1e-3
        Absolute precision, like SARSOP's ``-p``: stop once
        ``upper_bound - lower_bound <= target_gap`` at ``b0``.
    max_iterations : int or None, default None
        Maximum number of sampling trials from ``b0`` (``None``: no limit).
    max_memory_mb : float, default 4096
        Limit on the solver's own storage (its copy of the model, alpha vectors, belief
        tree, bound points); the solve raises :class:`~trim_pomdp.errors.MemoryLimitError`
        when it would exceed it.  A model whose copy alone (:func:`solver_memory_bytes`)
        is over the limit is refused before anything is allocated.
    n_threads : int or None, default None
        Threads for the initial bounds; ``None`` uses every core available to the process.
        The sampling itself is sequential (see the README for the measurements).
    verbose : bool, default False
        Print a progress line (time, lower, upper, gap, alpha vectors) about every 0.5 s.
    alpha_precision : {"auto", "double", "single"}, default "auto"
        How the lower-bound vectors are stored.  ``"single"``: float32, each entry rounded
        down, so that every stored vector is still at most the backup it came from and the
        lower bound remains the value of the returned policy (whose ``alphas`` are then
        float32); half the memory, at a cost of at most one float32 rounding per backup,
        ``|error| <= 1.2e-7 max|R| / (1 - discount)^2`` (one float32 ulp per entry,
        discounted over the backups).  Needs ``discount < 1`` and
        ``max|R| / (1 - discount) < 1e30``.  ``"auto"`` is single precision for models of at
        least :data:`SINGLE_PRECISION_MIN_STATES` states that allow it (where the vectors
        are most of the memory: RockSample[7,8]'s 12,545 states, ~3,900 vectors after 30 s,
        390 MB in double precision), double otherwise.
    """

    time_limit: float = 30.0
    target_gap: float = 1e-3
    max_iterations: int | None = None
    max_memory_mb: float = 4096
    n_threads: int | None = None
    verbose: bool = False
    alpha_precision: str = "auto"

    def __post_init__(self) -> None:
        def real(name: str) -> float:
            value = getattr(self, name)
            numeric = (int, float, np.integer, np.floating)
            if isinstance(value, bool) or not isinstance(value, numeric):
                raise TypeError(f"SolverConfig.{name} must be a number; got {type(value).__name__}")
            return float(value)

        t = real("time_limit")
        if not (t > 0):
            raise ValueError(f"SolverConfig.time_limit must be > 0 seconds; got {t}")
        g = real("target_gap")
        if not (g > 0 and math.isfinite(g)):
            raise ValueError(f"SolverConfig.target_gap must be finite and > 0; got {g}")
        m = real("max_memory_mb")
        if not (m > 0 and math.isfinite(m)):
            raise ValueError(f"SolverConfig.max_memory_mb must be finite and > 0; got {m}")
        for name, low in (("max_iterations", 0), ("n_threads", 1)):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(
                    f"SolverConfig.{name} must be an int or None; got {type(value).__name__}"
                )
            if value < low:
                raise ValueError(f"SolverConfig.{name} must be >= {low}; got {value}")
        if self.alpha_precision not in ("auto", "double", "single"):
            raise ValueError(
                "SolverConfig.alpha_precision must be 'auto', 'double' or 'single'; "
                f"got {self.alpha_precision!r}"
            )
        if not isinstance(self.verbose, bool):
            got = type(self.verbose).__name__
            raise TypeError(f"SolverConfig.verbose must be a bool; got {got}")


@dataclass(frozen=True, kw_only=True)
class SolveInfo:
    """Diagnostics of a solve, all at the initial belief ``b0``.

    Attributes
    ----------
    lower_bound, upper_bound : float
        ``V_L(b0) <= V*(b0) <= V_U(b0)``; ``lower_bound`` is the value of the returned policy's
        alpha vectors at ``b0``.
    gap : float
        ``upper_bound - lower_bound``.
    time_s : float
        Wall-clock seconds of the solve (initial bounds included).
    iterations : int
        Sampling trials from ``b0``.
    n_alpha : int
        Alpha vectors of the returned policy.
    n_beliefs : int
        Beliefs in the solver's belief tree.
    history : ndarray of shape (N, 5)
        Rows ``(time_s, lower_bound, upper_bound, n_alpha, iteration)`` recorded whenever the
        bounds at ``b0`` changed (at most every millisecond) plus the first and last state.
    interrupted : bool
        True when Ctrl-C stopped the solve; the policy is the best one found so far.
    memory_mb : float
        The solver's own storage at the end (its memory accounting; see ``max_memory_mb``).
    """

    lower_bound: float
    upper_bound: float
    gap: float
    time_s: float
    iterations: int
    n_alpha: int
    n_beliefs: int
    history: NDArray[np.float64] = field(repr=False)
    interrupted: bool = False
    memory_mb: float = 0.0


#: ``alpha_precision="auto"`` stores the vectors in single precision from this many states.
SINGLE_PRECISION_MIN_STATES = 4096


def _single_alphas(precision: str, R: np.ndarray, discount: float) -> bool:
    """Whether the solver stores float32 vectors (see ``SolverConfig.alpha_precision``)."""
    if precision == "double":
        return False
    if precision == "single":
        return True  # the binding says why when the model does not allow it
    bound = float(np.max(np.abs(R))) / (1.0 - discount) if discount < 1.0 else math.inf
    return R.shape[1] >= SINGLE_PRECISION_MIN_STATES and bound < 1e30


def _model_arrays(model: Any) -> tuple[Any, Any, np.ndarray, float, np.ndarray]:
    """``(T, Z, R, discount, b0)``: ``T``, ``Z`` dense arrays, or compressed-row tuples
    ``(ptr, idx, val, n_cols)`` for a model held sparsely (``model.storage == "sparse"``)."""
    try:
        R, discount, b0 = model.R, model.discount, model.b0
        if getattr(model, "storage", "dense") == "sparse":
            T, Z = model.T_csr, model.Z_csr
        else:
            T = np.ascontiguousarray(model.T, dtype=np.float64)
            Z = np.ascontiguousarray(model.Z, dtype=np.float64)
    except AttributeError:
        raise TypeError(
            "model must be a trim_pomdp.POMDP (with T, Z, R, discount, b0); "
            f"got {type(model).__name__}"
        ) from None
    return (
        T,
        Z,
        np.ascontiguousarray(R, dtype=np.float64),
        float(discount),
        np.ascontiguousarray(b0, dtype=np.float64),
    )


def _sizes_nnz(T: Any, Z: Any) -> tuple[int, int, int, int]:
    """``(A, S, O, nnz(T) + nnz(Z))`` of dense arrays or compressed-row tuples."""
    if isinstance(T, tuple):
        S, O = int(T[3]), int(Z[3])  # noqa: E741
        A = (len(T[0]) - 1) // S
        return A, S, O, len(T[2]) + len(Z[2])
    A, S, O = T.shape[0], T.shape[1], Z.shape[2]  # noqa: E741
    return A, S, O, int(np.count_nonzero(T) + np.count_nonzero(Z))


def solver_memory_bytes(T: Any, Z: Any) -> dict[str, float]:
    """Bytes the solver holds before its first iteration, from the model's sizes and non-zeros.

    ``T``, ``Z``: dense arrays or compressed-row tuples ``(ptr, idx, val, n_cols)``.
    ``model``: its copies of ``R`` and ``b0``, ``8 (A S + S)`` (it keeps no dense ``T``,
    ``Z``: its rows are built straight from the arrays); ``sparse``: the compressed rows of
    ``T`` and ``Z`` it samples and backs up with, 12 bytes (a 4-byte index and an 8-byte
    value) per non-zero plus 16 bytes of row offsets per ``(a, s)``; ``bounds``: the blind
    lower bound, the fast informed bound and the scratch rows (``8 (3 A S + 8 S)``).  A lower
    bound on the peak, computed without allocating.
    """
    A, S, O, nnz = _sizes_nnz(T, Z)  # noqa: E741
    return {
        "model": 8.0 * (A * S + S),
        "sparse": 12.0 * nnz + 16.0 * A * S,
        "bounds": 8.0 * (3 * A * S + 8 * S),
    }


def _check_memory(T: Any, Z: Any, max_memory_mb: float) -> None:
    """Refuse, before the solver allocates anything, a model that cannot fit the limit."""
    from trim_pomdp.errors import MemoryLimitError

    parts = solver_memory_bytes(T, Z)
    total = sum(parts.values()) / 2**20
    if total > max_memory_mb:
        A, S, O, _ = _sizes_nnz(T, Z)  # noqa: E741
        raise MemoryLimitError(
            f"the solver needs at least {total:.1f} MB for a model of {S} states, {A} actions "
            f"and {O} observations (sparse rows of T and Z {parts['sparse'] / 2**20:.1f} MB, "
            f"R and b0 {parts['model'] / 2**20:.1f} MB, initial bounds "
            f"{parts['bounds'] / 2**20:.1f} MB) before its first iteration, above "
            f"max_memory_mb={max_memory_mb:g}; raise max_memory_mb or use a smaller model"
        )


def _solve_arrays(
    T: Any,
    Z: Any,
    R: NDArray[np.float64],
    discount: float,
    b0: NDArray[np.float64],
    config: SolverConfig,
    progress: ProgressCallback | None = None,
    tol: float = 1e-6,
) -> dict[str, Any]:
    """Run the compiled solver on plain arrays (``T``, ``Z`` dense or compressed-row tuples);
    returns the binding's result dict.

    Rows of ``T``, ``Z`` and ``b0`` must sum to 1 within ``tol`` (the model's own tolerance);
    the solver renormalises them to sum to 1 exactly, as its bounds require.
    """
    from trim_pomdp import _core

    sparse = isinstance(T, tuple) and isinstance(Z, tuple)
    if sparse or (T.ndim == 3 and Z.ndim == 3):  # other shapes: the binding names them
        _check_memory(T, Z, config.max_memory_mb)
    callback = progress
    if config.verbose:
        print(f"{'time_s':>8} {'lower':>12} {'upper':>12} {'gap':>10} {'alphas':>7}", flush=True)

        def callback(t: float, lb: float, ub: float, n_alpha: int, it: int) -> None:
            print(f"{t:8.2f} {lb:12.6g} {ub:12.6g} {ub - lb:10.4g} {n_alpha:7d}", flush=True)
            if progress is not None:
                progress(t, lb, ub, n_alpha, it)

    try:
        result: Any = _core.solve_pomdp(
            T,
            Z,
            R,
            discount,
            b0,
            time_limit=config.time_limit if math.isfinite(config.time_limit) else 1e300,
            target_gap=config.target_gap,
            max_iterations=-1 if config.max_iterations is None else int(config.max_iterations),
            max_memory_mb=config.max_memory_mb,
            n_threads=config.n_threads if config.n_threads is not None else _default_threads(),
            progress=callback,
            tol=tol,
            single_alphas=_single_alphas(config.alpha_precision, R, discount),
        )
    except MemoryError as exc:
        if isinstance(exc, MemoryLimitError):
            raise
        # std::bad_alloc: the machine has less memory than max_memory_mb promised
        raise MemoryLimitError(
            f"out of memory in the solver (std::bad_alloc) below max_memory_mb="
            f"{config.max_memory_mb:g}: the machine has less free memory than the limit; "
            "lower max_memory_mb or use a smaller model"
        ) from None
    if config.verbose:
        lb, ub = result["lower_bound"], result["upper_bound"]
        print(
            f"{result['time_s']:8.2f} {lb:12.6g} {ub:12.6g} {ub - lb:10.4g} "
            f"{len(result['actions']):7d}",
            flush=True,
        )
        if result["interrupted"]:
            print("interrupted: returning the best policy found so far", file=sys.stderr,
                  flush=True)
    return dict(result)


def solve_info(
    model: POMDP, solver: SolverConfig | None = None, *, progress: ProgressCallback | None = None
) -> tuple[AlphaVectorPolicy, SolveInfo]:
    """Solve ``model`` and return the policy with the solver's diagnostics.

    Parameters
    ----------
    model : POMDP
        The model (``T[a,s,s']``, ``Z[a,s',o]``, ``R[a,s]``, ``discount`` in (0, 1], ``b0``).
        With ``discount == 1`` the problem must be episodic: the blind-policy evaluation
        ``alpha_a = R_a + T_a alpha_a`` must converge for at least one action, otherwise a
        ``ValueError`` says so.
    solver : SolverConfig, optional
        Settings; ``SolverConfig()`` by default.
    progress : callable, optional
        Called about every 0.5 s (GIL held) as ``progress(time_s, lower, upper, n_alpha,
        iteration)``; an exception it raises stops the solve and propagates.

    Returns
    -------
    policy : AlphaVectorPolicy
        Alpha vectors ``(K, S)`` with their actions; ``policy.value(b0) == info.lower_bound``.
    info : SolveInfo
        Bounds, gap, time, counts and the bound history at ``b0``.

    Raises
    ------
    MemoryLimitError
        The solver's storage would exceed ``solver.max_memory_mb``.
    ModelValidationError
        The arrays are not a proper POMDP (negative/non-finite entries, rows not summing to 1).

    Notes
    -----
    Ctrl-C during the solve stops it and returns the best policy found so far with
    ``info.interrupted == True``.
    """
    config = SolverConfig() if solver is None else solver
    if not isinstance(config, SolverConfig):
        raise TypeError(f"solver must be a SolverConfig; got {type(config).__name__}")
    T, Z, R, discount, b0 = _model_arrays(model)
    tol = float(getattr(model, "tol", 1e-6))  # files are read with a looser tolerance
    result = _solve_arrays(T, Z, R, discount, b0, config, progress, tol)

    from trim_pomdp.engine.policy import AlphaVectorPolicy

    names = getattr(model, "action_names", None)
    # The binding's array is ours alone: the policy takes it over rather than copying it.
    policy = AlphaVectorPolicy._adopt(
        result.pop("alphas"), result["actions"], action_names=list(names) if names else None
    )
    info = SolveInfo(
        lower_bound=float(result["lower_bound"]),
        upper_bound=float(result["upper_bound"]),
        gap=float(result["gap"]),
        time_s=float(result["time_s"]),
        iterations=int(result["iterations"]),
        n_alpha=int(len(result["actions"])),
        n_beliefs=int(result["n_beliefs"]),
        history=result["history"],
        interrupted=bool(result["interrupted"]),
        memory_mb=float(result["memory_mb"]),
    )
    return policy, info


def solve(model: POMDP, solver: SolverConfig | None = None) -> AlphaVectorPolicy:
    """Solve ``model`` and return its policy; see :func:`solve_info` for the details."""
    return solve_info(model, solver)[0]
