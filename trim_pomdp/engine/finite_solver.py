"""Solve finite-horizon MOMDPs (:class:`~trim_pomdp.engine.finite_model.FiniteHorizonPOMDP`).

:func:`solve_finite` runs backward point-based value iteration in C++ (``trim_pomdp._core``):
one set of alpha vectors per ``(t, x)`` (a lower bound: every vector is the value of a
conditional plan) and a time-indexed fast informed bound tightened by sawtooth interpolation
at the belief points (an upper bound), so every solve reports the lower bound, upper bound
and gap at the initial belief.  :func:`solve_finite_many` solves many models (e.g. one per
budget lambda) in parallel on a C++ thread pool with the GIL released.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from trim_pomdp.engine.finite_model import FiniteHorizonPOMDP, _readonly
from trim_pomdp.engine.finite_policy import FiniteHorizonPolicy, FiniteSolveInfo

__all__ = ["solve_finite", "solve_finite_many"]


def _default_grid(n_hidden: int) -> int:
    """Simplex grid resolution used when ``grid_resolution=None``: dense for tiny S."""
    return {1: 1, 2: 16, 3: 4, 4: 3}.get(n_hidden, 0)


def _solver_kwargs(
    n_hidden: int,
    belief_points: ArrayLike | None,
    grid_resolution: int | None,
    n_samples: int,
    n_refine: int,
    target_gap: float,
    n_threads: int | None,
    seed: int,
    share_slices: bool,
    sawtooth: bool,
) -> dict[str, Any]:
    def _int(value: Any, name: str, lo: int) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ValueError(f"{name} must be an int >= {lo}; got {value!r}")
        return int(value)

    bp = None
    if belief_points is not None:
        bp = np.asarray(belief_points, dtype=np.float64)
        if bp.ndim != 2 or bp.shape[1] != n_hidden:
            raise ValueError(
                f"belief_points must have shape (n_points, n_hidden) = (M, {n_hidden}); got "
                f"{bp.shape}"
            )
        if not np.all(np.isfinite(bp)) or np.any(bp < 0):
            raise ValueError("belief_points must be finite and non-negative")
        bad = np.abs(bp.sum(axis=1) - 1.0) > 1e-6
        if np.any(bad):
            i = int(np.argmax(bad))
            raise ValueError(
                f"belief_points[{i}] sums to {bp[i].sum():.10g}; expected 1 (tol 1e-06)"
            )
        bp = bp / bp.sum(axis=1, keepdims=True)
    grid = _default_grid(n_hidden) if grid_resolution is None else _int(
        grid_resolution, "grid_resolution", 0
    )
    if not (isinstance(target_gap, (int, float)) and target_gap >= 0 and math.isfinite(target_gap)):
        raise ValueError(f"target_gap must be a finite number >= 0; got {target_gap!r}")
    return {
        "belief_points": bp,
        "grid_resolution": grid,
        "n_samples": _int(n_samples, "n_samples", 0),
        "n_refine": _int(n_refine, "n_refine", 0),
        "target_gap": float(target_gap),
        "n_threads": None if n_threads is None else _int(n_threads, "n_threads", 1),
        "seed": _int(seed, "seed", 0),
        "share_slices": bool(share_slices),
        "sawtooth": bool(sawtooth),
    }


def _policy_from_result(res: Mapping[str, Any], model: FiniteHorizonPOMDP) -> FiniteHorizonPolicy:
    info = FiniteSolveInfo(
        lower_bound=float(res["lower_bound"]),
        upper_bound=float(res["upper_bound"]),
        gap=float(res["gap"]),
        time_s=float(res["time_s"]),
        n_alpha=int(res["actions"].shape[0]),
        n_beliefs=int(res["n_beliefs"]),
        n_passes=int(res["n_passes"]),
        history=_readonly(res["history"]),
    )
    return FiniteHorizonPolicy(
        res["alphas"],
        res["actions"],
        res["offsets"],
        horizon=model.horizon,
        n_observed=model.n_observed,
        lower_bound=info.lower_bound,
        upper_bound=info.upper_bound,
        gap=info.gap,
        time_s=info.time_s,
        info=info,
    )


def solve_finite(
    model: FiniteHorizonPOMDP,
    *,
    belief_points: ArrayLike | None = None,
    grid_resolution: int | None = None,
    n_samples: int = 32,
    n_refine: int = 0,
    target_gap: float = 0.0,
    n_threads: int | None = None,
    seed: int = 0,
    share_slices: bool = True,
    sawtooth: bool = True,
    return_info: bool = False,
) -> FiniteHorizonPolicy | tuple[FiniteHorizonPolicy, FiniteSolveInfo]:
    """Solve a finite-horizon MOMDP by backward point-based value iteration (C++).

    Parameters
    ----------
    model : FiniteHorizonPOMDP
    belief_points : array_like, shape (M, S), optional
        Extra hidden beliefs added to the belief set of every ``(t, x)``.
    grid_resolution : int, optional
        Add the simplex grid ``{b : b(s) in {0, 1/r, ..., 1}}`` at every ``(t, x)``.
        ``None`` picks a default by ``n_hidden`` (S=2: 16, S=3: 4, S=4: 3, larger: none);
        0 disables the grid.  The corners of the simplex are always included.
    n_samples : int, default 32
        Trajectories simulated forward from the initial belief per pass; their beliefs join
        the belief sets.  The first pass follows the fast informed bound (half) and random
        actions (half); each refinement pass follows the current lower-bound policy (half)
        and the upper bound towards the successor of largest gap (half).
    n_refine : int, default 0
        Refinement passes (each a full backward pass on the enlarged belief sets).
    target_gap : float, default 0
        Skip the remaining refinement passes once ``upper - lower <= target_gap`` at b0.
    n_threads : int, optional
        Threads within the solve (default: all cores).
    seed : int, default 0
        Seed of the forward sampling; equal seeds give equal results.
    share_slices : bool, default True
        Compute once per group of observed values with identical transition slices (the
        results are the same either way; ``False`` exists for testing).
    sawtooth : bool, default True
        Also tighten the upper bound by sawtooth interpolation at the sampled belief points
        (the grid interpolation and the fast informed bound are always used).
    return_info : bool, default False
        Also return the :class:`FiniteSolveInfo` (always available as ``policy.info``).

    Returns
    -------
    FiniteHorizonPolicy or (FiniteHorizonPolicy, FiniteSolveInfo)
    """
    if not isinstance(model, FiniteHorizonPOMDP):
        raise TypeError(f"model must be a FiniteHorizonPOMDP; got {type(model).__name__}")
    from trim_pomdp import _core

    kw = _solver_kwargs(
        model.n_hidden, belief_points, grid_resolution, n_samples, n_refine, target_gap,
        n_threads, seed, share_slices, sawtooth,
    )
    res = _core.solve_finite(model._core_dict(), **kw)
    pol = _policy_from_result(res, model)
    if return_info:
        assert pol.info is not None
        return pol, pol.info
    return pol


def solve_finite_many(
    models: list[FiniteHorizonPOMDP],
    *,
    belief_points: ArrayLike | None = None,
    grid_resolution: int | None = None,
    n_samples: int = 32,
    n_refine: int = 0,
    target_gap: float = 0.0,
    n_threads: int | None = None,
    seed: int = 0,
    share_slices: bool = True,
    sawtooth: bool = True,
) -> list[FiniteHorizonPolicy]:
    """Solve many models in parallel on a C++ thread pool (GIL released).

    Same options as :func:`solve_finite`; each model is solved exactly as
    ``solve_finite(model, ...)`` would solve it with the same seed (the results are equal),
    ``n_threads`` workers taking models in turn.  Typical use: one model per budget lambda
    (same T and Z, different R, see :meth:`FiniteHorizonPOMDP.with_rewards`).  An error in
    any model is raised here after all workers stopped.
    """
    models = list(models)
    for i, m in enumerate(models):
        if not isinstance(m, FiniteHorizonPOMDP):
            raise TypeError(f"models[{i}] must be a FiniteHorizonPOMDP; got {type(m).__name__}")
    if not models:
        return []
    S = models[0].n_hidden
    for i, m in enumerate(models):
        if m.n_hidden != S and belief_points is not None:
            raise ValueError(
                f"models[{i}] has n_hidden={m.n_hidden}, models[0] has {S}: belief_points "
                "cannot fit both"
            )
    from trim_pomdp import _core

    kw = _solver_kwargs(
        S, belief_points, grid_resolution, n_samples, n_refine, target_gap, n_threads, seed,
        share_slices, sawtooth,
    )
    results = _core.solve_finite_many([m._core_dict() for m in models], **kw)
    return [_policy_from_result(r, m) for r, m in zip(results, models, strict=True)]
