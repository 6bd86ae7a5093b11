"""Query-level routers: the query oracle and AutoMix-style escalation.

Query-level routers decide once per query (cheap model or strong model for the whole
solution).  They are evaluated from the paired always-cheap and always-strong runs on the
same world, which equals running :class:`EscalationPolicy` (regenerate every step of the
escalated queries) in the simulator, by construction of the common random numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.simulation.world import RoutingResult

__all__ = ["query_min_scores", "automix_escalate", "combine_query_routing", "query_oracle_order"]


def query_min_scores(cheap_record_scores: NDArray[Any]) -> NDArray[np.float64]:
    """Per-query minimum PRM score of the cheap trace from a recorded always-cheap run's
    ``record.score`` (NaN past the end is ignored)."""
    s = np.asarray(cheap_record_scores, dtype=np.float64)
    return np.nanmin(np.where(np.isnan(s), np.inf, s), axis=1)


def automix_escalate(min_scores: NDArray[np.float64], threshold: float) -> NDArray[np.bool_]:
    """AutoMix-style query routing: escalate the whole query to the strong model iff the
    minimum PRM score of its cheap solution is below ``threshold`` (the PRM plays the part
    of AutoMix's self-verifier, thresholded as in its ``Threshold`` meta-verifier)."""
    return np.asarray(min_scores) < float(threshold)


def combine_query_routing(mask: NDArray[np.bool_], cheap: Any, strong: Any,
                          name: str = "query-router") -> Any:
    """The :class:`~trim_pomdp.simulation.world.RoutingResult` of escalating the ``mask`` queries,
    from the paired always-cheap and always-strong runs (identical to simulating
    :class:`EscalationPolicy`, cf. ``tests/test_baselines.py``)."""
    m = np.asarray(mask, dtype=bool)
    if m.shape != cheap.correct.shape or m.shape != strong.correct.shape:
        raise ValueError(f"mask has shape {m.shape}; expected {cheap.correct.shape}")
    return RoutingResult(
        policy=name,
        correct=np.where(m, strong.correct, cheap.correct),
        strong_tokens=np.where(m, strong.strong_tokens, cheap.strong_tokens),
        cheap_tokens=np.where(m, strong.cheap_tokens, cheap.cheap_tokens),
        steps=np.where(m, strong.steps, cheap.steps).astype(np.int32),
        regenerations=np.where(m, strong.regenerations, cheap.regenerations).astype(np.int32),
        always_strong_tokens=cheap.always_strong_tokens,
    )


def query_oracle_order(cheap: Any, strong: Any, *, order: str = "random",
                       seed: int = 0) -> NDArray[np.int64]:
    """Queries the oracle query router escalates, in the order a budget admits them.

    The oracle query router sends to the strong model exactly the queries the strong model
    solves and the cheap one does not (at full budget it solves every query either
    model solves).  Under a smaller budget it escalates a prefix of the returned indices:

    * ``order="random"`` (default): a seeded random order, so the budget curve is the straight
      line from always-cheap to the full oracle point (the oracle is a single operating
      point; spending less means mixing it with the cheap model);
    * ``order="cheapest"``: increasing strong-token cost, the best a clairvoyant query router
      can do per token (a stronger, token-aware oracle).
    """
    rescuable = np.flatnonzero(strong.correct & ~cheap.correct)
    if order == "cheapest":
        return rescuable[np.argsort(strong.strong_tokens[rescuable], kind="stable")]
    if order == "random":
        return rescuable[np.random.default_rng(seed).permutation(len(rescuable))]
    raise ValueError(f"order must be 'random' or 'cheapest'; got {order!r}")
