"""trim_pomdp: targeted stepwise routing (TRIM) with a compiled point-based POMDP solver.

Public names are imported lazily (PEP 562) so that ``import trim_pomdp`` stays fast and
never pulls in Numba, SciPy, matplotlib or a network client; each name is loaded from its
module the first time it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # errors
    "TrimPomdpError": "trim_pomdp.errors",
    "PomdpFormatError": "trim_pomdp.errors",
    "ModelValidationError": "trim_pomdp.errors",
    "ZeroProbabilityObservationError": "trim_pomdp.errors",
    "PolicyFormatError": "trim_pomdp.errors",
    "MemoryLimitError": "trim_pomdp.errors",
    "NotFittedError": "trim_pomdp.errors",
    "TraceFormatError": "trim_pomdp.errors",
    "ScenarioError": "trim_pomdp.errors",
    "RouterStateError": "trim_pomdp.errors",
    "InsufficientDataError": "trim_pomdp.errors",
    # issue 2: the engine
    "POMDP": "trim_pomdp.model",
    "SolverConfig": "trim_pomdp.solver",
    "SolveInfo": "trim_pomdp.solver",
    "solve": "trim_pomdp.solver",
    "solve_info": "trim_pomdp.solver",
    "AlphaVectorPolicy": "trim_pomdp.policy",
    "update_belief": "trim_pomdp.belief",
    "update_beliefs": "trim_pomdp.belief",
    "BeliefUpdater": "trim_pomdp.belief",
    "simulate": "trim_pomdp.simulate",
    # finite horizon with fully observed state variables (MOMDP)
    "FiniteHorizonPOMDP": "trim_pomdp.finite",
    "FiniteHorizonPolicy": "trim_pomdp.finite",
    "solve_finite": "trim_pomdp.finite",
    "solve_finite_many": "trim_pomdp.finite",
    # issue 3: fitting
    "Trace": "trim_pomdp.traces",
    "Step": "trim_pomdp.traces",
    "load_traces": "trim_pomdp.traces",
    "save_traces": "trim_pomdp.traces",
    "read_processbench": "trim_pomdp.processbench",
    "hidden_state_labels": "trim_pomdp.traces",
    "TransitionModel": "trim_pomdp.transition",
    "ObservationModel": "trim_pomdp.observation",
    "calibration_report": "trim_pomdp.calibration",
    "OutcomeEM": "trim_pomdp.outcome",
    # issue 4: the router
    "TrimModel": "trim_pomdp.trim",
    "PolicyBank": "trim_pomdp.trim",
    "load_bank": "trim_pomdp.trim",
    "solve_grid": "trim_pomdp.trim",
    "calibrate": "trim_pomdp.trim",
    "Router": "trim_pomdp.router",
    "Scenario": "trim_pomdp.scenario",
    "load_scenario": "trim_pomdp.scenario",
    "default_scenario": "trim_pomdp.scenario",
    "simulate_routing": "trim_pomdp.simulator",
    "evaluate": "trim_pomdp.evaluate",
    # issue 7: latent difficulty / PRM-bias classes
    "LatentTrimModel": "trim_pomdp.latent",
    "LatentFitter": "trim_pomdp.latent",
    # issue 15: routing that survives deployment
    "DriftMonitor": "trim_pomdp.drift",
    "BudgetPacer": "trim_pomdp.pacing",
    "PacedRouter": "trim_pomdp.pacing",
    "refit_bank": "trim_pomdp.refit",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trim_pomdp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: the next lookup is a plain attribute access
    return value


def __dir__() -> list[str]:
    return __all__
