"""A plain-Python, one-episode-at-a-time reference of the routing simulator
(:func:`trim_pomdp.simulation.world.simulate_routing`): the test oracle the Numba kernels are
checked against."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from trim_pomdp.simulation.scenario import Scenario
from trim_pomdp.simulation.world import (
    RoutingResult,
    World,
    as_world,
)
from trim_pomdp.steps import S0, S1, S2


def simulate_routing_python(source: Scenario | World | str, router: Any, *,
                            n_problems: int | None = None, seed: int | None = None,
                            problems: Sequence[int] | None = None) -> RoutingResult:
    """Plain-Python, one-episode-at-a-time reference simulator driving a *Router*.

    The router protocol is ``reset()``, ``step(prm_score, tokens, is_final) -> "continue" |
    "regenerate"`` and optionally ``executed(action)``; a router with ``needs_truth = True``
    gets ``truth=<hidden state>`` as a keyword.  Same semantics and draws as
    :func:`simulate_routing` (it is its independent reference implementation), but slow:
    use it on small worlds, e.g. to check a Router against its BatchPolicy.  The router
    keeps its own ``min_prev`` feature from the scores and decisions it sees.
    """
    world = as_world(source, n_problems=n_problems, seed=seed)
    idx = np.arange(world.n_problems) if problems is None else np.asarray(problems)
    m = len(idx)
    correct = np.zeros(m, bool)
    strong_tok = np.zeros(m, np.int64)
    cheap_tok = np.zeros(m, np.int64)
    steps = np.zeros(m, np.int32)
    regens = np.zeros(m, np.int32)
    needs_truth = bool(getattr(router, "needs_truth", False))
    for k, i in enumerate(idx):
        pw, ps, L = float(world.p_w[i]), float(world.p_s[i]), int(world.length[i])
        s = S0 if world.u_w[i, 0] < pw else S2
        router.reset()
        for t in range(1, L + 1):
            j = t - 1
            score = _py_score(world, s, float(world.z_draft[i, j]), float(world.bias[i]))
            final = t == L
            kw = {"truth": s} if needs_truth else {}
            decision = router.step(score, int(world.cheap_tokens[i, j]), final, **kw)
            if decision not in ("continue", "regenerate"):
                raise ValueError(f"router returned {decision!r}; expected 'continue' or "
                                 "'regenerate'")
            cheap_tok[k] += world.cheap_tokens[i, j]
            steps[k] = t
            if decision == "continue":
                if final:
                    correct[k] = s == S0
                elif s == S0:
                    s = S0 if world.u_w[i, t] < pw else S2
                else:
                    s = S1
            else:
                strong_tok[k] += world.strong_tokens[i, j]
                regens[k] += 1
                ok = s != S1 and world.u_s[i, j] < ps
                if final:
                    correct[k] = ok
                elif ok:
                    s = S0 if world.u_w[i, t] < pw else S2
                else:
                    s = S1
    ast = world.always_strong_tokens()[idx]
    return RoutingResult(policy=getattr(router, "name", type(router).__name__),
                         correct=correct, strong_tokens=strong_tok, cheap_tokens=cheap_tok,
                         steps=steps, regenerations=regens, always_strong_tokens=ast)


def _py_score(world: World, s: int, z: float, bias: float) -> float:
    grid_x = (z - world.z_lo) / world.dz
    g = world.score_table.shape[1]
    if grid_x <= 0:
        v = float(world.score_table[s, 0])
    elif grid_x >= g - 1:
        v = float(world.score_table[s, g - 1])
    else:
        k = int(grid_x)
        f = grid_x - k
        v = float(world.score_table[s, k] * (1 - f) + world.score_table[s, k + 1] * f)
    if bias != 0.0:
        v = min(max(v, 1e-12), 1 - 1e-12)
        v = 1.0 / (1.0 + math.exp(-(math.log(v / (1 - v)) + bias)))
    return v
