"""Labelled reasoning traces written by the routing simulator's world.

:func:`simulate_traces` writes the trace one model (cheap or strong) alone would produce on
each problem of a :class:`~trim_pomdp.simulation.world.World`; :func:`routed_traces` writes
the traces a routing run produced (a regenerated step is the strong model's).  Both use the
``Trace``/``Step`` records of :mod:`trim_pomdp.traces`, labelled with the hidden-state
convention, so ``hidden_state_labels`` gives S0 / S2 / S1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.simulation.scenario import Scenario
from trim_pomdp.simulation.world import RoutingResult, World, as_world
from trim_pomdp.steps import MAX_STEPS, S0, S1, S2
from trim_pomdp.traces.records import Step, Trace

__all__ = ["simulate_traces", "routed_traces"]

_LABELS = {S0: "correct", S2: "incorrect", S1: None}


def _single_model_states(u: NDArray[Any], p: NDArray[np.float64],
                         length: NDArray[np.int32]) -> NDArray[np.int8]:
    """Hidden state per step of a trace written entirely by one model: S0 before the first
    wrong step (``u >= p``), S2 at it, S1 after it, -1 past the end."""
    wrong = u >= p[:, None]
    first = np.where(wrong.any(axis=1), wrong.argmax(axis=1), MAX_STEPS)
    j = np.arange(MAX_STEPS)[None, :]
    st = np.where(j < first[:, None], S0, np.where(j == first[:, None], S2, S1)).astype(np.int8)
    st[j >= length[:, None]] = -1
    return st


def simulate_traces(source: Scenario | World | str, *, model: str = "cheap",
                    n_problems: int | None = None, seed: int | None = None,
                    problems: Sequence[int] | None = None) -> list[Any]:
    """Labelled single-model traces of the world's problems (for fitting the models).

    ``model="cheap"``: the cheap model writes every step (the always-cheap trajectory);
    ``model="strong"``: the strong model writes every step (step ``j`` right iff
    ``u_s[i, j] < p_s[i]`` after a right prefix).  Each step carries the PRM score, the
    token count and the first-error label: ``"correct"`` before the first wrong step,
    ``"incorrect"`` at it and ``None`` (not evidence) after it -- the ProcessBench
    convention, so ``hidden_state_labels`` gives S0 / S2 / S1.  ``final_correct`` is whether
    every step is right.  Trace ids are ``"<model>-<problem index>"``.
    """
    if model not in ("cheap", "strong"):
        raise ValueError(f"model must be 'cheap' or 'strong'; got {model!r}")
    world = as_world(source, n_problems=n_problems, seed=seed)
    idx = np.arange(world.n_problems) if problems is None else np.asarray(problems)
    u = world.u_w if model == "cheap" else world.u_s
    p = world.p_w if model == "cheap" else world.p_s
    z = world.z_draft if model == "cheap" else world.z_strong
    tok = world.cheap_tokens if model == "cheap" else world.strong_tokens
    states = _single_model_states(u[idx], p[idx], world.length[idx])
    sub_bias = world.bias[idx]
    scores = world.prm_scores(states, z[idx], sub_bias)
    out = []
    for k, i in enumerate(idx):
        L = int(world.length[i])
        steps = [Step(prm_score=float(scores[k, j]), tokens=int(tok[i, j]),
                      label=_LABELS[int(states[k, j])]) for j in range(L)]
        out.append(Trace(id=f"{model}-{int(i)}", model=model, steps=steps,
                         final_correct=bool(states[k, L - 1] == S0), problem=str(int(i))))
    return out


def routed_traces(world: World, result: RoutingResult, *,
                  problems: Sequence[int] | None = None) -> list[Any]:
    """Labelled traces of a recorded hybrid run (``simulate_routing(..., record=True)``).

    Step ``j`` of a trace is the step as written: by the cheap model when continued, by the
    strong model when regenerated.  ``prm_score`` is the score of the cheap draft the
    router saw, ``tokens`` the tokens of the written step, ``label`` the first-error label of
    the written step.  Extra fields (when the trace format accepts them) are ``writer``,
    ``decision``, ``draft_label``, ``cheap_tokens`` and ``strong_tokens``.
    """
    rec = result.record
    if rec is None:
        raise ValueError("routed_traces needs a result from simulate_routing(..., record=True)")
    if rec.state.shape[0] != world.n_problems:
        raise ValueError(f"result has {rec.state.shape[0]} problems; world has "
                         f"{world.n_problems}")
    idx = np.arange(world.n_problems) if problems is None else np.asarray(problems)
    out = []
    for i in idx:
        L = int(world.length[i])
        steps = []
        wrong_seen = False
        for j in range(L):
            a = int(rec.action[i, j])
            if a == 0:
                ok = int(rec.state[i, j]) == S0
            else:
                ok = int(rec.strong_ok[i, j]) == 1
            if wrong_seen:
                label = None
            else:
                label = "correct" if ok else "incorrect"
                wrong_seen = not ok
            extra = {
                "writer": "strong" if a == 1 else "cheap",
                "decision": "regenerate" if a == 1 else "continue",
                "draft_label": _LABELS[int(rec.state[i, j])],
                "cheap_tokens": int(world.cheap_tokens[i, j]),
                "strong_tokens": int(world.strong_tokens[i, j]) if a == 1 else 0,
            }
            tokens = int(world.strong_tokens[i, j] if a == 1 else world.cheap_tokens[i, j])
            steps.append(Step(prm_score=float(rec.score[i, j]), tokens=tokens, label=label,
                              extra=extra))
        out.append(Trace(id=f"{result.policy}-{int(i)}", model="hybrid", steps=steps,
                         final_correct=bool(result.correct[i]), problem=str(int(i))))
    return out

