"""The step vocabulary shared by every layer: trace length cap, hidden-state codes, actions.

A reasoning trace has at most ``MAX_STEPS`` steps.  The hidden state of a step (the state
*including* the current draft) is one of

* ``S0 = 0``: every step so far, current draft included, is correct;
* ``S1 = 1``: an earlier step is wrong (irrecoverable);
* ``S2 = 2``: every earlier step is correct but the current draft is wrong;

and a router either continues (``CONTINUE = 0``, keep the cheap draft) or regenerates
(``REGENERATE = 1``, replace it by a strong model's step).
"""

from __future__ import annotations

__all__ = ["MAX_STEPS", "S0", "S1", "S2", "STATE_NAMES", "CONTINUE", "REGENERATE", "ACTION_NAMES"]

MAX_STEPS = 30
S0, S1, S2 = 0, 1, 2
STATE_NAMES = ("S0", "S1", "S2")
CONTINUE, REGENERATE = 0, 1
ACTION_NAMES = ("continue", "regenerate")
