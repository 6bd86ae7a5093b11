import numpy as np
import pytest

from trim_pomdp.errors import RouterStateError
from trim_pomdp.evaluation.query_routing import (
    automix_escalate,
    combine_query_routing,
    query_min_scores,
    query_oracle_order,
)
from trim_pomdp.routing.baselines import (
    AlwaysCheap,
    AlwaysStrong,
    EscalationPolicy,
    OraclePolicy,
    RandomPolicy,
    ThresholdPolicy,
)
from trim_pomdp.routing.protocols import BatchPolicy
from trim_pomdp.simulation.scenario import default_scenario
from trim_pomdp.simulation.world import sample_world, simulate_routing


@pytest.fixture(scope="module")
def world():
    return sample_world(default_scenario(), n_problems=3000, seed=3)


@pytest.fixture(scope="module")
def pair(world):
    return (simulate_routing(world, AlwaysCheap(), record=True),
            simulate_routing(world, AlwaysStrong()))


@pytest.mark.parametrize("pol", [ThresholdPolicy(0.5), AlwaysCheap(), AlwaysStrong(),
                                 RandomPolicy(0.2), OraclePolicy(),
                                 EscalationPolicy(np.zeros(3, bool))])
def test_every_baseline_is_a_batch_policy(pol):
    assert isinstance(pol, BatchPolicy)
    assert hasattr(pol, "reset") and hasattr(pol, "step") and pol.belief is None


def test_router_protocol_threshold():
    r = ThresholdPolicy(0.5)
    r.reset()
    assert r.step(0.9, 40, False) == "continue"
    assert r.step(0.2, 40, False) == "regenerate"
    assert r.min_prev == 0.9  # the kept step-1 draft
    r.executed("continue")  # the caller kept the low draft after all
    assert r.step(0.7, 40, True) == "continue"
    assert r.min_prev == pytest.approx(0.2)
    with pytest.raises(RouterStateError, match="after a final step"):
        r.step(0.5, 10, False)
    r.reset()
    assert r.step(0.49, 1, False) == "regenerate"


def test_router_errors():
    r = ThresholdPolicy(0.5)
    with pytest.raises(RouterStateError, match="before any step"):
        r.executed("continue")
    for bad in (float("nan"), -0.1, 1.5):
        with pytest.raises(ValueError, match="prm_score must be in"):
            r.step(bad, 10, False)
    with pytest.raises(ValueError, match="tokens must be >= 0"):
        r.step(0.5, -1, False)
    r.step(0.5, 1, False)
    with pytest.raises(ValueError, match="action must be 'continue' or 'regenerate'"):
        r.executed("strong")
    r.reset()
    for _ in range(29):
        r.step(0.9, 1, False)
    r.step(0.9, 1, False)  # step 30 is final whatever the caller says
    with pytest.raises(RouterStateError, match="after a final step"):
        r.step(0.9, 1, False)
    with pytest.raises(ValueError, match="q must be in"):
        RandomPolicy(1.2)
    with pytest.raises(ValueError, match="threshold k"):
        ThresholdPolicy(float("nan"))


def test_oracle_router_needs_truth():
    o = OraclePolicy()
    o.reset()
    with pytest.raises(RouterStateError, match="simulation only"):
        o.step(0.5, 10, False)
    assert o.step(0.9, 10, False, truth=2) == "regenerate"
    assert o.step(0.1, 10, False, truth=0) == "continue"
    assert o.step(0.1, 10, False, truth=1) == "continue"
    with pytest.raises(ValueError, match="hidden state"):
        o.step(0.1, 10, False, truth=5)


def test_oracle_bounds_step_policies(world, pair):
    cheap, strong = pair
    orc = simulate_routing(world, OraclePolicy())
    # per problem: anything the oracle fails is failed by every policy that keeps the
    # same cheap drafts it keeps... at least in aggregate it dominates the threshold family
    for k in (0.2, 0.4, 0.6, 0.8):
        r = simulate_routing(world, ThresholdPolicy(k))
        assert orc.accuracy >= r.accuracy
    assert orc.accuracy > strong.accuracy > cheap.accuracy
    # the partial oracle interpolates
    half = simulate_routing(world, OraclePolicy(0.5))
    assert cheap.accuracy < half.accuracy < orc.accuracy
    assert 0 < half.cost_fraction < orc.cost_fraction


def test_escalation_policy_equals_paired_combination(world, pair):
    cheap, strong = pair
    mins = query_min_scores(cheap.record.score)
    assert mins.shape == (world.n_problems,)
    np.testing.assert_allclose(
        mins, [np.min(cheap.record.score[i, : world.length[i]]) for i in range(world.n_problems)])
    for thr in (0.1, 0.3, 0.6):
        mask = automix_escalate(mins, thr)
        sim = simulate_routing(world, EscalationPolicy(mask))
        comb = combine_query_routing(mask, cheap, strong)
        for f in ("correct", "strong_tokens", "cheap_tokens", "steps", "regenerations"):
            np.testing.assert_array_equal(getattr(sim, f), getattr(comb, f), err_msg=f)
    with pytest.raises(ValueError, match="escalation mask has shape"):
        simulate_routing(world, EscalationPolicy(np.zeros(5, bool)))


def test_query_oracle_order(world, pair):
    cheap, strong = pair
    order = query_oracle_order(cheap, strong, order="cheapest")
    assert np.all(strong.correct[order]) and not np.any(cheap.correct[order])
    assert np.all(np.diff(strong.strong_tokens[order]) >= 0)
    rnd = query_oracle_order(cheap, strong, seed=1)
    assert sorted(rnd) == sorted(order) and not np.array_equal(rnd, order)
    with pytest.raises(ValueError, match="order must be"):
        query_oracle_order(cheap, strong, order="best")
    mask = np.zeros(world.n_problems, bool)
    mask[order] = True
    full = combine_query_routing(mask, cheap, strong)
    # the full oracle query router solves every query either model solves
    assert full.accuracy == pytest.approx(np.mean(cheap.correct | strong.correct))


def test_escalation_policy_has_no_step_interface():
    p = EscalationPolicy(np.ones(2, bool))
    with pytest.raises(TypeError, match="no step-by-step Router interface"):
        p.step(0.5, 1, False)


def test_random_router_rate_through_python_reference(world):
    from reference_simulator import simulate_routing_python

    res = simulate_routing_python(world, RandomPolicy(0.3, seed=5), problems=range(800))
    n = res.steps.sum()
    assert abs(res.regenerations.sum() / n - 0.3) < 4 * np.sqrt(0.21 / n)


def test_step_policy_is_the_public_base_of_step_level_routers():
    from trim_pomdp.rl.agents import RLRouter
    from trim_pomdp.routing import StepPolicy, baselines

    assert baselines._StepPolicy is StepPolicy  # the old private name still works
    for cls in (baselines.ThresholdPolicy, baselines.AlwaysCheap, baselines.RandomPolicy,
                baselines.OraclePolicy, baselines.EscalationPolicy, RLRouter):
        assert issubclass(cls, StepPolicy), cls

    class BelowMin(StepPolicy):
        """Regenerates a draft scoring 0.3 below the worst kept one: only the rule is written."""

        name = "below-min"

        def _act_batch(self, t, score, min_prev, tokens, is_final, active, truth):
            return (score < min_prev - 0.3).view(np.int8)

        def _act_one(self, t, score, min_prev, tokens, is_final, **kwargs):
            return int(score < min_prev - 0.3)

    r = BelowMin()
    r.reset()
    # min_prev starts at 1; the kept drafts 0.8 and 0.6 lower it, step by step
    assert [r.step(s, 5, False) for s in (0.8, 0.6, 0.2)] == ["continue", "continue",
                                                             "regenerate"]
    assert r.min_prev == 0.6
    r.executed("continue")  # the 0.2 draft was kept after all: it enters min_prev next
    assert r.step(0.55, 5, True) == "continue" and r.min_prev == 0.2
    with pytest.raises(RouterStateError, match="after a final step"):
        r.step(0.5, 5, False)
    out = r.act(1, np.array([0.1, 0.9]), np.array([0.5, 0.5]), np.zeros(2, np.int64),
                np.zeros(2, bool), np.ones(2, bool))
    assert out.tolist() == [1, 0]
