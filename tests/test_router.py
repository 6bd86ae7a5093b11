"""The online Router and the batch policy against a plain-NumPy Bayes filter."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from trim_pomdp.errors import (
    PolicyFormatError,
    RouterStateError,
    ZeroProbabilityObservationError,
)
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.routing.policy import TrimPolicy
from trim_pomdp.routing.router import Router, TrimBatchPolicy


def make_model(uses_min: bool = True, seed: int = 0) -> TrimModel:
    rng = np.random.default_rng(seed)
    n_score, n_min = 4, (3 if uses_min else 1)
    obs = rng.dirichlet(np.ones(n_score * n_min), size=3)
    return TrimModel.from_parameters(
        p_w=0.87, p_s=0.93, hazard=np.linspace(0.02, 0.4, 30), obs_matrix=obs,
        score_edges=[0.2, 0.5, 0.8], min_edges=[0.3, 0.6] if uses_min else None,
        token_probs=[0.3, 0.4, 0.3], strong_tokens=[20.0, 45.0, 90.0], token_edges=[25.0, 60.0],
    )


def random_policy(model: TrimModel, seed: int) -> TrimPolicy:
    rng = np.random.default_rng(seed)
    nb = model.horizon * model.n_observed
    offsets = np.concatenate([[0], np.cumsum(rng.integers(1, 4, size=nb))])
    return TrimPolicy(
        model=model, lam=0.0, alphas=rng.normal(size=(offsets[-1], 3)),
        actions=rng.integers(0, 2, size=offsets[-1]), offsets=offsets,
    )


def reference_filter(model, b, t, x, a, x_new, o):
    """b'(s') = Z[a, x', s', o] sum_s T[t, a, x, s, x', s'] b(s) / normaliser (NumPy)."""
    arr = model.arrays(0.0)
    unnorm = arr["Z"][a, x_new, :, o] * (b @ arr["T"][t, a, x, :, x_new, :])
    return unnorm / unnorm.sum()


def run_reference(model, policy, steps, overrides, rule="kept"):
    """Beliefs and decisions of the NumPy reference over one trace; min_prev is the min of
    the earlier kept (continued) scores, or of all earlier scores with rule "all"."""
    b, t, x, a = model.b0, 0, 0, 0
    min_prev = 1.0
    beliefs, decisions = [], []
    for j, (score, tokens, is_final) in enumerate(steps):
        final = is_final or (t + 1 == model.max_steps)
        x_new = model.observed_index(final, int(model.token_bin(tokens)))
        o = int(model.observation_index(score, min_prev))
        b = reference_filter(model, b, t, x, a, x_new, o)
        t, x = t + 1, x_new
        a = policy.action(t, x, b)
        decisions.append(a)
        beliefs.append(b)
        if j in overrides:
            a = overrides[j]
        if a == 0 or rule == "all":
            min_prev = min(min_prev, score)
    return np.array(beliefs), decisions


def random_trace(rng, n):
    return [(float(rng.uniform()), float(rng.integers(1, 120)), j == n - 1) for j in range(n)]


@pytest.mark.parametrize(("uses_min", "rule"), [(False, "kept"), (True, "kept"), (True, "all")])
def test_router_matches_numpy_filter(uses_min, rule):
    m = make_model(uses_min)
    pol = random_policy(m, 1)
    r = Router(pol, min_prev_rule=rule)
    rng = np.random.default_rng(2)
    for trial in range(20):
        steps = random_trace(rng, int(rng.integers(1, 31)))
        overrides = {j: int(rng.integers(0, 2)) for j in range(len(steps)) if rng.uniform() < 0.3}
        ref_b, ref_a = run_reference(m, pol, steps, overrides, rule)
        r.reset()
        np.testing.assert_array_equal(r.belief, [1.0, 0.0, 0.0])
        for j, (score, tokens, is_final) in enumerate(steps):
            d = r.step(score, tokens, is_final)
            assert d == ("continue", "regenerate")[ref_a[j]], (trial, j)
            np.testing.assert_allclose(r.belief, ref_b[j], rtol=1e-12, atol=1e-15)
            if j in overrides:
                r.executed(("continue", "regenerate")[overrides[j]])
        assert r.done and r.t == len(steps)


def test_executed_override_changes_prediction():
    # Regenerating resets S1 mass partly to a fresh draft; continuing keeps S1 absorbing.
    m = make_model(False)
    pol = random_policy(m, 3)
    beliefs = {}
    for a in ("continue", "regenerate"):
        r = Router(pol)
        r.step(0.1, 30, False)
        r.executed(a)
        r.step(0.9, 30, False)
        beliefs[a] = r.belief.copy()
    r = Router(pol)
    r.step(0.1, 30, False)
    b1 = r.belief.copy()
    x = m.observed_index(False, 1)
    o = int(m.observation_index(0.9))
    expect = {a: reference_filter(m, b1, 1, x, i, x, o)
              for i, a in enumerate(("continue", "regenerate"))}
    for a in beliefs:
        np.testing.assert_allclose(beliefs[a], expect[a], rtol=1e-12)
    assert not np.allclose(beliefs["continue"], beliefs["regenerate"])


def test_step_30_is_final_and_past_30_raises():
    m = make_model(False)
    r = Router(random_policy(m, 0))
    for _ in range(29):
        r.step(0.5, 10, False)
    assert not r.done
    r.step(0.5, 10, False)  # the cap: step 30 is final
    assert r.done and r.t == 30
    with pytest.raises(RouterStateError, match=r"past the maximum of 30 steps \(step 30 is always "
                       r"final\); call reset\(\) first"):
        r.step(0.5, 10, False)
    r.reset()
    r.step(0.5, 10, True)
    with pytest.raises(RouterStateError, match=r"after the final step \(step 1\); call reset\(\)"):
        r.step(0.5, 10, False)


def test_errors():
    m = make_model(False)
    r = Router(random_policy(m, 0))
    with pytest.raises(RouterStateError, match=r"executed\(\) before any step"):
        r.executed("continue")
    for bad in (float("nan"), -0.01, 1.5):
        with pytest.raises(ValueError, match=r"prm_score must be a number in \[0, 1\]; got"):
            r.step(bad, 10, False)
    with pytest.raises(ValueError, match="tokens must be a finite number >= 0"):
        r.step(0.5, -1, False)
    with pytest.raises(ValueError, match="tokens must be a finite number >= 0"):
        r.step(0.5, math.inf, False)
    assert r.t == 0  # rejected input leaves the state alone
    r.step(0.5, 10, True)
    with pytest.raises(ValueError, match="action must be 'continue' or 'regenerate'"):
        r.executed("strong")
    with pytest.raises(RouterStateError, match="after the final step"):
        r.step(0.5, 10, False)
    r.reset()
    r.step(0.5, 10, False)


def test_zero_probability_observation():
    obs = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # score bin 1 is impossible
    m = TrimModel.from_parameters(p_w=0.9, p_s=0.9, hazard=np.full(30, 0.1), obs_matrix=obs)
    r = Router(random_policy(m, 0))
    with pytest.raises(ZeroProbabilityObservationError, match=r"step 1: evidence .* probability 0"):
        r.step(0.9, 10, False)


def test_policy_from_other_model():
    m, other = make_model(False), make_model(True)
    with pytest.raises(PolicyFormatError, match="policy was solved for another model"):
        Router(random_policy(other, 0), model=m)

    class Bare:  # a finite-horizon policy of another shape
        alphas = np.zeros((1, 3))
        actions = np.zeros(1, int)
        offsets = np.zeros(2, int)
        horizon, n_observed, n_hidden = 31, 4, 3

    with pytest.raises(PolicyFormatError, match="n_observed is 4, model has 8"):
        Router(Bare(), model=m)
    with pytest.raises(PolicyFormatError, match="needs a TrimPolicy"):
        Router(Bare())


def test_router_step_does_not_allocate_arrays():
    m = make_model(True)
    r = Router(random_policy(m, 0))
    r.step(0.3, 10, False)
    tracemalloc.start()
    try:
        snap0 = tracemalloc.take_snapshot()
        for _ in range(200):
            r.reset()
            for j in range(5):
                r.step(0.3, 10, j == 4)
        snap1 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in snap1.compare_to(snap0, "filename") if s.size_diff > 0)
    assert grown < 4096  # 1000 steps: no per-step allocation that survives


def test_batch_policy_matches_router():
    m = make_model(True)
    pol = random_policy(m, 5)
    rng = np.random.default_rng(7)
    n = 16
    lengths = rng.integers(1, 31, size=n)
    traces = [random_trace(rng, int(L)) for L in lengths]
    overrides = rng.integers(0, 2, size=(n, 30))
    use_override = rng.uniform(size=(n, 30)) < 0.3
    bp = TrimBatchPolicy(pol)
    bp.reset_batch(n)
    routers = [Router(pol) for _ in range(n)]
    min_prev = np.ones(n)
    for t in range(1, 31):
        active = lengths >= t
        cur = [tr[t - 1] if a else (0.0, 0.0, False)
               for tr, a in zip(traces, active, strict=True)]
        score = np.array([c[0] for c in cur])
        tokens = np.array([c[1] for c in cur])
        final = np.array([c[2] for c in cur])
        acts = bp.act(t, score, min_prev, tokens, final, active)
        executed = acts.copy()
        for i in np.flatnonzero(active):
            d = routers[i].step(score[i], tokens[i], final[i])
            assert acts[i] == ("continue", "regenerate").index(d)
            np.testing.assert_allclose(bp.beliefs[i], routers[i].belief, rtol=1e-12)
            if use_override[i, t - 1]:
                executed[i] = overrides[i, t - 1]
                routers[i].executed(int(overrides[i, t - 1]))
        bp.executed(executed)
        min_prev = np.where(active & (executed == 0), np.minimum(min_prev, score), min_prev)


def test_batch_policy_bad_input():
    m = make_model(False)
    bp = TrimBatchPolicy(random_policy(m, 0))
    bp.reset_batch(2)
    z = np.zeros(2)
    with pytest.raises(ValueError, match=r"score must have shape \(n,\) = \(2,\); got \(3,\)"):
        bp.act(1, np.zeros(3), z, z, z, np.ones(2, bool))
    with pytest.raises(ValueError, match=r"score must lie in \[0, 1\]"):
        bp.act(1, np.array([0.5, np.nan]), z, z, z, np.ones(2, bool))
    with pytest.raises(RouterStateError, match="outside 1..30"):
        bp.act(31, z, z, z, z, np.ones(2, bool))


def test_final_flag_the_hazard_calls_impossible_is_still_filtered():
    # The default scenario never ends before step 3 (hazard 0 at steps 1-2).  A real trace
    # may: the observed final flag must not collapse the belief (it carries no information
    # about correctness), and the decision at the final step must be defined.
    from trim_pomdp import Router, TrimModel, default_scenario, solve_grid

    model = TrimModel.from_scenario(default_scenario())
    assert 0.0 < model.hazard[0] <= 1e-8
    router = Router(solve_grid(model, [1e-3]).nearest(1e-3))
    router.reset()
    router.step(0.3, 50, False)
    b_before = router.belief.copy()
    assert router.step(0.9, 50, True) in ("continue", "regenerate")
    assert np.isclose(router.belief.sum(), 1.0) and not np.allclose(router.belief, b_before)
