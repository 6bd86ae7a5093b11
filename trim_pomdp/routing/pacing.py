"""Budget pacing: hold the realized strong-token fraction at a target.

A user asks for a cost fraction ``f*`` (strong tokens as a fraction of what always-strong
would spend), not for a lambda.  :func:`~trim_pomdp.evaluation.budget.calibrate` picks the
lambda whose fraction was ``f*`` on calibration traffic, but when the deployed PRM drifts
the same lambda can spend several times more or less.  :class:`BudgetPacer` corrects that online,
between episodes, by moving along the bank's lambda grid.

Controller.  The bank's lambdas ``lam_0 < ... < lam_{n-1}`` (``0`` then log-spaced by
:func:`~trim_pomdp.routing.bank.default_lambdas`) are indexed by a continuous position ``p``; the
router uses the policy nearest to ``p``.  After each episode ``e`` that spent ``s_e`` strong
tokens, with ``d_e`` the estimated always-strong cost of the same episode (the model's
expected strong tokens ``c_k`` of each step's cheap-token bin, summed over its steps -- the
real always-strong cost is never observed),

    p <- clip(p + gain * (s_e - f* d_e) / (f* dbar), 0, n - 1),

with ``dbar`` the running mean of ``d_e``.  This is a stochastic-approximation (integral)
controller: its fixed point is where the expected spend equals ``f*`` times the expected
always-strong cost, whatever the lambda that takes, so it tracks a drifted world.  The
per-episode error is normalised by one target's worth of tokens, so ``gain`` is in bank
positions per "one episode overspent by 100 %".  Small ``gain`` converges slowly with
little noise; large ``gain`` reacts fast and jitters.  A target outside what the bank can
reach leaves ``p`` at an end of the grid; :attr:`BudgetPacer.saturated` says so, and the
realized fraction is then the nearest reachable one (documented fallback, never a
silently different target).

The rolling realized fraction over the last ``window`` episodes, ``sum s / sum d``, is kept
for reporting (:meth:`BudgetPacer.summary`).  A paced run of a simulated world is
:func:`trim_pomdp.simulation.paced.simulate_paced`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from trim_pomdp.routing.bank import nearest_lambda_index

__all__ = ["BudgetPacer", "PacedRouter"]


class BudgetPacer:
    """Moves a router's lambda along a bank so that strong tokens / always-strong tokens
    stays at ``target`` (see the module docstring for the controller).

    Parameters
    ----------
    bank : PolicyBank
    target : float
        Target cost fraction in (0, 1).
    gain : float
        Bank positions per episode per unit of relative overspend.
    window : int
        Episodes of the rolling realized fraction.
    start_lambda : float, optional
        Initial lambda (e.g. from :func:`~trim_pomdp.evaluation.budget.calibrate`); default
        the middle of the grid.
    """

    def __init__(self, bank: Any, target: float, *, gain: float = 0.05, window: int = 500,
                 start_lambda: float | None = None) -> None:
        t = float(target)
        if not 0.0 < t < 1.0:
            raise ValueError(f"target must be a cost fraction in (0, 1); got {target!r}")
        if not (gain > 0 and math.isfinite(gain)):
            raise ValueError(f"gain must be a finite number > 0; got {gain!r}")
        if int(window) < 1:
            raise ValueError(f"window must be >= 1; got {window!r}")
        self.bank = bank
        self.target = t
        self.gain = float(gain)
        self.window = int(window)
        lams = np.asarray(bank.lambdas, dtype=np.float64)
        self._n = len(lams)
        if start_lambda is None:
            self.position = (self._n - 1) / 2.0
        else:
            self.position = float(self._index_of(float(start_lambda)))
        m = bank.model
        self._c = np.asarray(m.strong_tokens, dtype=np.float64)
        self._edges = np.asarray(m.token_edges, dtype=np.float64)
        self._spent: deque[float] = deque(maxlen=self.window)
        self._denom: deque[float] = deque(maxlen=self.window)
        self.n_episodes = 0
        self._dbar = 0.0
        self.history: list[float] = []

    def set_bank(self, bank: Any) -> None:
        """Move to another bank of the same lambda grid (a refitted one,
        :func:`~trim_pomdp.fit.refit.refit_bank`), keeping the position and the history:
        the controller goes on from where it was.

        Raises
        ------
        ValueError
            The new bank's lambdas differ from the current bank's.
        """
        if not np.array_equal(np.asarray(bank.lambdas), np.asarray(self.bank.lambdas)):
            raise ValueError("set_bank: the new bank must have the same lambda grid "
                             f"({len(bank.lambdas)} vs {self._n} lambdas, or other values)")
        self.bank = bank

    def _index_of(self, lam: float) -> int:
        return nearest_lambda_index(self.bank.lambdas, lam)

    @property
    def index(self) -> int:
        """Bank index of the policy in use."""
        return int(min(self._n - 1, max(0, round(self.position))))

    @property
    def lam(self) -> float:
        return float(self.bank.lambdas[self.index])

    @property
    def policy(self) -> Any:
        return self.bank[self.index]

    @property
    def saturated(self) -> bool:
        """True when the controller sits at an end of the grid and still pushes outward:
        the target is not reachable with this bank."""
        if len(self._spent) < min(self.window, 50):
            return False
        over = self.realized - self.target
        return ((self.position <= 0.0 and over < 0) or
                (self.position >= self._n - 1 and over > 0))

    def always_strong_estimate(self, cheap_tokens: Any) -> float:
        """``sum_steps c_k`` for an episode's cheap-draft token counts."""
        k = np.searchsorted(self._edges, np.asarray(cheap_tokens, np.float64), side="right")
        return float(self._c[k].sum())

    def update(self, strong_tokens: float, always_strong_estimate: float) -> Any:
        """Record one finished episode and move lambda; returns the policy for the next
        episode."""
        s = float(strong_tokens)
        d = float(always_strong_estimate)
        if not (s >= 0 and math.isfinite(s)) or not (d > 0 and math.isfinite(d)):
            raise ValueError(f"update needs strong_tokens >= 0 and always_strong_estimate > 0;"
                             f" got {strong_tokens!r}, {always_strong_estimate!r}")
        self.n_episodes += 1
        self._dbar += (d - self._dbar) / self.n_episodes
        self._spent.append(s)
        self._denom.append(d)
        step = self.gain * (s - self.target * d) / (self.target * self._dbar)
        self.position = min(self._n - 1.0, max(0.0, self.position + step))
        return self.policy

    @property
    def realized(self) -> float:
        """Rolling realized fraction over the last ``window`` episodes (estimated
        denominator); NaN before the first episode."""
        den = sum(self._denom)
        return sum(self._spent) / den if den > 0 else math.nan

    def summary(self) -> dict[str, Any]:
        return {"target": self.target, "realized_window": self.realized,
                "window": self.window, "n_episodes": self.n_episodes, "lambda": self.lam,
                "bank_index": self.index, "position": self.position, "gain": self.gain,
                "saturated": self.saturated}


class PacedRouter:
    """A :class:`~trim_pomdp.routing.router.Router` whose lambda a :class:`BudgetPacer` moves
    between episodes.  Same ``reset``/``step``/``executed`` protocol; pass
    ``strong_tokens=`` to :meth:`executed_strong` when the strong model's real token count
    of a regenerated step is known (else the model's ``c_k`` of the step is counted)."""

    def __init__(self, pacer: BudgetPacer, **router_kw: Any) -> None:
        from trim_pomdp.routing.router import Router

        self.pacer = pacer
        self.router = Router(pacer.policy, **router_kw)
        self.name = "trim-pomdp-paced"
        self._cheap: list[float] = []
        self._spent = 0.0
        self._pending = 0.0

    @property
    def drift(self) -> Any:
        return self.router.drift

    @property
    def belief(self):
        return self.router.belief

    def reset(self) -> None:
        if self._cheap:
            self._finish()
        self.router.reset()

    def _finish(self) -> None:
        self._spent += self._pending
        self._pending = 0.0
        pol = self.pacer.update(self._spent, self.pacer.always_strong_estimate(self._cheap))
        self._cheap = []
        self._spent = 0.0
        self.router.reset()
        self.router.set_policy(pol)

    def step(self, prm_score: float, tokens: float, is_final: bool) -> str:
        d = self.router.step(prm_score, tokens, is_final)
        self._spent += self._pending
        self._pending = 0.0
        self._cheap.append(float(tokens))
        if d == "regenerate":
            self._pending = self.pacer.always_strong_estimate([tokens])
        if self.router.done:
            self._finish()
        return d

    def executed(self, action: str | int) -> None:
        self.router.executed(action)
        if action in ("continue", 0):
            self._pending = 0.0

    def executed_strong(self, strong_tokens: float) -> None:
        """The real strong tokens of the step just regenerated (replaces the estimate)."""
        self._pending = float(strong_tokens)
