"""The interfaces the layers meet at: a batch policy the simulator runs, and a family of
routers swept over a budget parameter.

They live in the routing layer because a router implements them; the simulator
(:mod:`trim_pomdp.simulation.world`) and the evaluation (:mod:`trim_pomdp.evaluation`)
consume them, so neither has to import the other to agree on what a policy is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = ["BatchPolicy", "Family"]


@runtime_checkable
class BatchPolicy(Protocol):
    """What the simulator needs from a policy.

    Attributes
    ----------
    name : str
    needs_truth : bool
        ``True`` only for clairvoyant policies (simulation only): ``act`` then receives the
        hidden state of every draft.

    Notes
    -----
    ``act(t, score, min_prev, tokens, is_final, active, truth=None)`` receives arrays of
    length ``n`` (``t`` is the 1-based step index) and returns 0 (continue) / 1
    (regenerate) per episode as an integer or bool array of length ``n``; entries of
    inactive episodes are ignored.  The arrays are the simulator's buffers: read them, do
    not keep or modify them.  ``executed(actions)`` is then called with the actions that
    were executed (for belief tracking).
    """

    name: str
    needs_truth: bool

    def reset_batch(self, n: int) -> None: ...

    def act(self, t: int, score: NDArray[np.float64], min_prev: NDArray[np.float64],
            tokens: NDArray[np.int64], is_final: NDArray[np.bool_], active: NDArray[np.bool_],
            truth: NDArray[np.int8] | None = None) -> NDArray[np.int8]: ...

    def executed(self, actions: NDArray[np.int8]) -> None: ...



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
