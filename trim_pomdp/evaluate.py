"""Evaluate router families on a scenario: budget sweeps -> cost/accuracy curves -> metrics.

A *family* is a router with a budget knob.  Two kinds:

* :class:`Family` (step level): ``Family(name, params, make_policy)`` where
  ``make_policy(param)`` returns a :class:`~trim_pomdp.simulator.BatchPolicy`; every
  parameter value is simulated on the same world (paired).  TRIM-Thr sweeps ``k``,
  random sweeps ``q``, the POMDP family sweeps ``lambda`` (plugged in by piece router).
* :class:`QueryFamily` (query level): ``QueryFamily(name, params, escalate)`` where
  ``escalate(param, ctx)`` returns the boolean mask of queries sent to the strong model;
  the outcome is read off the paired always-cheap / always-strong runs in ``ctx``.

Families are passed directly, or by name through the registry (:func:`register_family`,
:data:`FAMILY_FACTORIES`): a factory is called with a :class:`FamilyOptions` and returns a
family; a registry value may also be a ``"module:function"`` string imported on first use,
and :func:`resolve_family` accepts ``"module:function"`` names directly, so a new family can
be added without editing this file.

Every curve gets the metrics of :mod:`trim_pomdp.metrics` (CPT at 50/80/95 %, ΔIBC over
100 PGR levels, APGR), relative to the always-cheap and always-strong runs on the same world.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import sys
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.baselines import (
    AlwaysCheap,
    AlwaysStrong,
    OraclePolicy,
    RandomPolicy,
    ThresholdPolicy,
    automix_escalate,
    combine_query_routing,
    query_min_scores,
    query_oracle_order,
)
from trim_pomdp.metrics import DEFAULT_CPT_LEVELS, curve_metrics, pareto_frontier, pgr
from trim_pomdp.scenario import Scenario
from trim_pomdp.simulator import BatchPolicy, RoutingResult, World, as_world, simulate_routing


# ============================================================================ families
@dataclass(frozen=True)
class Family:
    """A step-level router family: one BatchPolicy per budget parameter.

    Parameters
    ----------
    name : str
    params : sequence of float
        Budget parameter values to sweep (e.g. thresholds ``k``, rates ``q``, ``lambda``).
    make_policy : callable
        ``make_policy(param) -> BatchPolicy``.
    param_name : str
        Label of the parameter in tables/JSON.
    """

    name: str
    params: Sequence[float]
    make_policy: Callable[[float], BatchPolicy]
    param_name: str = "param"
    kind: str = field(default="step", init=False)


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
    # piece router provides the POMDP family with this factory signature
    "trim-pomdp": "trim_pomdp.trim:pomdp_family",
    # the POMDP that learns the problem's difficulty and the PRM's bias as it goes (issue 7)
    "trim-pomdp+": "trim_pomdp.latent:pomdp_plus_family",
    # the POMDP fitted on labelled traces of the *deployment* world (issue 15): the
    # reference of "gain kept" under PRM drift; with no drift it is trim-pomdp refitted
    "trim-pomdp-deploy": "trim_pomdp.trim:pomdp_deploy_family",
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


class FamilyUnavailableError(LookupError):
    """A registered family's module is not installed/merged yet."""


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


# ============================================================================ results
@dataclass(frozen=True, eq=False)
class Curve:
    """The swept cost/accuracy curve of one family plus its metrics.

    Arrays are aligned with ``params``; ``frontier`` indexes the Pareto-optimal points.
    """

    name: str
    kind: str
    param_name: str
    params: NDArray[np.float64]
    accuracy: NDArray[np.float64]
    accuracy_stderr: NDArray[np.float64]
    cost_fraction: NDArray[np.float64]
    mean_strong_tokens: NDArray[np.float64]
    regeneration_rate: NDArray[np.float64]
    pgr: NDArray[np.float64]
    frontier: NDArray[np.int64]
    metrics: dict[str, float]
    #: per-budget, per-problem outcomes (``evaluate(..., keep_outcomes=True)``):
    #: ``correct`` (P, n) bool and ``strong_tokens`` (P, n) int64
    correct: NDArray[np.bool_] | None = None
    strong_tokens: NDArray[np.int64] | None = None

    def to_dict(self) -> dict[str, Any]:
        def _f(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "name": self.name, "kind": self.kind, "param_name": self.param_name,
            "params": [float(p) for p in self.params],
            "accuracy": [float(a) for a in self.accuracy],
            "accuracy_stderr": [float(a) for a in self.accuracy_stderr],
            "cost_fraction": [float(c) for c in self.cost_fraction],
            "mean_strong_tokens": [float(c) for c in self.mean_strong_tokens],
            "regeneration_rate": [float(c) for c in self.regeneration_rate],
            "pgr": [float(p) for p in self.pgr],
            "frontier": [int(i) for i in self.frontier],
            "metrics": {k: _f(v) for k, v in self.metrics.items()},
        }


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Result of :func:`evaluate`: references, curves and metrics per family."""

    scenario: str
    n_problems: int
    seed: int | None
    acc_cheap: float
    acc_strong: float
    strong_tokens_always_strong: float
    curves: dict[str, Curve]
    skipped: dict[str, str]
    time_s: float
    #: ``evaluate(..., target_cost_fraction=f)``: per family the budget calibrated to ``f``
    #: on the training world and what it realizes on this (deployment) world
    targets: dict[str, dict[str, float]] = field(default_factory=dict)
    target_cost_fraction: float | None = None
    #: family whose ΔIBC is the reference of ``gain_kept`` (None: not evaluated)
    reference: str | None = None
    #: paired reference outcomes per problem (kept with ``keep_outcomes=True``)
    cheap_correct: NDArray[np.bool_] | None = None
    strong_correct: NDArray[np.bool_] | None = None
    always_strong_tokens: NDArray[np.int64] | None = None

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        return {name: c.metrics for name, c in self.curves.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": 1,
            "scenario": self.scenario, "n_problems": self.n_problems, "seed": self.seed,
            "acc_cheap": self.acc_cheap, "acc_strong": self.acc_strong,
            "strong_tokens_always_strong": self.strong_tokens_always_strong,
            "curves": {n: c.to_dict() for n, c in self.curves.items()},
            "skipped": dict(self.skipped), "time_s": self.time_s,
            "reference": self.reference,
            "gain_kept": {n: _none_nan(v) for n, v in self.gain_kept().items()},
            "target_cost_fraction": self.target_cost_fraction,
            "targets": {n: {k: _none_nan(v) for k, v in t.items()}
                        for n, t in self.targets.items()},
        }

    def gain_kept(self) -> dict[str, float]:
        """ΔIBC of every family as a fraction of the reference family's
        (:attr:`reference`, the POMDP fitted on the deployment world), NaN without one."""
        if self.reference is None or self.reference not in self.curves:
            return {}
        ref = self.curves[self.reference].metrics["delta_ibc"]
        return {n: (c.metrics["delta_ibc"] / ref if ref > 0 else math.nan)
                for n, c in self.curves.items()}

    def table(self) -> str:
        """Plain-text table: CPT(50/80/95 %) as cost fractions, ΔIBC (%), APGR per family."""
        kept = self.gain_kept()
        head = (f"{'policy':<16} {'kind':<5} {'CPT50':>7} {'CPT80':>7} {'CPT95':>7} "
                f"{'dIBC%':>8} {'APGR':>6} {'maxAcc':>7}"
                + (f" {'kept%':>6}" if kept else "")
                + (f" {'cost@' + format(self.target_cost_fraction, '.2f'):>9} {'acc@':>7}"
                   if self.target_cost_fraction is not None else ""))
        lines = [f"scenario {self.scenario}: {self.n_problems} problems, always-cheap acc "
                 f"{self.acc_cheap:.4f}, always-strong acc {self.acc_strong:.4f}, "
                 f"{self.strong_tokens_always_strong:.1f} strong tokens/query", head,
                 "-" * len(head)]

        def fmt(v: float, spec: str) -> str:
            return format(v, spec) if not math.isnan(v) else "-".rjust(len(format(0.0, spec)))

        for name, c in self.curves.items():
            m = c.metrics
            lines.append(f"{name:<16} {c.kind:<5} {fmt(m['cpt_50'], '7.3f')} "
                         f"{fmt(m['cpt_80'], '7.3f')} {fmt(m['cpt_95'], '7.3f')} "
                         f"{fmt(m['delta_ibc'], '8.1f')} {fmt(m['apgr'], '6.3f')} "
                         f"{m['max_accuracy']:7.4f}"
                         + (f" {fmt(100 * kept[name], '6.1f')}" if kept else "")
                         + (f" {fmt(self.targets[name]['realized_cost'], '9.4f')} "
                            f"{fmt(self.targets[name]['realized_accuracy'], '7.4f')}"
                            if name in self.targets else ""))
        for name, why in self.skipped.items():
            lines.append(f"{name:<16} skipped: {why}")
        if kept:
            lines.append(f"kept% = ΔIBC as % of {self.reference!r} (the POMDP fitted on the "
                         "deployment world's labelled traces)")
        if self.target_cost_fraction is not None:
            lines.append(f"cost@/acc@ = cost fraction and accuracy on this world of the budget "
                         f"calibrated to {self.target_cost_fraction:.2f} on the training world")
        return "\n".join(lines)


def _none_nan(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


# ============================================================================ evaluate
def evaluate(source: Scenario | World | str,
             families: Mapping[str, AnyFamily] | Sequence[AnyFamily | str] | None = None, *,
             n_problems: int | None = None, seed: int | None = None,
             family_options: FamilyOptions | None = None,
             cpt_levels: Sequence[float] = DEFAULT_CPT_LEVELS, n_levels: int = 100,
             min_prev_rule: str = "kept", keep_outcomes: bool = False,
             target_cost_fraction: float | None = None, calibration_problems: int = 4000,
             progress: Callable[[str], None] | None = None) -> Evaluation:
    """Sweep every family's budget parameter on one world and compute curves and metrics.

    Parameters
    ----------
    source : Scenario, World or str
        World to evaluate on (or scenario / path / built-in name to sample it from, with
        ``n_problems`` / ``seed`` overrides).  All families see the same problems and draws.
    families : mapping, sequence or None
        Families (:class:`Family` / :class:`QueryFamily`) or registry names /
        ``"module:function"`` factories.  ``None``: :data:`DEFAULT_FAMILIES`, skipping the
        ones whose module is not available.  Names given explicitly must resolve.
    family_options : FamilyOptions, optional
        Passed to factories (defaults: the scenario, default grid sizes, seed 0).
    cpt_levels, n_levels
        CPT levels and the number of PGR levels ΔIBC is averaged over.
    keep_outcomes : bool
        Keep the per-problem outcomes of every budget (needed by :func:`paired_bootstrap`).
    target_cost_fraction : float, optional
        Also calibrate every family's budget to this cost fraction the way a user would
        (on ``calibration_problems`` problems of the *training* world, another seed) and
        report what that budget realizes on the evaluated world (:attr:`Evaluation.targets`).
    calibration_problems : int
        Size of the calibration world.
    progress : callable, optional
        Called with one-line progress messages.

    Returns
    -------
    Evaluation

    Notes
    -----
    With a drift scenario (a ``deployment`` section) the world is the deployment world and
    the family factories get its training world as ``FamilyOptions.scenario`` (the
    deployment scenario as ``FamilyOptions.deployment``): routers are fitted where they
    were trained and evaluated where they are deployed.  When the ``trim-pomdp-deploy``
    family is evaluated it is the reference of :meth:`Evaluation.gain_kept`.
    """
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    if target_cost_fraction is not None and not 0.0 <= float(target_cost_fraction) <= 1.0:
        raise ValueError(f"target_cost_fraction must be in [0, 1]; got {target_cost_fraction!r}")
    if int(calibration_problems) < 1:
        raise ValueError(f"calibration_problems must be >= 1; got {calibration_problems!r}")
    world = as_world(source, n_problems=n_problems, seed=seed)
    opts = family_options or FamilyOptions(scenario=world.scenario)
    if opts.scenario is None and world.scenario is not None:
        opts = dataclasses.replace(opts, scenario=world.scenario)
    if opts.scenario is not None and opts.scenario.has_drift:
        opts = dataclasses.replace(opts, scenario=opts.scenario.training(),
                                   deployment=opts.scenario)
    fams, skipped = _collect_families(families, opts, say)

    say(f"reference runs on {world.n_problems} problems ({world.n_steps} steps)")
    ctx = _context(world, min_prev_rule)
    cheap, strong = ctx.cheap, ctx.strong
    a_w, a_s = cheap.accuracy, strong.accuracy
    if not a_s > a_w:
        raise ValueError(f"always-strong accuracy {a_s:.4f} does not exceed always-cheap "
                         f"{a_w:.4f} on this world; PGR-based metrics are undefined")
    cal_ctx = None
    if target_cost_fraction is not None:
        cal_scn = opts.scenario if opts.scenario is not None else world.scenario
        if cal_scn is None:
            raise ValueError("target_cost_fraction needs a scenario to calibrate on")
        cal_seed = (0 if world.seed is None else int(world.seed)) + 7919
        say(f"calibration world: {calibration_problems} problems of {cal_scn.name!r}, "
            f"seed {cal_seed}")
        cal_ctx = _context(as_world(cal_scn, n_problems=int(calibration_problems),
                                    seed=cal_seed), min_prev_rule)

    curves: dict[str, Curve] = {}
    targets: dict[str, dict[str, float]] = {}
    for fam in fams:
        t1 = time.perf_counter()
        results = _sweep(fam, ctx, min_prev_rule)
        curves[fam.name] = _make_curve(fam, results, a_w, a_s, cpt_levels, n_levels,
                                       keep_outcomes)
        if cal_ctx is not None and target_cost_fraction is not None:
            cal = np.array([r.cost_fraction for r in _sweep(fam, cal_ctx, min_prev_rule)])
            i = int(np.argmin(np.abs(cal - float(target_cost_fraction))))
            targets[fam.name] = {"param": float(fam.params[i]),
                                 "calibrated_cost": float(cal[i]),
                                 "realized_cost": float(results[i].cost_fraction),
                                 "realized_accuracy": float(results[i].accuracy)}
        say(f"{fam.name}: {len(fam.params)} budgets in {time.perf_counter() - t1:.2f} s")
    return Evaluation(
        scenario=world.scenario.name if world.scenario is not None else "<world>",
        n_problems=world.n_problems, seed=world.seed, acc_cheap=a_w, acc_strong=a_s,
        strong_tokens_always_strong=strong.mean_strong_tokens, curves=curves,
        skipped=skipped, time_s=time.perf_counter() - t0, targets=targets,
        target_cost_fraction=None if target_cost_fraction is None else float(
            target_cost_fraction),
        reference="trim-pomdp-deploy" if "trim-pomdp-deploy" in curves else None,
        cheap_correct=cheap.correct if keep_outcomes else None,
        strong_correct=strong.correct if keep_outcomes else None,
        always_strong_tokens=strong.always_strong_tokens if keep_outcomes else None)


def _context(world: World, min_prev_rule: str) -> EvalContext:
    """The paired always-cheap (recorded) and always-strong runs of a world."""
    cheap = simulate_routing(world, AlwaysCheap(), record=True, min_prev_rule=min_prev_rule)
    strong = simulate_routing(world, AlwaysStrong(), min_prev_rule=min_prev_rule)
    return EvalContext(world=world, cheap=cheap, strong=strong,
                       cheap_min_score=query_min_scores(cheap.record.score))


def _sweep(fam: AnyFamily, ctx: EvalContext, min_prev_rule: str) -> list[RoutingResult]:
    """One routing result per budget parameter of a family on ``ctx.world``."""
    results = []
    for p in fam.params:
        if isinstance(fam, QueryFamily):
            mask = np.asarray(fam.escalate(p, ctx), dtype=bool)
            results.append(combine_query_routing(mask, ctx.cheap, ctx.strong, name=fam.name))
        else:
            results.append(simulate_routing(ctx.world, fam.make_policy(p),
                                            min_prev_rule=min_prev_rule))
    return results


def _collect_families(families: Any, opts: FamilyOptions,
                      say: Callable[[str], None] = lambda _m: None
                      ) -> tuple[list[AnyFamily], dict[str, str]]:
    skipped: dict[str, str] = {}
    out: list[AnyFamily] = []

    def build(name: str) -> AnyFamily:
        t0 = time.perf_counter()
        fam = resolve_family(name, opts)
        dt = time.perf_counter() - t0
        if dt > 0.5:  # e.g. the POMDP family fits models and solves its lambda grid here
            say(f"built family {name!r} in {dt:.1f} s")
        return fam

    if families is None:
        for name in DEFAULT_FAMILIES:
            try:
                out.append(build(name))
            except FamilyUnavailableError as exc:
                skipped[name] = str(exc)
        return out, skipped
    items = list(families.values()) if isinstance(families, Mapping) else list(families)
    for f in items:
        out.append(build(f) if isinstance(f, str) else f)
    names = [f.name for f in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"duplicate family names: {sorted(dup)}")
    for f in out:
        if len(f.params) == 0:
            raise ValueError(f"family {f.name!r} has no budget parameters")
    return out, skipped


def _make_curve(fam: AnyFamily, results: list[RoutingResult], a_w: float, a_s: float,
                cpt_levels: Sequence[float], n_levels: int, keep: bool = False) -> Curve:
    acc = np.array([r.accuracy for r in results])
    cost = np.array([r.cost_fraction for r in results])
    return Curve(
        name=fam.name, kind=fam.kind, param_name=fam.param_name,
        params=np.asarray(fam.params, dtype=np.float64), accuracy=acc,
        accuracy_stderr=np.array([r.accuracy_stderr for r in results]),
        cost_fraction=cost,
        mean_strong_tokens=np.array([r.mean_strong_tokens for r in results]),
        regeneration_rate=np.array([r.regeneration_rate for r in results]),
        pgr=np.asarray(pgr(acc, a_w, a_s), dtype=np.float64),
        frontier=pareto_frontier(cost, acc),
        metrics=curve_metrics(cost, acc, acc_cheap=a_w, acc_strong=a_s,
                              cpt_levels=cpt_levels, n_levels=n_levels),
        correct=np.stack([r.correct for r in results]) if keep else None,
        strong_tokens=np.stack([r.strong_tokens for r in results]) if keep else None,
    )


# ============================================================================ uncertainty
def paired_bootstrap(ev: Evaluation, *, n_boot: int = 200, seed: int = 0,
                     cpt_levels: Sequence[float] = DEFAULT_CPT_LEVELS,
                     n_levels: int = 100) -> dict[str, dict[str, NDArray[np.float64]]]:
    """Bootstrap distribution of every family's metrics, resampling *problems* jointly.

    Each replicate draws n problems with replacement (the same draw for every family and for
    the always-cheap / always-strong references, so comparisons stay paired) and recomputes
    each budget's accuracy and cost fraction, ``A_w``, ``A_s`` and the curve metrics.

    Returns
    -------
    dict
        ``{family: {metric: ndarray (n_boot,)}}``.

    Raises
    ------
    ValueError
        ``ev`` was computed without ``keep_outcomes=True``.
    """
    if ev.cheap_correct is None or ev.strong_correct is None or ev.always_strong_tokens is None:
        raise ValueError("paired_bootstrap needs evaluate(..., keep_outcomes=True)")
    n = ev.n_problems
    rng = np.random.default_rng(seed)
    # multiplicity of each problem in each replicate; sums are then matrix products
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)  # (B, n)
    a_w = w @ ev.cheap_correct.astype(np.float64) / n
    a_s = w @ ev.strong_correct.astype(np.float64) / n
    den = w @ ev.always_strong_tokens.astype(np.float64)
    out: dict[str, dict[str, NDArray[np.float64]]] = {}
    for name, c in ev.curves.items():
        if c.correct is None or c.strong_tokens is None:
            raise ValueError("paired_bootstrap needs evaluate(..., keep_outcomes=True)")
        acc = w @ c.correct.T.astype(np.float64) / n  # (B, P)
        cost = (w @ c.strong_tokens.T.astype(np.float64)) / den[:, None]
        rows = [curve_metrics(cost[b], acc[b], acc_cheap=a_w[b], acc_strong=a_s[b],
                              cpt_levels=cpt_levels, n_levels=n_levels)
                for b in range(n_boot) if a_s[b] > a_w[b]]
        out[name] = {k: np.array([r[k] for r in rows]) for k in rows[0]} if rows else {}
    return out


def compare(samples: Mapping[str, Mapping[str, NDArray[np.float64]]], a: str, b: str,
            metric: str, *, higher_is_better: bool = True,
            level: float = 0.95) -> dict[str, float]:
    """Paired comparison of family ``a`` against ``b`` on ``metric`` from
    :func:`paired_bootstrap` samples.

    Returns ``diff`` (mean of a - b), the percentile interval ``ci_low``/``ci_high`` at
    ``level``, and ``p_better``, the fraction of replicates in which ``a`` is better (NaN
    replicates, e.g. an unreached CPT level, count as not better).
    """
    x = np.asarray(samples[a][metric], dtype=np.float64)
    y = np.asarray(samples[b][metric], dtype=np.float64)
    d = x - y
    ok = ~np.isnan(d)
    lo, hi = (np.percentile(d[ok], [50 * (1 - level), 50 * (1 + level)]) if ok.any()
              else (math.nan, math.nan))
    better = (d > 0) if higher_is_better else (d < 0)
    return {"diff": float(np.mean(d[ok])) if ok.any() else math.nan,
            "ci_low": float(lo), "ci_high": float(hi),
            "p_better": float(np.mean(better & ok)), "n": float(ok.sum())}


class _CallableModule(types.ModuleType):
    """Lets ``trim_pomdp.evaluate(...)`` call :func:`evaluate` even after the submodule
    ``trim_pomdp.evaluate`` was imported (the import system then binds the package attribute
    ``evaluate`` to this module, shadowing the lazily exported function); the same device as
    in :mod:`trim_pomdp.simulate`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Evaluation:
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
