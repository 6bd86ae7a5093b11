"""Fit routing models on traces simulated from a scenario: the demo's and the evaluation's
pipeline (scenario -> labelled traces -> fitted estimators -> TRIM model).

:func:`fit_from_scenario` builds the paper's :class:`~trim_pomdp.routing.model.TrimModel`,
:func:`fit_latent_model` the TRIM-POMDP+ :class:`~trim_pomdp.routing.latent_model.LatentTrimModel`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trim_pomdp.fit.latent import LatentFitter
from trim_pomdp.fit.observation import ObservationModel
from trim_pomdp.fit.transition import TransitionModel
from trim_pomdp.routing.binning import choose_score_bins
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.simulation.synth_traces import simulate_traces

__all__ = ["FitConfig", "fit_from_scenario", "fit_latent_model"]


@dataclass(frozen=True, kw_only=True)
class FitConfig:
    """How :func:`fit_from_scenario` (the demo's pipeline) builds the TRIM model.

    Attributes
    ----------
    n_fit_problems : int
        Problems simulated for the labelled training traces (cheap and strong runs).
    seed : int
        Seed of the training world (use one different from the evaluation world's).
    estimator : {"kde", "beta", "hist"}
        ObservationModel estimator.
    features : {"score", "score+min"}
        Observation features (current PRM score, optionally the min of earlier scores).
    n_score_bins, n_min_bins, n_token_bins : int
        Discretisation of the TRIM model (``n_min_bins`` only with ``"score+min"``).
        ``n_score_bins=None`` (default): chosen by solved value, as ``trim-pomdp fit``
        does (:func:`trim_pomdp.routing.binning.choose_score_bins`; with ``"score+min"``
        on the model with the min-score axis merged).
    n_lambdas : int
        Size of the default geometric lambda grid.
    """

    n_fit_problems: int = 4000
    seed: int = 1
    estimator: str = "kde"
    features: str = "score"
    n_score_bins: int | None = None
    n_min_bins: int | None = 4
    n_token_bins: int = 4
    n_lambdas: int = 32


def fit_from_scenario(scenario: Any, config: FitConfig = FitConfig(), *,
                      world: str = "training") -> tuple[TrimModel, Any, Any]:
    """Simulate labelled cheap and strong traces of ``scenario``, fit the TransitionModel
    and ObservationModel and build the TrimModel.

    ``world="training"`` (default) fits on the scenario's training world, which is the
    scenario itself unless it has a ``deployment`` section (PRM drift); ``"deployment"``
    fits on labelled traces of the deployment world (the model a router would have with
    the deployment PRM's labels: the reference of "value kept" under drift).

    Returns ``(model, transition, observation)``.
    """
    if world not in ("training", "deployment"):
        raise ValueError(f"world must be 'training' or 'deployment'; got {world!r}")
    if world == "training" and hasattr(scenario, "training"):
        scenario = scenario.training()

    cheap = simulate_traces(scenario, model="cheap", n_problems=config.n_fit_problems,
                            seed=config.seed)
    strong = simulate_traces(scenario, model="strong", n_problems=config.n_fit_problems,
                             seed=config.seed + 1)
    transition = TransitionModel().fit(cheap, strong)
    observation = ObservationModel(estimator=config.estimator, features=config.features).fit(cheap)
    n_min = config.n_min_bins if config.features == "score+min" else None
    n_score = config.n_score_bins
    if n_score is None:
        n_score = choose_score_bins(transition, observation,
                                    n_min_bins=None if n_min is None else 1,
                                    n_token_bins=config.n_token_bins).n_bins
    observation.set_binning(n_score, n_min)
    model = TrimModel(transition, observation, n_score_bins=n_score, n_min_bins=n_min,
                      n_token_bins=config.n_token_bins)
    return model, transition, observation



def fit_latent_model(scenario: Any, *, seed: int = 1, n_fit_problems: int = 4000,
                     max_classes: int = 3, n_lambdas: int = 32):
    """Fit TRIM-POMDP+ on traces simulated from ``scenario`` (seeds derived from ``seed``).

    The base TrimModel is built exactly as :func:`fit_from_scenario` builds the
    mean-parameter model (hazard, tokens, KDE observation model, ``FitConfig(seed=seed)``);
    :class:`LatentFitter` then fits ``D, B <= max_classes`` (BIC) on paired cheap/strong
    traces of ``n_fit_problems`` other problems (seed ``seed + 7``).

    Returns ``(model, fitter)``.
    """
    # 10 score bins, as before the count was chosen by solved value: the latent model has
    # 3 D B hidden states, and its solve time grows with the observations too
    cfg = FitConfig(seed=seed, n_lambdas=n_lambdas, n_fit_problems=n_fit_problems,
                    n_score_bins=10)
    base, _, _ = fit_from_scenario(scenario, cfg)
    cheap = simulate_traces(scenario, model="cheap", n_problems=n_fit_problems, seed=seed + 7)
    strong = simulate_traces(scenario, model="strong", n_problems=n_fit_problems, seed=seed + 7)
    cands = tuple(range(1, max_classes + 1))
    fitter = LatentFitter(n_difficulty=cands, n_bias=cands).fit(cheap, strong)
    return fitter.build(base), fitter


