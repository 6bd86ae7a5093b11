"""Evaluation of router families: ``sweep`` (budget sweeps to cost/accuracy curves, the
family registry, paired bootstrap), ``families`` (the model-based families),
``query_routing`` (query-level routers), ``metrics`` (CPT, ΔIBC, APGR), ``budget`` (the
lambda for a target cost), ``from_scenario`` (fit the models on a scenario's traces) and
``plots``.
"""

from __future__ import annotations

from trim_pomdp._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "pomdp_family": "trim_pomdp.evaluation.families",
    "pomdp_plus_family": "trim_pomdp.evaluation.families",
    "pomdp_plus_exact_family": "trim_pomdp.evaluation.families",
    "pomdp_mean_exact_family": "trim_pomdp.evaluation.families",
    "query_min_scores": "trim_pomdp.evaluation.query_routing",
    "automix_escalate": "trim_pomdp.evaluation.query_routing",
    "combine_query_routing": "trim_pomdp.evaluation.query_routing",
    "query_oracle_order": "trim_pomdp.evaluation.query_routing",
    "calibrate": "trim_pomdp.evaluation.budget",
    "FitConfig": "trim_pomdp.evaluation.from_scenario",
    "fit_from_scenario": "trim_pomdp.evaluation.from_scenario",
    "fit_latent_model": "trim_pomdp.evaluation.from_scenario",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
