"""The generic discrete-POMDP engine; it knows nothing of TRIM.

``model`` (:class:`POMDP`, Cassandra ``.pomdp`` I/O), ``solver`` (HSVI2/SARSOP-style
point-based solve in C++), ``policy`` (alpha vectors, SARSOP ``.policy`` files), ``belief``
(the Bayes filter), ``montecarlo`` (the value of a policy by simulation) and ``finite``
(finite-horizon POMDPs with fully observed state variables, MOMDPs).
"""

from __future__ import annotations

from trim_pomdp._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "POMDP": "trim_pomdp.engine.model",
    "SolverConfig": "trim_pomdp.engine.solver",
    "SolveInfo": "trim_pomdp.engine.solver",
    "solve": "trim_pomdp.engine.solver",
    "solve_info": "trim_pomdp.engine.solver",
    "AlphaVectorPolicy": "trim_pomdp.engine.policy",
    "BeliefUpdater": "trim_pomdp.engine.belief",
    "update_belief": "trim_pomdp.engine.belief",
    "update_beliefs": "trim_pomdp.engine.belief",
    "SimulationResult": "trim_pomdp.engine.montecarlo",
    "simulate": "trim_pomdp.engine.montecarlo",
    "FiniteHorizonPOMDP": "trim_pomdp.engine.finite",
    "FiniteHorizonPolicy": "trim_pomdp.engine.finite",
    "FiniteSolveInfo": "trim_pomdp.engine.finite",
    "solve_finite": "trim_pomdp.engine.finite",
    "solve_finite_many": "trim_pomdp.engine.finite",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
