"""Finite-horizon POMDPs with fully observed state variables (MOMDPs), and their solver.

This module is the face of the three that implement them: the model and its Bellman
equation (:mod:`~trim_pomdp.engine.finite_model`), the policy and its file format
(:mod:`~trim_pomdp.engine.finite_policy`) and the point-based solver
(:mod:`~trim_pomdp.engine.finite_solver`).
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
