"""The TRIM routing POMDP and its routers; it never imports ``fit``, ``simulation``,
``evaluation`` or ``rl``.

``model`` (the POMDP of one budget family), ``latent_model`` (TRIM-POMDP+, latent
episode classes), ``policy`` (a solved policy), ``bank`` (one policy per lambda, the grid
solve, the bank file), ``router`` (the online Bayes-filter router and its batch form),
``baselines`` (TRIM-Thr, always-*, random, oracle), ``step_policy`` (their base class, for
routers that decide from the step's features) and ``protocols`` (the interfaces the
simulator and the evaluation consume).
"""

from __future__ import annotations

from trim_pomdp._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "MAX_STEPS": "trim_pomdp.routing.model",
    "S0": "trim_pomdp.routing.model",
    "S1": "trim_pomdp.routing.model",
    "S2": "trim_pomdp.routing.model",
    "CONTINUE": "trim_pomdp.routing.model",
    "REGENERATE": "trim_pomdp.routing.model",
    "N_HIDDEN": "trim_pomdp.routing.model",
    "N_ACTIONS": "trim_pomdp.routing.model",
    "BudgetArrays": "trim_pomdp.routing.model",
    "TrimModel": "trim_pomdp.routing.model",
    "LatentTrimModel": "trim_pomdp.routing.latent_model",
    "shifted_beta_obs_matrix": "trim_pomdp.routing.latent_model",
    "latent_belief_points": "trim_pomdp.routing.latent_model",
    "TrimPolicy": "trim_pomdp.routing.policy",
    "FORMAT_VERSION": "trim_pomdp.routing.bank",
    "PolicyBank": "trim_pomdp.routing.bank",
    "default_lambdas": "trim_pomdp.routing.bank",
    "solve_grid": "trim_pomdp.routing.bank",
    "solve_latent_grid": "trim_pomdp.routing.bank",
    "load_latent_bank": "trim_pomdp.routing.bank",
    "Router": "trim_pomdp.routing.router",
    "TrimBatchPolicy": "trim_pomdp.routing.router",
    "ACTION_NAMES": "trim_pomdp.routing.router",
    "StepPolicy": "trim_pomdp.routing.step_policy",
    "BatchPolicy": "trim_pomdp.routing.protocols",
    "Family": "trim_pomdp.routing.protocols",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
