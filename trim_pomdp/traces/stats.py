"""Binomial statistics of labelled steps: step accuracy over *trials* (steps whose prefix is
known to be correct and whose own label is known) with Wilson's score interval,

    centre = (k + z^2/2) / (n + z^2),
    half   = z / (n + z^2) * sqrt(k (n - k) / n + z^2 / 4).

Shared by the transition fit (:mod:`trim_pomdp.fit.transition`) and the ProcessBench
reader (:mod:`trim_pomdp.traces.processbench`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.traces.records import Trace
from trim_pomdp.traces.table import TraceTable, as_table

__all__ = ["BinomialEstimate", "wilson_interval", "step_accuracy"]




@dataclass(frozen=True)
class BinomialEstimate:
    """A proportion ``p = k / n`` with its Wilson interval ``(lo, hi)`` at level ``ci``."""

    p: float
    lo: float
    hi: float
    k: int
    n: int
    ci: float


def wilson_interval(k: int, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (module docstring)."""
    if n <= 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + ci / 2.0)
    z2 = z * z
    centre = (k + z2 / 2.0) / (n + z2)
    half = z / (n + z2) * float(np.sqrt(k * (n - k) / n + z2 / 4.0))
    # at k = 0 (k = n) the bound is exactly 0 (1); avoid rounding residue
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


def _trial_mask(table: TraceTable) -> NDArray[np.bool_]:
    """Steps that are Bernoulli trials for the next-step accuracy: known label, known-correct
    prefix.  With first-error semantics a prefix is known correct iff the step's hidden state
    is S0 or S2 (both need every earlier step labelled correct)."""
    mask: NDArray[np.bool_] = (table.state == 0) | (table.state == 2)
    return mask


def step_accuracy(traces: Iterable[Trace] | TraceTable, ci: float = 0.95, *,
                  writer: int | None = None) -> BinomialEstimate:
    """Next-step accuracy of the model that wrote ``traces``: trials are steps with a known
    correct prefix and a known label; success = the step is correct.

    Parameters
    ----------
    traces : traces or TraceTable
    ci : float
        Level of the Wilson interval.
    writer : {None, 0, 1}
        Restrict to steps written by the cheap (0) or strong (1) model
        (``Step.extra["writer"]``; steps without it count as written by the trace's model,
        code 0).  None: every step.
    """
    table = as_table(traces)
    mask = _trial_mask(table)
    if writer is not None:
        mask &= table.writer == writer
    n = int(mask.sum())
    k = int((table.state[mask] == 0).sum())
    lo, hi = wilson_interval(k, n, ci)
    return BinomialEstimate(p=k / n if n else float("nan"), lo=lo, hi=hi, k=k, n=n, ci=ci)
