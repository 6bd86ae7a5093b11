"""Known answer: when strong tokens are free (``lambda = 0``) the TRIM-POMDP policy of a
model that observes the PRM score alone is a fixed rule on the current score.

With ``b`` the belief after the current draft's score, continuing succeeds from S0 only and
leads to a fresh draft after a correct prefix; regenerating succeeds from S0 or S2 with
probability ``p_s`` and leads to the same situation.  Both continuations share one future value
``W``, so ``Q(continue) = b(S0) W`` and ``Q(regenerate) = (b(S0) + b(S2)) p_s W``: regenerate
iff ``b(S2) p_s > b(S0) (1 - p_s)``.  After a correct prefix a fresh draft is S0 with
probability ``p_w``, so ``b(S2) / b(S0) = (1 - p_w) O[S2, o] / (p_w O[S0, o])`` whatever came
before (S1's mass drops out): regenerate iff
``(1 - p_w) O[S2, o] p_s > p_w O[S0, o] (1 - p_s)``, at every step and on every history.
This is why, with the score alone, TRIM-POMDP's best accuracy can at most tie the best
threshold router's (README, "Defaults that hold")."""

from __future__ import annotations

import numpy as np

from trim_pomdp.routing.bank import solve_grid
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.routing.router import Router

P_W, P_S = 0.9, 0.95
# 8 equal-width score bins; S0 rises with the score, S2 falls, S1 in between
OBS = np.array([
    [0.01, 0.02, 0.03, 0.05, 0.09, 0.15, 0.25, 0.40],   # S0
    [0.10, 0.12, 0.14, 0.16, 0.16, 0.14, 0.10, 0.08],   # S1
    [0.30, 0.25, 0.17, 0.11, 0.07, 0.05, 0.03, 0.02],   # S2
])


def closed_form_regenerate(o: int) -> bool:
    return (1 - P_W) * OBS[2, o] * P_S > P_W * OBS[0, o] * (1 - P_S)


def test_lambda0_policy_is_the_closed_form_score_rule_on_every_history():
    # the rule must not sit on a knife edge in any bin (the solver is point-based)
    lhs, rhs = (1 - P_W) * OBS[2] * P_S, P_W * OBS[0] * (1 - P_S)
    assert np.all(np.abs(lhs - rhs) > 0.2 * np.minimum(lhs, rhs))
    expected = [closed_form_regenerate(o) for o in range(8)]
    assert 0 < sum(expected) < 8  # both actions occur: the test can tell rules apart

    model = TrimModel.from_parameters(p_w=P_W, p_s=P_S, hazard=np.full(30, 0.15),
                                      obs_matrix=OBS, token_probs=[0.5, 0.5],
                                      strong_tokens=[30.0, 90.0], token_edges=[50.0])
    router = Router(solve_grid(model, [0.0])[0])
    rng = np.random.default_rng(7)
    seen = np.zeros((8, 2), dtype=int)
    for _ in range(300):
        router.reset()
        length = int(rng.integers(1, 31))
        for t in range(1, length + 1):
            o = int(rng.integers(8))
            score = (o + rng.uniform(0.05, 0.95)) / 8
            d = router.step(score, float(rng.choice([20.0, 80.0])), t == length)
            assert (d == "regenerate") == expected[o], (o, t, d)
            seen[o, int(t == length)] += 1
    assert np.all(seen > 0)  # every bin met on final and non-final steps
