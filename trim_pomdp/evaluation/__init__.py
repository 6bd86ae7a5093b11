"""Evaluation of router families: ``sweep`` (budget sweeps to cost/accuracy curves, paired
bootstrap), ``registry`` (the families by name), ``families`` (the model-based families),
``query_routing`` (query-level routers), ``metrics`` (CPT, ΔIBC, APGR), ``budget`` (the
lambda for a target cost), ``from_scenario`` (fit the models on a scenario's traces) and
``plots``.
"""

from __future__ import annotations

from trim_pomdp._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "FamilyUnavailableError": "trim_pomdp.evaluation.sweep",
    "Curve": "trim_pomdp.evaluation.sweep",
    "Evaluation": "trim_pomdp.evaluation.sweep",
    "evaluate": "trim_pomdp.evaluation.sweep",
    "paired_bootstrap": "trim_pomdp.evaluation.sweep",
    "compare": "trim_pomdp.evaluation.sweep",
    "EvalContext": "trim_pomdp.evaluation.registry",
    "QueryFamily": "trim_pomdp.evaluation.registry",
    "AnyFamily": "trim_pomdp.evaluation.registry",
    "FamilyOptions": "trim_pomdp.evaluation.registry",
    "threshold_family": "trim_pomdp.evaluation.registry",
    "random_family": "trim_pomdp.evaluation.registry",
    "oracle_family": "trim_pomdp.evaluation.registry",
    "always_cheap_family": "trim_pomdp.evaluation.registry",
    "always_strong_family": "trim_pomdp.evaluation.registry",
    "query_oracle_family": "trim_pomdp.evaluation.registry",
    "query_oracle_cheapest_family": "trim_pomdp.evaluation.registry",
    "automix_family": "trim_pomdp.evaluation.registry",
    "FamilyFactory": "trim_pomdp.evaluation.registry",
    "FAMILY_FACTORIES": "trim_pomdp.evaluation.registry",
    "DEFAULT_FAMILIES": "trim_pomdp.evaluation.registry",
    "register_family": "trim_pomdp.evaluation.registry",
    "resolve_family": "trim_pomdp.evaluation.registry",
    "pomdp_family": "trim_pomdp.evaluation.families",
    "pomdp_deploy_family": "trim_pomdp.evaluation.families",
    "pomdp_plus_family": "trim_pomdp.evaluation.families",
    "pomdp_plus_exact_family": "trim_pomdp.evaluation.families",
    "pomdp_mean_exact_family": "trim_pomdp.evaluation.families",
    "query_min_scores": "trim_pomdp.evaluation.query_routing",
    "automix_escalate": "trim_pomdp.evaluation.query_routing",
    "combine_query_routing": "trim_pomdp.evaluation.query_routing",
    "query_oracle_order": "trim_pomdp.evaluation.query_routing",
    "DEFAULT_CPT_LEVELS": "trim_pomdp.evaluation.metrics",
    "accuracy": "trim_pomdp.evaluation.metrics",
    "mean_strong_tokens": "trim_pomdp.evaluation.metrics",
    "cost_fraction": "trim_pomdp.evaluation.metrics",
    "pgr": "trim_pomdp.evaluation.metrics",
    "pareto_frontier": "trim_pomdp.evaluation.metrics",
    "frontier_curve": "trim_pomdp.evaluation.metrics",
    "cpt": "trim_pomdp.evaluation.metrics",
    "delta_ibc": "trim_pomdp.evaluation.metrics",
    "apgr": "trim_pomdp.evaluation.metrics",
    "curve_metrics": "trim_pomdp.evaluation.metrics",
    "calibrate": "trim_pomdp.evaluation.budget",
    "FitConfig": "trim_pomdp.evaluation.from_scenario",
    "fit_from_scenario": "trim_pomdp.evaluation.from_scenario",
    "fit_latent_model": "trim_pomdp.evaluation.from_scenario",
    "plot_curves": "trim_pomdp.evaluation.plots",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
