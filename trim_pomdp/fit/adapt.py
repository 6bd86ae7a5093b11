"""The closed loop of a deployed router: detect drift, refit, re-solve, swap, pace.

An :class:`Adapter` owns the bank a run routes with, the run's drift monitor and budget
pacer, and the episodes routed so far.  The serving loop (``trim-pomdp route --adapt``,
:func:`trim_pomdp.serving.run_batch` with ``adapter=``) and the simulator
(``benchmarks/bench_adapt.py``) drive it the same way:

* before an episode, :meth:`Adapter.policy` (and :attr:`Adapter.version`) say which policy
  routes it; a router built for an older version is replaced (:meth:`Adapter.make_router`),
  so a swap only ever happens **between** episodes;
* after an episode, :meth:`Adapter.episode_done` gets its trace (serving format: the score
  the router saw, the decisions, the outcome; no step labels) and may refit.

When it refits.  With ``every=N``: every ``N`` episodes, on the last ``max_episodes``.
With a monitor (``trigger="alarm"``): an alarm opens a *cycle*; the first refit comes as
soon as the cycle holds ``min_episodes`` episodes (those routed since the previous swap,
or since the start of the run, the drifted ones the alarm is about), and the cycle then
refits again each time its episodes double, up to ``max_episodes`` (an EM on 200 traces is
good enough to stop the loss, one on thousands is better).  After each swap the monitor is
recalibrated on the cycle's episodes replayed through the new policy
(:func:`~trim_pomdp.routing.drift.pit_routed`; the same bootstrap, false-alarm rate and
horizon as the first one) and restarts; episodes still in flight under the previous
version do not feed it.

A refit that fails (:class:`~trim_pomdp.errors.RefitError`: the EM did not converge;
:class:`~trim_pomdp.errors.InsufficientDataError`: e.g. no wrong answer yet) swaps nothing:
the run keeps its bank, the failure is recorded like a swap (``"swapped": false`` and the
reason) and the cycle tries again when its episodes have doubled.

Pacing.  With ``target_cost``, one :class:`~trim_pomdp.routing.pacing.BudgetPacer` for the
whole run moves lambda along the bank after every episode; a swap keeps its position
(:meth:`BudgetPacer.set_bank`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from trim_pomdp.errors import InsufficientDataError, ModelValidationError, RefitError

__all__ = ["Adapter", "episode_cost"]


def episode_cost(trace: Any) -> tuple[float, list[float]]:
    """Strong tokens spent and the cheap drafts' token counts of a routed trace (serving
    format): what a pacer needs after the episode."""
    strong = 0.0
    drafts: list[float] = []
    for st in trace.steps:
        extra = st.extra or {}
        if extra.get("writer") == "strong":
            strong += float(extra.get("strong_tokens", st.tokens or 0) or 0)
            if extra.get("decision") is None:
                continue
            drafts.append(float(extra.get("cheap_tokens", 0) or 0))
        else:
            drafts.append(float(st.tokens or 0))
    return strong, drafts


class Adapter:
    """Detection -> refit -> re-solve -> swap (+ pacing) for one run (module docstring).

    Parameters
    ----------
    bank : PolicyBank
        The bank the run starts with (TRIM-POMDP, score bins alone).
    lam : float, optional
        Lambda to route with when not pacing (default: the bank's default budget).
    monitor : DriftMonitor, optional
        The run's monitor, calibrated for the policy at ``lam`` (or the pacer's start).
    every : int, optional
        Refit every ``every`` episodes instead of on alarms.
    target_cost : float, optional
        Hold the realized strong-token fraction at this target (pacing).
    min_episodes, max_episodes : int
        Episodes of a cycle before its first refit, and the most a refit uses.
    pacer_kw : dict
        Passed to :class:`BudgetPacer` (``gain``, ``window``).
    refit_kw : dict
        Passed to :func:`~trim_pomdp.fit.refit.refit_bank`; ``n_bins`` defaults to
        ``"auto"`` (the score bins re-chosen from the routed traces by solved value: a
        deployment whose scores moved needs other bins than its training had).
    on_swap : callable, optional
        Called with each swap record (a JSON-ready dict) as it happens.
    bank_path : str, optional
        Recorded in :meth:`tag`.
    refit : bool
        False: never refit (the monitor is only watched, the pacer still paces).

    Raises
    ------
    ModelValidationError
        With ``refit``: the bank's model cannot be refitted (not 3 hidden states: a
        TRIM-POMDP+ bank).  A bank with the min-previous-score feature is refitted as a
        score-only bank (:func:`~trim_pomdp.fit.refit.refit_observation`).
    """

    def __init__(self, bank: Any, *, lam: float | None = None, monitor: Any = None,
                 every: int | None = None, target_cost: float | None = None,
                 min_episodes: int = 200, max_episodes: int = 3200,
                 pacer_kw: dict[str, Any] | None = None,
                 refit_kw: dict[str, Any] | None = None,
                 on_swap: Callable[[dict[str, Any]], None] | None = None,
                 bank_path: str | None = None, refit: bool = True) -> None:
        if every is not None and (isinstance(every, bool) or int(every) < 1):
            raise ValueError(f"every must be an int >= 1; got {every!r}")
        if int(min_episodes) < 50:
            raise ValueError(f"min_episodes must be >= 50 (the EM and the monitor's "
                             f"recalibration need them); got {min_episodes!r}")
        if int(max_episodes) < int(min_episodes):
            raise ValueError(f"max_episodes ({max_episodes}) must be >= min_episodes "
                             f"({min_episodes})")
        if refit and monitor is None and every is None:
            raise ValueError("Adapter(refit=True) needs a drift monitor (refit on its "
                             "alarms) or every= (refit every N episodes)")
        m = bank.model
        if refit and getattr(m, "n_hidden", 3) != 3:
            raise ModelValidationError(
                "the closed loop refits TRIM-POMDP banks; this bank's model has "
                f"{m.n_hidden} hidden states (TRIM-POMDP+)")
        self.refit = bool(refit)
        self.bank = bank
        self.monitor = monitor
        self.every = None if every is None else int(every)
        self.min_episodes = int(min_episodes)
        self.max_episodes = int(max_episodes)
        self.refit_kw = {"n_bins": "auto", **(refit_kw or {})}
        self.on_swap = on_swap
        self.bank_path = bank_path
        if lam is None:
            lam = getattr(bank, "default_lambda", None)
            if lam is None:
                lam = float(bank.lambdas[len(bank.lambdas) // 2])
        self.lam = float(lam)
        self.pacer = None
        if target_cost is not None:
            from trim_pomdp.routing.pacing import BudgetPacer

            self.pacer = BudgetPacer(bank, float(target_cost), start_lambda=self.lam,
                                     **(pacer_kw or {}))
        self.version = 0
        self.n_episodes = 0
        self.swaps: list[dict[str, Any]] = []
        self.alarms: list[int] = []  # run episode of every alarm that opened a cycle
        # episodes since the last swap / since the start of the current cycle
        self._since_swap: deque[Any] = deque(maxlen=self.max_episodes)
        self._recent: deque[Any] = deque(maxlen=self.max_episodes)
        self._cycle: deque[Any] | None = None
        self._cycle_monitor: Any = None
        self._last_attempt = 0
        self._next_refit = 0
        self._initial_calibration = (None if monitor is None else
                                     dict(false_alarm_rate=monitor.false_alarm_rate,
                                          horizon=monitor.horizon, k=monitor.k))
        self.monitors = [] if monitor is None else [monitor]
        self._tag: tuple[int, dict[str, Any]] | None = None

    # ------------------------------------------------------------------ routing
    @property
    def policy(self) -> Any:
        """The policy for the next episode."""
        if self.pacer is not None:
            return self.pacer.policy
        return self.bank.nearest(self.lam)

    @property
    def current_lambda(self) -> float:
        return float(self.pacer.lam if self.pacer is not None else self.policy.lam)

    def make_router(self) -> Any:
        """A :class:`~trim_pomdp.routing.router.Router` of the current version (the current
        monitor attached)."""
        from trim_pomdp.routing.router import Router

        return Router(self.policy, drift=self.monitor)

    def prepare(self, router: Any, version: int | None) -> tuple[Any, int]:
        """Before an episode: the router to use and its version (a new router when the bank
        changed; the pacer's current policy set otherwise)."""
        if router is None or version != self.version:
            return self.make_router(), self.version
        if self.pacer is not None:
            router.set_policy(self.pacer.policy)
        return router, version

    def tag(self) -> dict[str, Any]:
        """The ``"router"`` record of an episode starting now."""
        from trim_pomdp.fit.refit import router_tag

        if self._tag is None or self._tag[0] != self.version:
            self._tag = (self.version, router_tag(self.bank, 0.0, version=self.version,
                                                  path=self.bank_path))
        return {**self._tag[1], "lambda": self.current_lambda}

    # ------------------------------------------------------------------ feedback
    def episode_done(self, trace: Any, *, version: int | None = None,
                     drift_sums: Sequence[float] | None = None) -> dict[str, Any] | None:
        """Record a finished episode (a routed trace in the serving format, with its
        outcome); returns the swap record if this episode triggered a refit.

        ``version``: the adapter version the episode was routed with (default current).
        ``drift_sums``: the episode's PIT sums ``(loc, spread, n)`` when no Router fed the
        monitor itself (simulation); only an episode of the current version feeds it.
        """
        v = self.version if version is None else int(version)
        self.n_episodes += 1
        self._since_swap.append(trace)
        self._recent.append(trace)
        if self._cycle is not None:
            self._cycle.append(trace)
        if self.pacer is not None:
            strong, drafts = episode_cost(trace)
            if drafts:
                self.pacer.update(strong, max(self.pacer.always_strong_estimate(drafts),
                                              1e-9))
        if drift_sums is not None and self.monitor is not None and v == self.version:
            self.monitor.add_episode(float(drift_sums[0]), float(drift_sums[1]),
                                     int(drift_sums[2]))
        if not self.refit:
            return None
        if self.every is not None:
            if self.n_episodes - self._last_attempt >= self.every:
                self._last_attempt = self.n_episodes
                return self._refit(list(self._recent), "every")
            return None
        mon = self.monitor
        if mon is None:
            return None
        if mon.alarm and mon is not self._cycle_monitor:
            # a new cycle (or a new drift after a swap): the episodes since the last swap
            # are the ones the alarm is about
            self._cycle = deque(self._since_swap, maxlen=self.max_episodes)
            self._cycle_monitor = mon
            self._next_refit = self.min_episodes
            self.alarms.append(self.n_episodes)
        if self._cycle is not None and len(self._cycle) >= self._next_refit:
            n = len(self._cycle)
            rec = self._refit(list(self._cycle), "alarm")
            if rec["swapped"]:
                # the new monitor has not alarmed: it must not reopen this cycle
                self._cycle_monitor = self.monitor if self.monitor.alarm else None
            if n >= self.max_episodes:
                self._cycle = None  # done refining: watch with the recalibrated monitor
            else:
                self._next_refit = min(2 * n, self.max_episodes)
            return rec
        return None

    def _refit(self, traces: list[Any], trigger: str) -> dict[str, Any]:
        from trim_pomdp.fit.refit import bank_key, refit_bank

        t0 = time.perf_counter()
        rec: dict[str, Any] = {"kind": "trim_pomdp.adapt.swap", "episode": self.n_episodes,
                               "trigger": trigger, "n_traces": len(traces),
                               "from_version": self.version, "old_bank": bank_key(self.bank)}
        if self.monitor is not None:
            rec["drift"] = {"alarm": self.monitor.alarm,
                            "alarm_episode": self.monitor.alarm_episode,
                            "statistic": self.monitor.statistic}
        try:
            new_bank, res = refit_bank(self.bank, traces, **self.refit_kw)
        except (RefitError, InsufficientDataError) as exc:
            rec.update(swapped=False, reason=str(exc), refit_s=time.perf_counter() - t0,
                       to_version=self.version)
            self._record(rec)
            return rec
        monitor = self.monitor
        if monitor is not None:
            from trim_pomdp.routing.drift import DriftMonitor, pit_routed

            lam = self.pacer.lam if self.pacer is not None else self.lam
            try:
                feats = pit_routed(new_bank.nearest(lam), traces)
                monitor = DriftMonitor.calibrate(feats, **self._initial_calibration)
            except ValueError as exc:
                rec.update(swapped=False, reason=f"monitor recalibration failed: {exc}",
                           refit_s=time.perf_counter() - t0, to_version=self.version)
                self._record(rec)
                return rec
        old_lam_default = getattr(self.bank, "default_lambda", None)
        self.bank = new_bank
        if self.pacer is not None:
            self.pacer.set_bank(new_bank)
        self.monitor = monitor
        if monitor is not None:
            self.monitors.append(monitor)
        self.version += 1
        self._since_swap.clear()
        rec.update(swapped=True, to_version=self.version, new_bank=bank_key(new_bank),
                   refit_s=time.perf_counter() - t0, em=res.em,
                   loglik_before=res.loglik_before, loglik_after=res.loglik_after,
                   tv_distance=res.tv_distance, per_bin=res.per_bin(),
                   old_default_lambda=old_lam_default,
                   new_default_lambda=getattr(new_bank, "default_lambda", None),
                   lambda_in_use=self.current_lambda)
        if monitor is not None:
            rec["monitor_threshold"] = monitor.threshold
        self._record(rec)
        return rec

    def _record(self, rec: dict[str, Any]) -> None:
        self.swaps.append(rec)
        if self.on_swap is not None:
            self.on_swap(rec)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: swaps (short form), alarms, versions, the pacer and the monitor."""
        short = [{k: v for k, v in s.items() if k not in ("per_bin",)} for s in self.swaps]
        out: dict[str, Any] = {
            "version": self.version, "n_episodes": self.n_episodes,
            "trigger": "none" if not self.refit else
            ("every" if self.every is not None else "alarm"),
            "every": self.every, "min_episodes": self.min_episodes,
            "max_episodes": self.max_episodes, "alarms_at": list(self.alarms),
            "n_swaps": sum(bool(s["swapped"]) for s in self.swaps),
            "n_failed_refits": sum(not s["swapped"] for s in self.swaps), "swaps": short,
            "lambda": self.current_lambda,
        }
        if self.pacer is not None:
            out["pacing"] = self.pacer.summary()
        if self.monitor is not None:
            out["drift"] = self.monitor.summary()
        return out

