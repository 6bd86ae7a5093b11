"""Router families for the evaluation, and the registry that names them.

A *family* is a router with a budget knob.  Two kinds:

* :class:`~trim_pomdp.routing.protocols.Family` (step level): ``Family(name, params,
  make_policy)`` where ``make_policy(param)`` returns a
  :class:`~trim_pomdp.routing.protocols.BatchPolicy`; every parameter value is simulated on
  the same world (paired).
* :class:`QueryFamily` (query level): ``QueryFamily(name, params, escalate)`` where
  ``escalate(param, ctx)`` returns the boolean mask of queries sent to the strong model;
  the outcome is read off the paired always-cheap / always-strong runs in ``ctx``.

Families are passed directly, or by name through the registry (:func:`register_family`,
:data:`FAMILY_FACTORIES`): a factory is called with a :class:`FamilyOptions` and returns a
family; a registry value may also be a ``"module:function"`` string imported on first use
(the model-based families of :mod:`trim_pomdp.evaluation.families` and the RL ones), and
:func:`resolve_family` accepts ``"module:function"`` names directly, so a new family can be
added without editing this file.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.errors import FamilyUnavailableError
from trim_pomdp.evaluation.query_routing import (
    automix_escalate,
    query_oracle_order,
)
from trim_pomdp.routing.baselines import (
    AlwaysCheap,
    AlwaysStrong,
    OraclePolicy,
    RandomPolicy,
    ThresholdPolicy,
)
from trim_pomdp.routing.protocols import Family
from trim_pomdp.simulation.scenario import Scenario
from trim_pomdp.simulation.world import RoutingResult, World

__all__ = [
    "EvalContext",
    "QueryFamily",
    "AnyFamily",
    "FamilyOptions",
    "threshold_family",
    "random_family",
    "oracle_family",
    "always_cheap_family",
    "always_strong_family",
    "query_oracle_family",
    "query_oracle_cheapest_family",
    "automix_family",
    "FamilyFactory",
    "FAMILY_FACTORIES",
    "DEFAULT_FAMILIES",
    "register_family",
    "resolve_family",
]


@dataclass(frozen=True)
class EvalContext:
    """What a query-level family sees: the world and the paired reference runs."""

    world: World
    cheap: RoutingResult  # always-cheap, recorded
    strong: RoutingResult  # always-strong
    cheap_min_score: NDArray[np.float64]  # min PRM score of each cheap solution


@dataclass(frozen=True)
class QueryFamily:
    """A query-level router family: ``escalate(param, ctx) -> bool mask`` of the queries
    sent (whole) to the strong model."""

    name: str
    params: Sequence[float]
    escalate: Callable[[float, EvalContext], NDArray[np.bool_]]
    param_name: str = "param"
    kind: str = field(default="query", init=False)


AnyFamily = Family | QueryFamily


@dataclass(frozen=True)
class FamilyOptions:
    """Options handed to family factories.

    Attributes
    ----------
    scenario : Scenario or None
        The scenario being evaluated (factories that fit models may simulate their own
        training traces from it with a different seed).
    n_params : int or None
        Requested number of budget values (None = the family's default).
    seed : int
        Seed for randomised policies / training data.
    """

    scenario: Scenario | None = None
    n_params: int | None = None
    seed: int = 0
    #: the deployment scenario when it differs from ``scenario`` (PRM drift): ``scenario``
    #: is then its training world, which every factory fits on
    deployment: Scenario | None = None


def threshold_family(options: FamilyOptions = FamilyOptions()) -> Family:
    """TRIM-Thr swept over ``k`` in [0, 1] (plus k = 1.01, i.e. always strong)."""
    n = options.n_params or 51
    ks = np.concatenate((np.linspace(0.0, 1.0, n), [1.01]))
    return Family("trim-thr", [float(k) for k in ks], lambda k: ThresholdPolicy(k), "k")


def random_family(options: FamilyOptions = FamilyOptions()) -> Family:
    """Random routing swept over the regeneration rate ``q`` in [0, 1]."""
    n = options.n_params or 21
    seed = options.seed
    return Family("random", [float(q) for q in np.linspace(0.0, 1.0, n)],
                  lambda q: RandomPolicy(q, seed=seed), "q")


def oracle_family(options: FamilyOptions = FamilyOptions()) -> Family:
    """Clairvoyant oracle regenerating each fixable wrong draft w.p. ``q`` (q = 1: full)."""
    n = options.n_params or 11
    seed = options.seed
    return Family("oracle", [float(q) for q in np.linspace(0.0, 1.0, n)],
                  lambda q: OraclePolicy(q, seed=seed), "q")


def always_cheap_family(options: FamilyOptions = FamilyOptions()) -> Family:
    """The cheap model alone (one point)."""
    return Family("always-cheap", [0.0], lambda _: AlwaysCheap(), "-")


def always_strong_family(options: FamilyOptions = FamilyOptions()) -> Family:
    """The strong model alone (one point)."""
    return Family("always-strong", [1.0], lambda _: AlwaysStrong(), "-")


def query_oracle_family(options: FamilyOptions = FamilyOptions(), *,
                        order: str = "random") -> QueryFamily:
    """Oracle query router: escalates a fraction ``f`` of the queries the strong model
    solves and the cheap one does not (f = 1: all of them, the oracle's operating point).
    ``order="random"`` admits them in random order (straight line from always-cheap to the
    oracle point); ``order="cheapest"`` (family ``query-oracle-cheapest``) cheapest first."""
    n = options.n_params or 21
    seed = options.seed

    def esc(f: float, ctx: EvalContext) -> NDArray[np.bool_]:
        idx = query_oracle_order(ctx.cheap, ctx.strong, order=order, seed=seed)
        mask = np.zeros(ctx.world.n_problems, bool)
        mask[idx[: int(round(f * len(idx)))]] = True
        return mask

    name = "query-oracle" if order == "random" else f"query-oracle-{order}"
    return QueryFamily(name, [float(f) for f in np.linspace(0.0, 1.0, n)], esc, "f")


def query_oracle_cheapest_family(options: FamilyOptions = FamilyOptions()) -> QueryFamily:
    """Token-aware oracle query router (cheapest rescuable queries first)."""
    return query_oracle_family(options, order="cheapest")


def automix_family(options: FamilyOptions = FamilyOptions()) -> QueryFamily:
    """AutoMix-style query router: escalate the whole query iff the minimum PRM score of
    the cheap solution is below ``threshold`` (swept over [0, 1] plus 1.01 = all)."""
    n = options.n_params or 51
    ts = np.concatenate((np.linspace(0.0, 1.0, n), [1.01]))
    return QueryFamily("automix",
                       [float(t) for t in ts],
                       lambda t, ctx: automix_escalate(ctx.cheap_min_score, t), "threshold")


FamilyFactory = Callable[[FamilyOptions], AnyFamily]

#: name -> factory (or "module:function" string imported on first use)
FAMILY_FACTORIES: dict[str, FamilyFactory | str] = {
    "trim-thr": threshold_family,
    "random": random_family,
    "oracle": oracle_family,
    "always-cheap": always_cheap_family,
    "always-strong": always_strong_family,
    "query-oracle": query_oracle_family,
    "query-oracle-cheapest": query_oracle_cheapest_family,
    "automix": automix_family,
    # model-based families: they fit and solve when built, so they load on first use
    "trim-pomdp": "trim_pomdp.evaluation.families:pomdp_family",
    # the POMDP that learns the problem's difficulty and the PRM's bias as it goes
    "trim-pomdp+": "trim_pomdp.evaluation.families:pomdp_plus_family",
    # the POMDP fitted on labelled traces of the *deployment* world: the reference of
    # "gain kept" under PRM drift; with no drift it is trim-pomdp refitted
    "trim-pomdp-deploy": "trim_pomdp.evaluation.families:pomdp_deploy_family",
    # RL routers, trained on the scenario when the family is built (not in the defaults:
    # training takes a minute or more; `trim-pomdp demo --rl`, `evaluate --policies trim-agg`)
    "trim-agg": "trim_pomdp.rl.grid:agg_family",
    "trim-seq": "trim_pomdp.rl.grid:seq_family",
}

#: families evaluated when none are named (unavailable ones are skipped)
DEFAULT_FAMILIES = ("trim-pomdp", "trim-pomdp+", "trim-thr", "random", "oracle", "query-oracle",
                    "automix", "always-cheap", "always-strong")


def register_family(name: str, factory: FamilyFactory | str) -> None:
    """Make ``name`` resolvable by :func:`resolve_family` (and the CLI's ``--policies``)."""
    FAMILY_FACTORIES[name] = factory


def resolve_family(name: str, options: FamilyOptions = FamilyOptions()) -> AnyFamily:
    """Build the family registered under ``name``, or from a ``"module:function"`` factory.

    Raises
    ------
    KeyError
        Unknown name.
    FamilyUnavailableError
        The factory's module or function does not exist (e.g. not merged yet).
    """
    factory = FAMILY_FACTORIES.get(name)
    if factory is None:
        if ":" not in name:
            raise KeyError(f"unknown policy family {name!r}; known: {sorted(FAMILY_FACTORIES)} "
                           "(or give a 'module:function' factory)")
        factory = name
    if isinstance(factory, str):
        mod_name, _, fn_name = factory.partition(":")
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and mod_name.startswith(exc.name):
                raise FamilyUnavailableError(f"family {name!r}: module {mod_name!r} is not "
                                             "available") from None
            raise
        fn = getattr(mod, fn_name, None)
        if fn is None:
            raise FamilyUnavailableError(f"family {name!r}: {mod_name!r} has no {fn_name!r}")
        factory = fn
    fam = factory(options)
    if not isinstance(fam, (Family, QueryFamily)):
        raise TypeError(f"factory for {name!r} returned {type(fam).__name__}; expected a "
                        "Family or QueryFamily")
    return fam
