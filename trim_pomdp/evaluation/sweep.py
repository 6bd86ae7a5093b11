"""Evaluate router families on a scenario: budget sweeps -> cost/accuracy curves -> metrics.

A *family* is a router with a budget knob.  Two kinds:

* :class:`Family` (step level): ``Family(name, params, make_policy)`` where
  ``make_policy(param)`` returns a :class:`~trim_pomdp.routing.protocols.BatchPolicy`; every
  parameter value is simulated on the same world (paired).  TRIM-Thr sweeps ``k``,
  random sweeps ``q``, the POMDP family sweeps ``lambda``
  (:mod:`trim_pomdp.evaluation.families`).
* :class:`QueryFamily` (query level): ``QueryFamily(name, params, escalate)`` where
  ``escalate(param, ctx)`` returns the boolean mask of queries sent to the strong model;
  the outcome is read off the paired always-cheap / always-strong runs in ``ctx``.

Families are passed directly, or by name through the registry (:func:`register_family`,
:data:`FAMILY_FACTORIES`): a factory is called with a :class:`FamilyOptions` and returns a
family; a registry value may also be a ``"module:function"`` string imported on first use,
and :func:`resolve_family` accepts ``"module:function"`` names directly, so a new family can
be added without editing this file.

Every curve gets the metrics of :mod:`trim_pomdp.evaluation.metrics` (CPT at 50/80/95 %, ΔIBC over
100 PGR levels, APGR), relative to the always-cheap and always-strong runs on the same world.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.errors import FamilyUnavailableError
from trim_pomdp.evaluation.metrics import DEFAULT_CPT_LEVELS, curve_metrics, pareto_frontier, pgr
from trim_pomdp.evaluation.query_routing import (
    automix_escalate,
    combine_query_routing,
    query_min_scores,
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
from trim_pomdp.simulation.world import RoutingResult, World, as_world, simulate_routing

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
    "FamilyUnavailableError",
    "resolve_family",
    "Curve",
    "Evaluation",
    "evaluate",
    "paired_bootstrap",
    "compare",
]


# ============================================================================ families
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
        }

    def table(self) -> str:
        """Plain-text table: CPT(50/80/95 %) as cost fractions, ΔIBC as the paper prints it
        (a ratio: ``dIBC``) and in percent, APGR per family."""
        head = (f"{'policy':<16} {'kind':<5} {'CPT50':>7} {'CPT80':>7} {'CPT95':>7} "
                f"{'dIBC':>7} {'dIBC%':>8} {'APGR':>6} {'maxAcc':>7}")
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
                         f"{fmt(m['delta_ibc_ratio'], '7.2f')} {fmt(m['delta_ibc'], '8.1f')} "
                         f"{fmt(m['apgr'], '6.3f')} "
                         f"{m['max_accuracy']:7.4f}")
        for name, why in self.skipped.items():
            lines.append(f"{name:<16} skipped: {why}")
        return "\n".join(lines)


# ============================================================================ evaluate
def evaluate(source: Scenario | World | str,
             families: Mapping[str, AnyFamily] | Sequence[AnyFamily | str] | None = None, *,
             n_problems: int | None = None, seed: int | None = None,
             family_options: FamilyOptions | None = None,
             cpt_levels: Sequence[float] = DEFAULT_CPT_LEVELS, n_levels: int = 100,
             min_prev_rule: str = "kept", keep_outcomes: bool = False,
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
    progress : callable, optional
        Called with one-line progress messages.

    Returns
    -------
    Evaluation
    """
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    world = as_world(source, n_problems=n_problems, seed=seed)
    opts = family_options or FamilyOptions(scenario=world.scenario)
    if opts.scenario is None and world.scenario is not None:
        opts = dataclasses.replace(opts, scenario=world.scenario)
    fams, skipped = _collect_families(families, opts, say)

    say(f"reference runs on {world.n_problems} problems ({world.n_steps} steps)")
    cheap = simulate_routing(world, AlwaysCheap(), record=True, min_prev_rule=min_prev_rule)
    strong = simulate_routing(world, AlwaysStrong(), min_prev_rule=min_prev_rule)
    assert cheap.record is not None  # record=True above
    ctx = EvalContext(world=world, cheap=cheap, strong=strong,
                      cheap_min_score=query_min_scores(cheap.record.score))
    a_w, a_s = cheap.accuracy, strong.accuracy
    if not a_s > a_w:
        raise ValueError(f"always-strong accuracy {a_s:.4f} does not exceed always-cheap "
                         f"{a_w:.4f} on this world; PGR-based metrics are undefined")

    curves: dict[str, Curve] = {}
    for fam in fams:
        t1 = time.perf_counter()
        results = []
        for p in fam.params:
            if isinstance(fam, QueryFamily):
                mask = np.asarray(fam.escalate(p, ctx), dtype=bool)
                results.append(combine_query_routing(mask, cheap, strong, name=fam.name))
            else:
                results.append(simulate_routing(world, fam.make_policy(p),
                                                min_prev_rule=min_prev_rule))
        curves[fam.name] = _make_curve(fam, results, a_w, a_s, cpt_levels, n_levels,
                                       keep_outcomes)
        say(f"{fam.name}: {len(fam.params)} budgets in {time.perf_counter() - t1:.2f} s")
    return Evaluation(
        scenario=world.scenario.name if world.scenario is not None else "<world>",
        n_problems=world.n_problems, seed=world.seed, acc_cheap=a_w, acc_strong=a_s,
        strong_tokens_always_strong=strong.mean_strong_tokens, curves=curves,
        skipped=skipped, time_s=time.perf_counter() - t0,
        cheap_correct=cheap.correct if keep_outcomes else None,
        strong_correct=strong.correct if keep_outcomes else None,
        always_strong_tokens=strong.always_strong_tokens if keep_outcomes else None)


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
