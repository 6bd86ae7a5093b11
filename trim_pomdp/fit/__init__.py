"""Estimators fitted on labelled traces, scikit-learn style (``fit`` returns ``self``,
learned attributes end in ``_``): ``transition`` (accuracies, hazard, tokens),
``observation`` (PRM score densities), ``outcome`` (EM from answer-only labels),
``latent`` (TRIM-POMDP+ classes), ``prm_calibration`` (how well the PRM is calibrated),
``refit`` (the observation model re-estimated from routed traces, transition held) and
``adapt`` (the closed loop of a deployed router: drift alarm -> refit -> swap, pacing).
"""

from __future__ import annotations

from trim_pomdp._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "BinomialEstimate": "trim_pomdp.fit.transition",
    "TokenSummary": "trim_pomdp.fit.transition",
    "TransitionModel": "trim_pomdp.fit.transition",
    "step_accuracy": "trim_pomdp.fit.transition",
    "wilson_interval": "trim_pomdp.fit.transition",
    "kernel_hazard": "trim_pomdp.fit.transition",
    "ObservationModel": "trim_pomdp.fit.observation",
    "observation_index": "trim_pomdp.fit.observation",
    "score_bin": "trim_pomdp.fit.observation",
    "OutcomeEM": "trim_pomdp.fit.outcome",
    "LatentFitter": "trim_pomdp.fit.latent",
    "CalibrationReport": "trim_pomdp.fit.prm_calibration",
    "calibration_report": "trim_pomdp.fit.prm_calibration",
    "auroc": "trim_pomdp.fit.prm_calibration",
    "expected_calibration_error": "trim_pomdp.fit.prm_calibration",
    "brier_score": "trim_pomdp.fit.prm_calibration",
    "plot_reliability": "trim_pomdp.fit.prm_calibration",
    "plot_state_histograms": "trim_pomdp.fit.prm_calibration",
    "refit_bank": "trim_pomdp.fit.refit",
    "refit_observation": "trim_pomdp.fit.refit",
    "load_routed": "trim_pomdp.fit.refit",
    "Adapter": "trim_pomdp.fit.adapt",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
