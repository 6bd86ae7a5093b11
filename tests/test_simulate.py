"""Monte Carlo simulation: exact returns on deterministic problems, agreement with exact
policy evaluation by enumeration, reproducibility, errors."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from brute_force import (
    ArrayModel,
    evaluate_policy_exact,
    exact_value_iteration,
    random_pomdp,
    tiger,
)

from trim_pomdp.engine.montecarlo import SimulationResult, default_horizon, simulate
from trim_pomdp.engine.policy import AlphaVectorPolicy
from trim_pomdp.errors import PolicyFormatError


def _discounted(rewards, discount):
    g, d = 0.0, 1.0
    for r in rewards:
        g += d * r
        d *= discount
    return g


def test_deterministic_cycle_exact_return():
    # 3 states visited in a cycle 0 -> 1 -> 2 -> 0, observed exactly; the one action pays
    # R[s] = (1, 2, 4).  Every episode has the same return and the stderr is 0.
    T = np.array([np.roll(np.eye(3), 1, axis=1)])
    Z = np.array([np.eye(3)])
    R = np.array([[1.0, 2.0, 4.0]])
    m = ArrayModel(T=T, Z=Z, R=R, discount=0.5, b0=np.array([0.0, 1.0, 0.0]))
    pol = AlphaVectorPolicy(np.zeros((1, 3)), [0])
    res = simulate(m, pol, episodes=10, horizon=7, seed=1)
    expected = _discounted([2, 4, 1, 2, 4, 1, 2], 0.5)
    np.testing.assert_allclose(res.returns, expected, rtol=1e-15)
    assert res.mean == pytest.approx(expected, rel=1e-15)
    assert res.stderr == 0.0
    assert res.horizon == 7 and res.episodes == 10
    assert res.truncation_bound == pytest.approx(0.5**7 * 4 / 0.5)


def test_horizon_one_mean_is_expected_immediate_reward():
    # One step from b0: the returns are R[a, s0] with s0 ~ b0, so the mean estimates b0 . R[a].
    m = tiger()
    pol = AlphaVectorPolicy(m.R, [0, 1, 2])  # greedy one-step: listens at b0
    res = simulate(m, pol, episodes=1000, horizon=1, seed=0)
    assert np.all(res.returns == -1.0)
    # a policy that always opens the left door: returns are -100 or 10
    res = simulate(m, AlphaVectorPolicy([[0.0, 0.0]], [1]), episodes=20000, horizon=1, seed=3)
    assert set(np.unique(res.returns)) == {-100.0, 10.0}
    assert abs(res.mean - (-45.0)) < 3 * res.stderr
    assert res.stderr == pytest.approx(55.0 / math.sqrt(20000), rel=0.02)  # sd of +-55 coin


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_exact_policy_evaluation_random(seed):
    # Stationary policy from the exact 2-step value function, run for 5 steps: the exact
    # expected return (enumerating all O^5 observation sequences) must lie within 3
    # standard errors of the Monte Carlo mean.
    rng = np.random.default_rng(seed)
    m = random_pomdp(rng, 3, 2, 2, discount=0.9, sparsity=0.3)
    alphas, actions = exact_value_iteration(m.T, m.Z, m.R, m.discount, 2)
    pol = AlphaVectorPolicy(alphas, actions)
    exact = evaluate_policy_exact(m.T, m.Z, m.R, m.discount, m.b0, 5, pol.action)
    res = simulate(m, pol, episodes=20000, horizon=5, seed=seed)
    assert res.stderr > 0
    assert abs(res.mean - exact) < 3 * res.stderr, (res.mean, exact, res.stderr)


def test_matches_exact_policy_evaluation_tiger():
    m = tiger()
    pol = AlphaVectorPolicy(m.R, [0, 1, 2])
    exact = evaluate_policy_exact(m.T, m.Z, m.R, m.discount, m.b0, 8, pol.action)
    res = simulate(m, pol, episodes=20000, horizon=8, seed=11)
    assert abs(res.mean - exact) < 3 * res.stderr, (res.mean, exact, res.stderr)


def test_same_seed_same_returns():
    m = tiger()
    pol = AlphaVectorPolicy(m.R, [0, 1, 2])
    a = simulate(m, pol, 500, 20, 5)
    b = simulate(m, pol, 500, 20, 5)
    c = simulate(m, pol, 500, 20, 6)
    np.testing.assert_array_equal(a.returns, b.returns)
    assert not np.array_equal(a.returns, c.returns)
    assert a.returns.flags.writeable is False
    lo, hi = a.confidence_interval()
    assert lo == pytest.approx(a.mean - 1.96 * a.stderr) and hi == pytest.approx(
        a.mean + 1.96 * a.stderr
    )
    assert isinstance(a, SimulationResult)


def test_default_horizon():
    # tiger: smallest H with 0.95^H * 100 / 0.05 <= 1e-3  ->  H = 283
    assert default_horizon(0.95, 100.0) == 283
    assert 0.95**283 * 100 / 0.05 <= 1e-3 < 0.95**282 * 100 / 0.05
    res = simulate(tiger(), AlphaVectorPolicy(tiger().R, [0, 1, 2]), episodes=2, seed=0)
    assert res.horizon == 283 and res.truncation_bound <= 1e-3
    assert default_horizon(0.5, 0.0) == 1
    with pytest.raises(ValueError, match="horizon must be given explicitly when discount == 1"):
        default_horizon(1.0, 1.0)


def test_discount_one_needs_horizon():
    m = tiger(discount=1.0)
    pol = AlphaVectorPolicy(m.R, [0, 1, 2])
    with pytest.raises(ValueError, match="horizon must be given explicitly"):
        simulate(m, pol, episodes=10, seed=0)
    res = simulate(m, pol, episodes=10, horizon=3, seed=0)
    assert res.truncation_bound == math.inf


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"episodes": 1}, ValueError, "episodes must be an integer >= 2; got 1"),
        ({"episodes": 10.0}, ValueError, "episodes must be an integer >= 2"),
        ({"horizon": 0}, ValueError, "horizon must be an integer >= 1; got 0"),
        ({"seed": -1}, ValueError, r"seed must be an integer in 0..2\*\*32-1; got -1"),
        ({"seed": 2**32}, ValueError, "seed must be an integer"),
    ],
)
def test_argument_errors(kwargs, exc, match):
    m = tiger()
    args = {"episodes": 10, "horizon": 5, "seed": 0}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        simulate(m, AlphaVectorPolicy(m.R, [0, 1, 2]), **args)


def test_policy_must_fit_model():
    m = tiger()
    with pytest.raises(
        PolicyFormatError, match="alpha vector 0 has action 3 but the model has 3 actions"
    ):
        simulate(m, AlphaVectorPolicy([[0.0, 0.0]], [3]), 10, 5, 0)
    with pytest.raises(PolicyFormatError, match="length 3 but the model has 2 states"):
        simulate(m, AlphaVectorPolicy([[0.0, 0.0, 0.0]], [0]), 10, 5, 0)
    with pytest.raises(TypeError, match="policy must be an AlphaVectorPolicy"):
        simulate(m, "listen", 10, 5, 0)


def test_python_policy_matches_exact_evaluation():
    # Any object with action(belief) -> int runs on the Python path.
    m = tiger()
    inner = AlphaVectorPolicy(m.R, [0, 1, 2])

    class Greedy:
        def action(self, b):
            return inner.action(b)

    exact = evaluate_policy_exact(m.T, m.Z, m.R, m.discount, m.b0, 6, inner.action)
    res = simulate(m, Greedy(), episodes=4000, horizon=6, seed=2)
    assert abs(res.mean - exact) < 3 * res.stderr, (res.mean, exact, res.stderr)
    # same uniforms in the same order as the compiled path: identical returns
    np.testing.assert_array_equal(res.returns, simulate(m, inner, 4000, 6, 2).returns)


def test_python_policy_bad_action():
    class Bad:
        def action(self, b):
            return 5

    with pytest.raises(
        ValueError,
        match=r"policy.action returned 5 at episode 0, step 0; expected an action index in 0..2",
    ):
        simulate(tiger(), Bad(), 10, 5, 0)


def test_duck_typed_policy():
    class P:
        alphas = tiger().R
        actions = np.array([0, 1, 2])

    m = tiger()
    a = simulate(m, P(), 100, 10, 0)
    b = simulate(m, AlphaVectorPolicy(m.R, [0, 1, 2]), 100, 10, 0)
    np.testing.assert_array_equal(a.returns, b.returns)


def test_package_attribute_is_callable_after_submodule_import():
    # `import trim_pomdp.simulate` binds the package attribute to the submodule; it must
    # still behave as the function.
    code = (
        "import sys; sys.path.insert(0, 'tests'); import numpy as np\n"
        "import trim_pomdp.simulate\n"
        "from trim_pomdp import simulate, AlphaVectorPolicy\n"
        "from brute_force import tiger\n"
        "m = tiger(); r = simulate(m, AlphaVectorPolicy(m.R, [0, 1, 2]), 10, 1, 0)\n"
        "print(r.mean)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=300)
    assert float(out.stdout) == -1.0


def test_kernel_reports_impossible_observation():
    # The sampler's world (T_cum) moves to state 1, the filter's T says the state never
    # changes and Z reveals it: the observation is impossible under the belief, and the
    # kernel must report (episode, step, a, o) instead of producing a NaN belief.  The
    # world's cumulative sums share the filter's rows, so both rows store both columns:
    # the filter's T = I with explicit zeros, the world's cumulative sums (0, 1).
    from trim_pomdp.engine.montecarlo import row_cumsum, simulate_kernel

    indptr = np.array([0, 2, 4])
    indices = np.array([0, 1, 0, 1])
    filter_T = np.array([1.0, 0.0, 0.0, 1.0])
    world_T_cum = np.empty(4)
    row_cumsum(indptr, np.array([0.0, 1.0, 0.0, 1.0]), world_T_cum)
    assert world_T_cum.tolist() == [0.0, 1.0, 0.0, 1.0]
    Z = np.array([np.eye(2)])
    Z_indptr, Z_indices, Z_cum = np.array([0, 1, 2]), np.array([0, 1]), np.array([1.0, 1.0])
    R = np.zeros((1, 2))
    b0 = np.array([1.0, 0.0])
    returns = np.zeros(3)
    fail = np.full(4, -1, dtype=np.int64)
    simulate_kernel(
        indptr, indices, filter_T, Z, R, world_T_cum, Z_indptr, Z_indices, Z_cum, b0,
        np.cumsum(b0), np.zeros((2, 1)), np.zeros(1, np.int64), 0.9, 4,
        np.random.default_rng(0).random(27), returns, fail,
    )  # fmt: skip
    assert fail.tolist() == [0, 0, 0, 1]


# ---------------------------------------------------------------------------- with the real POMDP


def test_tiger_helper_equals_shared_file(pomdp_problems_dir):
    from trim_pomdp.engine.model import POMDP

    model = POMDP.from_file(pomdp_problems_dir / "tiger.95.POMDP")
    ref = tiger()
    for name in ("T", "Z", "R", "b0"):
        np.testing.assert_array_equal(getattr(model, name), getattr(ref, name))
    assert model.discount == ref.discount
    assert list(model.action_names) == ref.action_names


def test_simulate_parsed_model_matches_exact_evaluation(pomdp_problems_dir):
    # The exact 4-step value function of tiger as a stationary policy, run for 8 steps on
    # the parsed model: Monte Carlo mean vs exact enumeration of the 2^8 observation paths.
    from trim_pomdp.engine.belief import BeliefUpdater
    from trim_pomdp.engine.model import POMDP

    model = POMDP.from_file(pomdp_problems_dir / "tiger.95.POMDP")
    alphas, actions = exact_value_iteration(model.T, model.Z, model.R, model.discount, 4)
    pol = AlphaVectorPolicy(alphas, actions, action_names=model.action_names).check_model(model)
    exact = evaluate_policy_exact(
        model.T, model.Z, model.R, model.discount, model.b0, 8, pol.action
    )
    res = simulate(model, pol, episodes=20000, horizon=8, seed=4)
    assert abs(res.mean - exact) < 3 * res.stderr, (res.mean, exact, res.stderr)
    # and the filter on the parsed model gives the textbook numbers
    up = BeliefUpdater(model)
    np.testing.assert_allclose(up.update(up.initial_belief(), 0, 0), [0.85, 0.15], atol=1e-15)


def test_zero_probability_names_from_parsed_model():
    from trim_pomdp.engine.belief import BeliefUpdater
    from trim_pomdp.engine.model import POMDP
    from trim_pomdp.errors import ZeroProbabilityObservationError

    text = (
        "discount: 0.9\nvalues: reward\nstates: left right\nactions: look\n"
        "observations: see-left see-right\nT: look identity\nO: look identity\n"
        "R: look : * : * : * 0\n"
    )
    up = BeliefUpdater(POMDP.from_string(text))
    with pytest.raises(
        ZeroProbabilityObservationError,
        match=r"observation o=1 \(see-right\) has zero probability after action a=0 \(look\) "
        r"from a belief with support \{0 \(left\)\}",
    ):
        up.update([1.0, 0.0], 0, 1)
