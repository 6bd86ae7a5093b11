"""The model-based router families of the evaluation registry: each factory fits or builds
its model from ``options.scenario`` (never from the evaluation world), solves the lambda
grid and returns the bank's :class:`~trim_pomdp.routing.protocols.Family`.

Registered in :data:`trim_pomdp.evaluation.registry.FAMILY_FACTORIES` as
``"trim_pomdp.evaluation.families:<factory>"`` strings, imported on first use.
"""

from __future__ import annotations

from typing import Any

from trim_pomdp.evaluation.from_scenario import FitConfig, fit_from_scenario, fit_latent_model
from trim_pomdp.routing.bank import default_lambdas, solve_grid, solve_latent_grid
from trim_pomdp.routing.latent_model import LatentTrimModel
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.routing.protocols import Family

__all__ = ["pomdp_family", "pomdp_deploy_family", "pomdp_plus_family", "pomdp_plus_exact_family",
           "pomdp_mean_exact_family"]


def _n_lambdas(options: Any) -> int:
    return getattr(options, "n_params", None) or 32


def pomdp_family(options: Any = None, config: FitConfig | None = None) -> Family:
    """Factory of the ``"trim-pomdp"`` family for :func:`trim_pomdp.evaluation.sweep.evaluate`:
    fits the models on traces simulated from ``options.scenario`` with seed
    ``options.seed + 1`` (never the evaluation world), solves the lambda grid
    (``options.n_params`` lambdas, default 32) and returns the family."""
    scenario = getattr(options, "scenario", None)
    if scenario is None:
        raise ValueError(
            "the trim-pomdp family needs FamilyOptions(scenario=...) to fit its models"
        )
    cfg = config or FitConfig(seed=int(getattr(options, "seed", 0)) + 1,
                              n_lambdas=getattr(options, "n_params", None) or 32)
    model, _, _ = fit_from_scenario(scenario, cfg)
    return solve_grid(model, default_lambdas(model, cfg.n_lambdas)).family()

def pomdp_deploy_family(options: Any = None, config: FitConfig | None = None) -> Family:
    """Factory of the ``"trim-pomdp-deploy"`` family: like :func:`pomdp_family` but fitted
    on labelled traces of the *deployment* world (``options.deployment``, or
    ``options.scenario`` when there is no drift) -- the POMDP of a router that knows the
    deployment PRM, the reference of "gain kept" in
    :func:`trim_pomdp.evaluation.sweep.evaluate`."""
    scenario = getattr(options, "deployment", None) or getattr(options, "scenario", None)
    if scenario is None:
        raise ValueError(
            "the trim-pomdp-deploy family needs FamilyOptions(scenario=...) to fit its models"
        )
    cfg = config or FitConfig(seed=int(getattr(options, "seed", 0)) + 1,
                              n_lambdas=getattr(options, "n_params", None) or 32)
    model, _, _ = fit_from_scenario(scenario, cfg, world="deployment")
    return solve_grid(model, default_lambdas(model, cfg.n_lambdas)).family("trim-pomdp-deploy")


def pomdp_plus_family(options: Any = None, *, n_fit_problems: int = 4000,
                      max_classes: int = 3):
    """Factory of the ``"trim-pomdp+"`` family for :func:`trim_pomdp.evaluation.sweep.evaluate`
    (``evaluate(..., ["trim-pomdp+"])``).

    Like ``trim-pomdp`` it fits on traces simulated from ``options.scenario`` with seed
    ``options.seed + 1`` (never the evaluation world), through :func:`fit_latent_model`,
    and solves the same default lambda grid with :func:`solve_latent_grid`.
    """
    scenario = getattr(options, "scenario", None)
    if scenario is None:
        raise ValueError("the trim-pomdp+ family needs FamilyOptions(scenario=...)")
    model, _ = fit_latent_model(scenario, seed=int(getattr(options, "seed", 0)) + 1,
                                n_fit_problems=n_fit_problems, max_classes=max_classes)
    bank = solve_latent_grid(model, default_lambdas(model.base, _n_lambdas(options)))
    return bank.family("trim-pomdp+")


def pomdp_plus_exact_family(options: Any = None, *, n_difficulty: int = 3, n_bias: int = 3):
    """``"trim-pomdp+ (exact)"``: :meth:`LatentTrimModel.from_scenario` (the scenario's own
    spread quantised into classes; no fitting), for ablations."""
    scenario = getattr(options, "scenario", None)
    if scenario is None:
        raise ValueError("this family needs FamilyOptions(scenario=...)")
    model = LatentTrimModel.from_scenario(scenario, n_difficulty=n_difficulty, n_bias=n_bias)
    bank = solve_latent_grid(model, default_lambdas(model.base, _n_lambdas(options)))
    return bank.family("trim-pomdp+exact")


def pomdp_mean_exact_family(options: Any = None):
    """``"trim-pomdp (exact)"``: :meth:`TrimModel.from_scenario` (the scenario's means, no
    fitting) -- the ``D = B = 1`` counterpart of :func:`pomdp_plus_exact_family`."""
    scenario = getattr(options, "scenario", None)
    if scenario is None:
        raise ValueError("this family needs FamilyOptions(scenario=...)")
    model = TrimModel.from_scenario(scenario)
    return solve_grid(model, default_lambdas(model, _n_lambdas(options))).family(
        "trim-pomdp-exact")
