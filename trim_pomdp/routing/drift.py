"""Label-free drift detection for the TRIM router.

While it routes, the router knows its transition model ``T`` and its fitted observation
model ``Z``, so before it sees the PRM score of the next draft it can *predict* that score's
distribution: with belief ``b`` at epoch ``t`` and observed value ``x``, executed action
``a`` and the next draft's observed part ``x'`` (final flag, token bin),

    pred(s') = sum_s T[t, a, x, s, x', s'] b(s) / sum_{s, s''} T[t, a, x, s, x', s''] b(s)
    p_i      = sum_s' pred(s') Z[a, x', s', o(i, m)] / sum_j sum_s' pred(s') Z[a, x', s', o(j, m)]

(``i`` the score bin; ``m`` the min-previous-score bin, known before the draft, when the
model uses it).  The **probability integral transform** of the live score ``y`` in bin
``k = [l_k, u_k)`` under this predictive mixture, with the model's histogram density
(uniform inside a bin), is

    u = sum_{i < k} p_i + p_k (y - l_k) / (u_k - l_k).

For a model with the min-previous-score feature the PIT runs on a *shadow filter* of the
model's score marginal (:func:`pit_policy`), fed the same scores and executed actions.  The
minimum of the earlier kept scores is not an observation of the hidden state alone: which
drafts were kept is the routing policy's choice, so under routing its distribution given the
state differs from the always-cheap traces the model was fitted on, and a filter that reads
it is off on in-distribution traffic (``benchmarks/bench_pit_min.py``: on ``default`` the
joint filter's location statistic moves by -0.30 reference standard deviations per episode,
which the CUSUMs turn into alarms within ~1,000 episodes; the score marginal's by +0.015).

If the world were the model, ``u`` would be Uniform(0, 1) given the past.  Real traffic is
never exactly the model (per-problem difficulty, per-trace PRM bias, within-trace
correlation, the KDE's smoothing), so the monitor does not test against the uniform law: it
compares live traffic with *reference* traffic from the training distribution.  Per episode
(a routed trace of ``n`` steps) it forms two statistics,

    g1 = sum_j (u_j - 1/2) / sqrt(n)          (location: a shifted PRM)
    g2 = sum_j ((u_j - 1/2)^2 - 1/12) / sqrt(n)  (spread: over/under-confident, noisier)

standardises them with the reference episodes' mean and standard deviation (``z``), and
runs four one-sided CUSUMs (Page 1954) across episodes,

    C+_j <- max(0, C+_j + z_j - k),   C-_j <- max(0, C-_j - z_j - k),

alarming when any exceeds ``h``.  Episodes are independent problems, so the CUSUMs run
over i.i.d. statistics in-distribution whatever the dependence *within* an episode.  The
threshold ``h`` is calibrated by bootstrap: streams of ``horizon`` episodes are resampled
from the reference episodes and ``h`` is the ``1 - false_alarm_rate`` quantile of the
streams' maximum CUSUM, so the chance of a false alarm within ``horizon`` episodes of
in-distribution traffic is ``false_alarm_rate`` (as far as the reference episodes represent
that traffic; ``benchmarks/bench_drift.py`` measures it on fresh traffic).

Use::

    monitor = DriftMonitor.from_traces(bank.nearest(lam), heldout_cheap_traces)
    router = Router(bank.nearest(lam), drift=monitor)   # or router.attach_drift(monitor)
    ...                                                 # route as usual
    if monitor.alarm: ...                               # monitor.summary() for the run

One monitor may be shared by several routers (a serving run): each router accumulates its
own episode and hands the monitor its two sums when the episode ends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trim_pomdp.routing._kernels import A_LOC, A_N, A_SPREAD, batch_pit
from trim_pomdp.routing.policy import pit_policy

__all__ = ["DriftMonitor", "episode_features", "pit_policy", "pit_reference", "pit_routed"]

FORMAT_VERSION = 1


def episode_features(acc: ArrayLike) -> NDArray[np.float64]:
    """Per-episode statistics ``(g1, g2)`` from accumulators ``(sum_loc, sum_spread, n)``
    (shape (3,) or (E, 3)): the sums divided by ``sqrt(n)``; episodes with ``n = 0`` give
    NaN."""
    a = np.asarray(acc, dtype=np.float64)
    n = a[..., A_N]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(n > 0, 1.0 / np.sqrt(np.where(n > 0, n, 1.0)), np.nan)
    return np.stack([a[..., A_LOC] * r, a[..., A_SPREAD] * r], axis=-1)


def _cusum_max(z: NDArray[np.float64], k: float) -> NDArray[np.float64]:
    """Maximum over time of the four one-sided CUSUMs of streams ``z`` (R, E, 2)."""
    R, E, _ = z.shape
    c = np.zeros((R, 4))
    best = np.zeros(R)
    for e in range(E):
        ze = z[:, e]
        c[:, :2] = np.maximum(0.0, c[:, :2] + ze - k)
        c[:, 2:] = np.maximum(0.0, c[:, 2:] - ze - k)
        np.maximum(best, c.max(axis=1), out=best)
    return best


class DriftMonitor:
    """Sequential test of live PRM scores against the router's own predictions.

    Parameters
    ----------
    mean, sd : array (2,)
        Mean and standard deviation of the per-episode statistics ``(g1, g2)`` on reference
        (in-distribution) traffic.
    threshold : float
        CUSUM alarm threshold ``h``.
    k : float
        CUSUM reference value (in standard deviations of the per-episode statistic): the
        test is tuned to shifts of about ``2 k``.
    false_alarm_rate, horizon : float, int
        What ``threshold`` was calibrated for (recorded in :meth:`summary`).

    Attributes
    ----------
    alarm : bool
        True once any CUSUM exceeded the threshold (stays True until :meth:`reset`).
    alarm_episode : int or None
        1-based index of the episode that raised the alarm.
    n_episodes : int
        Episodes seen since :meth:`reset`.
    """

    def __init__(self, mean: ArrayLike, sd: ArrayLike, threshold: float, *, k: float = 0.25,
                 false_alarm_rate: float = math.nan, horizon: int = 0,
                 n_reference: int = 0) -> None:
        self.mean = np.asarray(mean, dtype=np.float64).reshape(2)
        self.sd = np.asarray(sd, dtype=np.float64).reshape(2)
        if not np.all(np.isfinite(self.mean)) or not np.all(self.sd > 0):
            raise ValueError(f"DriftMonitor: mean must be finite and sd > 0; got mean "
                             f"{self.mean.tolist()}, sd {self.sd.tolist()}")
        if not (threshold > 0 and math.isfinite(threshold)):
            raise ValueError(f"DriftMonitor: threshold must be a finite number > 0; got "
                             f"{threshold!r}")
        if not (k >= 0 and math.isfinite(k)):
            raise ValueError(f"DriftMonitor: k must be a finite number >= 0; got {k!r}")
        self.threshold = float(threshold)
        self.k = float(k)
        self.false_alarm_rate = float(false_alarm_rate)
        self.horizon = int(horizon)
        self.n_reference = int(n_reference)
        self.reset()

    # ------------------------------------------------------------------ calibration
    @classmethod
    def calibrate(cls, features: ArrayLike, *, false_alarm_rate: float = 0.001,
                  horizon: int = 1000, k: float = 0.25, n_runs: int = 5000,
                  seed: int = 0) -> DriftMonitor:
        """A monitor calibrated on reference per-episode statistics ``features`` (E, 2)
        (:func:`episode_features` of in-distribution episodes).

        ``threshold`` is the ``1 - false_alarm_rate`` quantile of the maximum CUSUM over
        ``n_runs`` bootstrap streams of ``horizon`` episodes resampled from the reference.
        The default 0.1 % leaves room under a 1 %-per-1,000-episodes goal for the
        difference between the reference (cheap traces replayed, every draft continued)
        and routed traffic (regenerations change the predictive): calibrated at 0.5 %,
        ``benchmarks/bench_drift.py`` measured 1.0-1.3 % on routed in-distribution traffic.

        Raises
        ------
        ValueError
            Fewer than 50 usable reference episodes, or a parameter out of range.
        """
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != 2:
            raise ValueError(f"features must have shape (n_episodes, 2); got {f.shape}")
        f = f[np.all(np.isfinite(f), axis=1)]
        if f.shape[0] < 50:
            raise ValueError(f"DriftMonitor.calibrate needs >= 50 reference episodes with at "
                             f"least one step; got {f.shape[0]}")
        if not 0.0 < false_alarm_rate < 1.0:
            raise ValueError(f"false_alarm_rate must be in (0, 1); got {false_alarm_rate!r}")
        if horizon < 1 or n_runs < 10:
            raise ValueError(f"horizon must be >= 1 and n_runs >= 10; got {horizon}, {n_runs}")
        mean = f.mean(axis=0)
        sd = f.std(axis=0, ddof=1)
        z = (f - mean) / sd
        rng = np.random.default_rng(seed)
        best = np.empty(n_runs)
        chunk = max(1, min(n_runs, 4_000_000 // (horizon * 2)))
        for lo in range(0, n_runs, chunk):
            hi = min(n_runs, lo + chunk)
            idx = rng.integers(0, z.shape[0], size=(hi - lo, horizon))
            best[lo:hi] = _cusum_max(z[idx], k)
        h = float(np.quantile(best, 1.0 - false_alarm_rate))
        return cls(mean, sd, max(h, 1e-9), k=k, false_alarm_rate=false_alarm_rate,
                   horizon=horizon, n_reference=int(f.shape[0]))

    @classmethod
    def from_traces(cls, policy: Any, traces: Sequence[Any], **calibrate_kw: Any
                    ) -> DriftMonitor:
        """Calibrate on held-out in-distribution traces of the cheap model (labels not
        needed): each trace is replayed through the router's filter as written (every
        draft continued, which is how a cheap-model trace was produced), and its
        per-episode statistics are the reference.  Use traces the observation model was
        *not* fitted on."""
        return cls.calibrate(pit_reference(policy, traces), **calibrate_kw)

    # ------------------------------------------------------------------ online
    def reset(self) -> None:
        """Forget all episodes (CUSUMs to 0, alarm cleared)."""
        self.cusum = np.zeros(4)
        self.alarm = False
        self.alarm_episode: int | None = None
        self.n_episodes = 0
        self.n_steps = 0
        self._sum_z = np.zeros(2)

    def add_episode(self, loc_sum: float, spread_sum: float, n_steps: int) -> bool:
        """Feed one finished episode's sums (what a :class:`~trim_pomdp.routing.router.Router`
        does when an episode ends); returns :attr:`alarm`."""
        if n_steps <= 0:
            return self.alarm
        r = 1.0 / math.sqrt(n_steps)
        z0 = (loc_sum * r - self.mean[0]) / self.sd[0]
        z1 = (spread_sum * r - self.mean[1]) / self.sd[1]
        c = self.cusum
        k = self.k
        c[0] = max(0.0, c[0] + z0 - k)
        c[1] = max(0.0, c[1] + z1 - k)
        c[2] = max(0.0, c[2] - z0 - k)
        c[3] = max(0.0, c[3] - z1 - k)
        self.n_episodes += 1
        self.n_steps += int(n_steps)
        self._sum_z[0] += z0
        self._sum_z[1] += z1
        if not self.alarm and max(c[0], c[1], c[2], c[3]) > self.threshold:
            self.alarm = True
            self.alarm_episode = self.n_episodes
        return self.alarm

    def run(self, features: ArrayLike) -> int | None:
        """Feed a stream of per-episode statistics (E, 2) in order (offline replay of
        :func:`episode_features`); returns the 1-based episode of the first alarm (of this
        call's stream, counting from the monitor's current state), or None."""
        f = np.asarray(features, dtype=np.float64)
        start = self.n_episodes
        was = self.alarm
        for g1, g2 in f:
            if not (math.isfinite(g1) and math.isfinite(g2)):
                continue
            # add_episode takes sums; with n = 1 the sums are the statistics themselves
            self.add_episode(float(g1), float(g2), 1)
        if was or not self.alarm or self.alarm_episode is None:
            return None
        return self.alarm_episode - start

    @property
    def statistic(self) -> float:
        """The largest of the four CUSUMs (alarm when it exceeds :attr:`threshold`)."""
        return float(self.cusum.max())

    def summary(self) -> dict[str, Any]:
        """JSON-ready state: alarm, where, the CUSUMs, the mean standardised statistics
        (location: > 0 = scores higher than predicted; spread: > 0 = more extreme than
        predicted) and the calibration."""
        n = max(1, self.n_episodes)
        return {
            "format_version": FORMAT_VERSION,
            "alarm": self.alarm,
            "alarm_episode": self.alarm_episode,
            "n_episodes": self.n_episodes,
            "n_steps": self.n_steps,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "cusum": {"location_up": float(self.cusum[0]), "spread_up": float(self.cusum[1]),
                      "location_down": float(self.cusum[2]),
                      "spread_down": float(self.cusum[3])},
            "mean_z": {"location": float(self._sum_z[0] / n),
                       "spread": float(self._sum_z[1] / n)},
            "calibration": {"k": self.k, "false_alarm_rate": self.false_alarm_rate,
                            "horizon": self.horizon, "n_reference": self.n_reference,
                            "mean": self.mean.tolist(), "sd": self.sd.tolist()},
        }

    def to_dict(self) -> dict[str, Any]:
        """The calibration (no live state), for saving next to a bank as JSON."""
        return {"format_version": FORMAT_VERSION, "kind": "trim_pomdp.DriftMonitor",
                "mean": self.mean.tolist(), "sd": self.sd.tolist(),
                "threshold": self.threshold, "k": self.k,
                "false_alarm_rate": self.false_alarm_rate, "horizon": self.horizon,
                "n_reference": self.n_reference}

    @classmethod
    def from_dict(cls, d: Any) -> DriftMonitor:
        """Inverse of :meth:`to_dict` (``ValueError`` naming the field if malformed)."""
        if not isinstance(d, dict) or d.get("kind") != "trim_pomdp.DriftMonitor" \
                or d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"not a DriftMonitor of format_version {FORMAT_VERSION}")
        try:
            return cls(d["mean"], d["sd"], float(d["threshold"]), k=float(d["k"]),
                       false_alarm_rate=float(d["false_alarm_rate"]),
                       horizon=int(d["horizon"]), n_reference=int(d["n_reference"]))
        except KeyError as exc:
            raise ValueError(f"DriftMonitor: field {exc.args[0]!r} is missing") from None

    def __repr__(self) -> str:
        return (f"DriftMonitor(alarm={self.alarm}, n_episodes={self.n_episodes}, "
                f"statistic={self.statistic:.3g}, threshold={self.threshold:.3g})")


def pit_reference(policy: Any, traces: Sequence[Any]) -> NDArray[np.float64]:
    """Per-episode statistics (E, 2) of traces replayed through a Router of ``policy`` with
    every draft continued (see :meth:`DriftMonitor.from_traces`).

    Raises
    ------
    ValueError
        A step without ``prm_score`` or ``tokens`` (names the trace and step).
    """
    from trim_pomdp.routing.router import Router

    r = Router(pit_policy(policy))
    acc = np.zeros(3)
    out = []
    for tr in traces:
        steps = tr.steps[: r.model.max_steps]
        if not steps:
            continue
        acc[:] = 0.0
        r.reset()
        n = len(steps)
        for j, st in enumerate(steps):
            if st.prm_score is None or st.tokens is None:
                raise ValueError(f"trace {getattr(tr, 'id', '?')!r} step {j + 1}: drift "
                                 "calibration needs prm_score and tokens on every step")
            r._step_pit(float(st.prm_score), float(st.tokens), j == n - 1, acc)
            if not r.done:
                r.executed("continue")
        out.append(acc.copy())
    if not out:
        raise ValueError("pit_reference: no non-empty traces")
    return episode_features(np.array(out))


def pit_routed(policy: Any, traces: Sequence[Any]) -> NDArray[np.float64]:
    """Per-episode statistics (E, 2) of *routed* traces (the serving format) replayed
    through a Router of ``policy`` with the actions that were executed: the score the
    router saw (``prm_score`` of a kept draft, ``extra["draft_prm_score"]`` of a
    regenerated one), the draft's tokens (``extra["cheap_tokens"]``, else ``tokens``) and
    ``"regenerate"`` where the strong model wrote the step.  This is the stream a live
    monitor of ``policy`` would have seen on that traffic; used to recalibrate a monitor
    after a refit (:class:`trim_pomdp.fit.adapt.Adapter`).

    Raises
    ------
    ValueError
        A routed step without its score or tokens (names the trace and step).
    """
    from trim_pomdp.routing.router import Router

    return _replay_routed(Router(pit_policy(policy)), traces)


def _replay_routed(r: Any, traces: Sequence[Any]) -> NDArray[np.float64]:
    """:func:`pit_routed` through router ``r``'s own filter (``pit_routed`` passes the
    :func:`pit_policy` one; a router of a min-feature policy itself gives the joint filter's
    statistics, which ``benchmarks/bench_pit_min.py`` compares)."""
    acc = np.zeros(3)
    out = []
    for tr in traces:
        steps = []
        for st in tr.steps:
            extra = st.extra or {}
            strong = extra.get("writer") == "strong"
            if strong and extra.get("decision") is None:
                break  # the strong model finishing alone: the router's episode is over
            steps.append((extra.get("draft_prm_score") if strong else st.prm_score,
                          extra.get("cheap_tokens", None if strong else st.tokens), strong))
        steps = steps[: r.model.max_steps]
        if not steps:
            continue
        acc[:] = 0.0
        r.reset()
        n = len(steps)
        for j, (score, tok, strong) in enumerate(steps):
            if score is None or tok is None:
                raise ValueError(f"trace {getattr(tr, 'id', '?')!r} step {j + 1}: a routed "
                                 "step without its PRM score or draft tokens")
            r._step_pit(float(score), float(tok), j == n - 1, acc)
            if not r.done:
                r.executed("regenerate" if strong else "continue")
        out.append(acc.copy())
    if not out:
        raise ValueError("pit_routed: no non-empty traces")
    return episode_features(np.array(out))


class DriftBatchPolicy:
    """A :class:`~trim_pomdp.routing.router.TrimBatchPolicy` that also accumulates every
    episode's PIT sums (for simulation studies: :attr:`features` after a run gives the
    per-episode statistics in problem order, the stream a serving run would see)."""

    needs_truth = False

    def __init__(self, policy: Any, *, name: str = "trim-pomdp") -> None:
        from trim_pomdp.routing.router import TrimBatchPolicy

        self._inner = TrimBatchPolicy(policy, name=name)
        # the filter the PIT runs on (a shadow of the score marginal for a min model)
        shadow = pit_policy(self._inner.policy)
        self._shadow = None if shadow is self._inner.policy else TrimBatchPolicy(shadow)
        self.name = name
        self.acc = np.zeros((0, 3))

    def reset_batch(self, n: int) -> None:
        self._inner.reset_batch(n)
        if self._shadow is not None:
            self._shadow.reset_batch(n)
        self.acc = np.zeros((n, 3))

    def act(self, t, score, min_prev, tokens, is_final, active, truth=None):
        inner = self._inner
        f = inner if self._shadow is None else self._shadow
        m = f.model
        sc = np.ascontiguousarray(score, dtype=np.float64)
        # the PIT needs the beliefs *before* the update: compute it first, then act
        batch_pit(f._T, f._Z, m.score_edges, m.min_edges, m.token_edges,
                  bool(m.uses_min), int(m.max_steps), int(t), sc,
                  np.ascontiguousarray(min_prev, dtype=np.float64),
                  np.ascontiguousarray(tokens, dtype=np.float64),
                  np.ascontiguousarray(is_final, dtype=np.bool_),
                  np.ascontiguousarray(active, dtype=np.bool_), f._xs, f._acts,
                  f._B, self.acc)
        out = inner.act(t, sc, min_prev, tokens, is_final, active, truth)
        if self._shadow is not None:
            self._shadow.act(t, sc, min_prev, tokens, is_final, active, truth)
            self._shadow.executed(out)
        return out

    def executed(self, actions) -> None:
        self._inner.executed(actions)
        if self._shadow is not None:
            self._shadow.executed(actions)

    @property
    def features(self) -> NDArray[np.float64]:
        """Per-episode statistics (n, 2) of the last run."""
        return episode_features(self.acc)
