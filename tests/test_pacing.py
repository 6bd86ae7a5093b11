"""Budget pacing (issue 15, item 3)."""

import math

import numpy as np
import pytest

from trim_pomdp.errors import PolicyFormatError, RouterStateError
from trim_pomdp.pacing import BudgetPacer, PacedRouter, simulate_paced
from trim_pomdp.router import Router
from trim_pomdp.scenario import default_scenario, load_scenario
from trim_pomdp.simulator import sample_world, simulate_routing_python
from trim_pomdp.trim import TrimModel, default_lambdas, solve_grid


@pytest.fixture(scope="module")
def bank():
    m = TrimModel.from_scenario(default_scenario(), n_score_bins=10, n_token_bins=4)
    return solve_grid(m, default_lambdas(m, 16))


def test_update_arithmetic(bank):
    p = BudgetPacer(bank, 0.1, gain=0.5, start_lambda=float(bank.lambdas[5]))
    assert p.index == 5 and p.lam == bank.lambdas[5]
    p.update(30.0, 100.0)  # spent 3x the target: +0.5 * (30 - 10) / (0.1 * 100) = +1
    assert p.position == pytest.approx(6.0) and p.index == 6
    p.update(0.0, 300.0)  # dbar = 200: 0.5 * (0 - 30) / 20 = -0.75
    assert p.position == pytest.approx(5.25) and p.index == 5
    assert p.realized == pytest.approx(30.0 / 400.0)
    assert p.always_strong_estimate([1, 10_000]) == pytest.approx(
        bank.model.strong_tokens[0] + bank.model.strong_tokens[-1])


def test_bad_arguments(bank):
    for t in (0.0, 1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match="target must be a cost fraction"):
            BudgetPacer(bank, t)
    with pytest.raises(ValueError, match="gain"):
        BudgetPacer(bank, 0.1, gain=0)
    with pytest.raises(ValueError, match="window"):
        BudgetPacer(bank, 0.1, window=0)
    p = BudgetPacer(bank, 0.1)
    with pytest.raises(ValueError, match="always_strong_estimate > 0"):
        p.update(1.0, 0.0)


def test_converges_to_target_on_drift():
    """Start at a lambda that spends ~2x the target on the shifted-PRM world; after a
    burn-in the realized fraction is within 2 points of 10 %."""
    m = TrimModel.from_scenario(default_scenario(), n_score_bins=10, n_token_bins=4)
    bank = solve_grid(m, default_lambdas(m, 32))
    world = sample_world(load_scenario("drift_shifted"), n_problems=6000, seed=3)
    p = BudgetPacer(bank, 0.10, gain=0.05, window=500, start_lambda=float(bank.lambdas[8]))
    r = simulate_paced(world, p)
    s, a = r["strong_tokens"], r["always_strong_tokens"]
    assert s[:500].sum() / a[:500].sum() > 0.15  # far off at the start
    tail = s[2000:].sum() / a[2000:].sum()
    assert abs(tail - 0.10) < 0.02, tail
    assert not p.saturated and p.n_episodes == 6000


def test_unreachable_target_saturates(bank):
    world = sample_world(default_scenario(), n_problems=1500, seed=1)
    p = BudgetPacer(bank, 0.999, gain=0.5)
    simulate_paced(world, p)
    assert p.index == 0 and p.saturated
    assert p.summary()["saturated"] is True


def test_paced_router_protocol(bank):
    world = sample_world(default_scenario(), n_problems=200, seed=2)
    start = float(bank.lambdas[0])  # most generous: spends far more than 1 %
    pr = PacedRouter(BudgetPacer(bank, 0.01, gain=0.2, start_lambda=start))
    first = simulate_routing_python(world, pr, problems=[0])
    plain = simulate_routing_python(world, Router(bank[0]), problems=[0])
    np.testing.assert_array_equal(first.strong_tokens, plain.strong_tokens)
    simulate_routing_python(world, pr, problems=range(1, 200))
    assert pr.pacer.n_episodes == 200
    assert pr.pacer.position > 3  # moved towards larger lambdas (less spending)
    assert pr.router.policy is bank[pr.pacer.index]


def test_set_policy_checks(bank):
    r = Router(bank[0])
    r.set_policy(bank[3])
    assert r.policy is bank[3]
    r.step(0.5, 40, False)
    with pytest.raises(RouterStateError, match="middle of an episode"):
        r.set_policy(bank[2])
    other = solve_grid(bank.model.__class__.from_scenario(default_scenario(), n_score_bins=10,
                                                          n_token_bins=4), [1e-3])
    with pytest.raises(PolicyFormatError, match="same bank"):
        r.set_policy(other[0])
