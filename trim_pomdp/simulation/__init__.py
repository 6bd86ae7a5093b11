"""The generative world of routing episodes: ``scenario`` (its parameters, JSON),
``world`` (common random numbers and the paired Numba simulator) and ``synth_traces``
(the labelled traces a world writes).
"""

from __future__ import annotations

from trim_pomdp._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "simulate_traces": "trim_pomdp.simulation.synth_traces",
    "routed_traces": "trim_pomdp.simulation.synth_traces",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
