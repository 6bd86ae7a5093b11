"""trim_pomdp: targeted stepwise routing (TRIM) with a compiled point-based POMDP solver.

The package reads in the order data flows (``docs/architecture.md``): the generic POMDP
``engine``; labelled reasoning ``traces``; the TRIM ``routing`` POMDP and its routers;
estimators that ``fit`` it on traces; the ``simulation`` world; the ``rl`` routers;
``evaluation`` of router families; ``serving`` against real models; the ``commands`` of the
CLI.  Each layer imports only from the layers before it.

Public names are imported lazily (PEP 562) so that ``import trim_pomdp`` stays fast and
never pulls in Numba, SciPy, matplotlib or a network client; each name is loaded from its
module the first time it is used.
"""

from __future__ import annotations

from trim_pomdp import _deprecated
from trim_pomdp._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it, by layer
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
    "FamilyUnavailableError": "trim_pomdp.errors",
    "EndpointConfigError": "trim_pomdp.errors",
    "EndpointError": "trim_pomdp.errors",
    "ResponseFormatError": "trim_pomdp.errors",
    "ProblemFormatError": "trim_pomdp.errors",
    "EpisodeError": "trim_pomdp.errors",
    "ResponseTooLargeError": "trim_pomdp.errors",
    "OutputLockedError": "trim_pomdp.errors",
    "OutputWriteError": "trim_pomdp.errors",
    "ResumeMismatchError": "trim_pomdp.errors",
    "RefitError": "trim_pomdp.errors",
    # engine: discrete POMDPs (infinite and finite horizon), solvers, policies, beliefs
    "POMDP": "trim_pomdp.engine.model",
    "SolverConfig": "trim_pomdp.engine.solver",
    "SolveInfo": "trim_pomdp.engine.solver",
    "solve": "trim_pomdp.engine.solver",
    "solve_info": "trim_pomdp.engine.solver",
    "AlphaVectorPolicy": "trim_pomdp.engine.policy",
    "update_belief": "trim_pomdp.engine.belief",
    "update_beliefs": "trim_pomdp.engine.belief",
    "BeliefUpdater": "trim_pomdp.engine.belief",
    "simulate": "trim_pomdp.engine.montecarlo",
    "FiniteHorizonPOMDP": "trim_pomdp.engine.finite",
    "FiniteHorizonPolicy": "trim_pomdp.engine.finite",
    "FiniteSolveInfo": "trim_pomdp.engine.finite",
    "solve_finite": "trim_pomdp.engine.finite",
    "solve_finite_many": "trim_pomdp.engine.finite",
    # traces: labelled reasoning traces and their readers
    "Trace": "trim_pomdp.traces.records",
    "Step": "trim_pomdp.traces.records",
    "load_traces": "trim_pomdp.traces.records",
    "save_traces": "trim_pomdp.traces.records",
    "hidden_state_labels": "trim_pomdp.traces.table",
    "read_processbench": "trim_pomdp.traces.processbench",
    # routing: the TRIM POMDP, its solved policies and banks, routers and baselines
    "TrimModel": "trim_pomdp.routing.model",
    "TrimPolicy": "trim_pomdp.routing.policy",
    "PolicyBank": "trim_pomdp.routing.bank",
    "solve_grid": "trim_pomdp.routing.bank",
    "default_lambdas": "trim_pomdp.routing.bank",
    "LatentTrimModel": "trim_pomdp.routing.latent_model",
    "Router": "trim_pomdp.routing.router",
    "ThresholdPolicy": "trim_pomdp.routing.baselines",
    "AlwaysCheap": "trim_pomdp.routing.baselines",
    "AlwaysStrong": "trim_pomdp.routing.baselines",
    "Family": "trim_pomdp.routing.protocols",
    "DriftMonitor": "trim_pomdp.routing.drift",
    "BudgetPacer": "trim_pomdp.routing.pacing",
    "PacedRouter": "trim_pomdp.routing.pacing",
    # fit: estimators fitted on traces
    "TransitionModel": "trim_pomdp.fit.transition",
    "ObservationModel": "trim_pomdp.fit.observation",
    "OutcomeEM": "trim_pomdp.fit.outcome",
    "LatentFitter": "trim_pomdp.fit.latent",
    "calibration_report": "trim_pomdp.fit.prm_calibration",
    "refit_bank": "trim_pomdp.fit.refit",
    # simulation: the generative world of routing episodes
    "Scenario": "trim_pomdp.simulation.scenario",
    "load_scenario": "trim_pomdp.simulation.scenario",
    "default_scenario": "trim_pomdp.simulation.scenario",
    "sample_world": "trim_pomdp.simulation.world",
    "simulate_routing": "trim_pomdp.simulation.world",
    # loading any saved bank (TRIM-POMDP, TRIM-POMDP+, RL)
    "load_bank": "trim_pomdp.banks",
    # evaluation: budget sweeps, metrics, calibration to a target cost
    "evaluate": "trim_pomdp.evaluation.sweep",
    "FamilyOptions": "trim_pomdp.evaluation.registry",
    "calibrate": "trim_pomdp.evaluation.budget",
    "FitConfig": "trim_pomdp.evaluation.from_scenario",
    "fit_from_scenario": "trim_pomdp.evaluation.from_scenario",
    "fit_latent_model": "trim_pomdp.evaluation.from_scenario",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

__getattr__, _dir = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return __all__


_deprecated.install()
