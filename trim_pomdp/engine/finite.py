"""Finite-horizon POMDPs with fully observed state variables (MOMDPs), and their solver.

The state is a pair ``(x, s)``: ``x`` in ``0..X-1`` is observed exactly at every decision
epoch (it is indexed, never filtered), ``s`` in ``0..S-1`` is hidden and tracked by a belief
``b`` over the S-simplex.  Decision epochs are ``t = 0..H-1``; after the decision of epoch
``H-1`` the terminal reward ``R_final[x, s]`` is collected.  The optimal value satisfies

.. math::

    V_H(x, b) = b \\cdot R_{final}[x], \\qquad
    V_t(x, b) = \\max_a \\Big[ b \\cdot R[t,a,x] + \\gamma \\sum_{x', o}
        P(x', o \\mid x, b, a)\\, V_{t+1}(x', b'_{x',o}) \\Big],

    b'_{x',o}(s') \\propto Z[t,a,x',s',o] \\sum_s b(s)\\, T[t,a,x,s,x',s'].

:func:`solve_finite` runs backward point-based value iteration in C++ (``trim_pomdp._core``):
one set of alpha vectors per ``(t, x)`` (a lower bound: every vector is the value of a
conditional plan) and a time-indexed fast informed bound tightened by sawtooth interpolation
at the belief points (an upper bound), so every solve reports the lower bound, upper bound
and gap at the initial belief.  :func:`solve_finite_many` solves many models (e.g. one per
budget lambda) in parallel on a C++ thread pool with the GIL released.

This module is the face of the three that implement it: the model
(:mod:`~trim_pomdp.engine.finite_model`), the policy and its file format
(:mod:`~trim_pomdp.engine.finite_policy`) and the solver (:mod:`~trim_pomdp.engine.finite_solver`).
"""

from __future__ import annotations

from trim_pomdp.engine.finite_model import FiniteHorizonPOMDP
from trim_pomdp.engine.finite_policy import FORMAT_VERSION, FiniteHorizonPolicy, FiniteSolveInfo
from trim_pomdp.engine.finite_solver import solve_finite, solve_finite_many

__all__ = [
    "FiniteHorizonPOMDP",
    "FiniteHorizonPolicy",
    "FiniteSolveInfo",
    "solve_finite",
    "solve_finite_many",
    "FORMAT_VERSION",
]
