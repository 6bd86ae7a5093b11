"""Label-free drift detection (issue 15, item 1): PIT kernel vs NumPy reference, the router
hook, the batch path, the CUSUM and its calibration."""

import json
import math

import numpy as np
import pytest
from reference_simulator import simulate_routing_python

from trim_pomdp.routing._kernels import _pit
from trim_pomdp.routing.bank import default_lambdas, solve_grid
from trim_pomdp.routing.drift import (
    DriftBatchPolicy,
    DriftMonitor,
    episode_features,
    pit_reference,
)
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.routing.router import Router
from trim_pomdp.simulation.scenario import default_scenario, load_scenario
from trim_pomdp.simulation.world import sample_world, simulate_routing


def _model(uses_min=False):
    rng = np.random.default_rng(3)
    n_s, n_m = 5, (3 if uses_min else 1)
    obs = rng.dirichlet(np.ones(n_s * n_m), size=3)
    return TrimModel.from_parameters(
        p_w=0.9, p_s=0.95, hazard=np.full(30, 0.2), obs_matrix=obs,
        token_probs=[0.5, 0.5], strong_tokens=[40.0, 80.0], token_edges=[50.0],
        score_edges=[0.2, 0.4, 0.6, 0.8], min_edges=[0.3, 0.7] if uses_min else None)


def _pit_numpy(model, t, x, a, b, m, score, tokens, final):
    """Brute force: predictive mixture's CDF (histogram density) at the score."""
    arrs = model.arrays(0.0)
    T, Z = arrs["T"], arrs["Z"]
    K = model.n_token_bins
    k = int(np.searchsorted(model.token_edges, tokens, side="right"))
    fin = final or t + 1 == model.max_steps
    xn = 1 + (K if fin else 0) + k
    pred = np.einsum("s,sz->z", b, T[t, a, x, :, xn, :])
    pred = pred / pred.sum()
    im = int(np.searchsorted(model.min_edges, m, side="right")) if model.uses_min else 0
    p = np.array([pred @ Z[a, xn, :, i * model.n_min_bins + im]
                  for i in range(model.n_score_bins)])
    p /= p.sum()
    edges = np.concatenate([[0.0], model.score_edges, [1.0]])
    cdf_knots = np.concatenate([[0.0], np.cumsum(p)])
    return float(np.interp(score, edges, cdf_knots))


@pytest.mark.parametrize("uses_min", [False, True])
def test_pit_kernel_matches_numpy(uses_min):
    m = _model(uses_min)
    arrs = m.arrays(0.0)
    rng = np.random.default_rng(0)
    for _ in range(300):
        t = int(rng.integers(0, 29))
        x = 0 if t == 0 else int(rng.integers(1, 1 + m.n_token_bins))
        a = int(rng.integers(0, 2))
        b = rng.dirichlet(np.ones(3)) if t > 0 else m.b0
        mp, score = float(rng.uniform()), float(rng.uniform())
        tok, fin = float(rng.integers(1, 100)), bool(rng.uniform() < 0.3)
        got = _pit(arrs["T"], arrs["Z"], m.score_edges, m.min_edges, m.token_edges,
                   m.uses_min, m.max_steps, t, x, a, b, mp, score, tok, fin)
        assert got == pytest.approx(_pit_numpy(m, t, x, a, b, mp, score, tok, fin), abs=1e-12)


@pytest.fixture(scope="module")
def bank():
    m = TrimModel.from_scenario(default_scenario(), n_score_bins=10, n_token_bins=4)
    return solve_grid(m, default_lambdas(m, 8))


def test_router_with_monitor_decides_the_same_and_matches_batch(bank):
    pol = bank[3]
    world = sample_world(default_scenario(), n_problems=300, seed=8)
    plain = simulate_routing_python(world, Router(pol))
    mon = DriftMonitor([0.0, 0.0], [1.0, 1.0], 1e6)
    routed = simulate_routing_python(world, Router(pol, drift=mon))
    np.testing.assert_array_equal(plain.correct, routed.correct)
    np.testing.assert_array_equal(plain.strong_tokens, routed.strong_tokens)
    assert mon.n_episodes == 300 and mon.n_steps == int(world.length.sum())
    # the batch path computes the same per-episode sums, in problem order
    bp = DriftBatchPolicy(pol)
    res = simulate_routing(world, bp)
    np.testing.assert_array_equal(res.strong_tokens, plain.strong_tokens)
    f = bp.features
    mon2 = DriftMonitor([0.0, 0.0], [1.0, 1.0], 1e6)
    mon2.run(f)
    np.testing.assert_allclose(mon2.cusum, mon.cusum, rtol=1e-9, atol=1e-9)
    assert bp.acc[:, 2].sum() == world.length.sum()


def test_reset_hands_over_an_unfinished_episode(bank):
    mon = DriftMonitor([0.0, 0.0], [1.0, 1.0], 1e6)
    r = Router(bank[0], drift=mon)
    assert r.drift is mon
    r.step(0.5, 40, False)
    r.step(0.6, 40, False)
    r.reset()
    assert mon.n_episodes == 1 and mon.n_steps == 2
    r.reset()
    assert mon.n_episodes == 1
    r.attach_drift(None)
    r.step(0.5, 40, True)
    assert r.drift is None and mon.n_episodes == 1


def test_pit_uniform_on_the_exact_model_and_not_under_drift():
    """The world *is* the model (trim_exact; 40 bins, so the histogram density is close to
    the Beta's): the per-episode statistics are centred.  Under the overconfident map they
    are far off."""
    exact = default_scenario().trim_exact()
    m = TrimModel.from_scenario(exact, n_score_bins=40, n_token_bins=4)
    pol = solve_grid(m, default_lambdas(m, 4))[1]
    n = 20000
    bp = DriftBatchPolicy(pol)
    simulate_routing(sample_world(exact, n_problems=n, seed=2), bp)
    f = bp.features
    se = f.std(axis=0) / math.sqrt(n)
    assert np.all(np.abs(f.mean(axis=0)) < 4 * se + 2e-3), (f.mean(axis=0), se)
    # the PIT itself: sum of (u - 1/2) over all steps is ~0 relative to its sd
    u_sum, n_steps = bp.acc[:, 0].sum(), bp.acc[:, 2].sum()
    assert abs(u_sum) / math.sqrt(n_steps / 12) < 4
    drifted = exact.replace(deployment={"logit_scale": 3.0})
    bp2 = DriftBatchPolicy(pol)
    simulate_routing(sample_world(drifted, n_problems=2000, seed=2), bp2)
    assert bp2.features[:, 1].mean() > 20 * se[1]


def test_cusum_hand_computed():
    mon = DriftMonitor([0.0, 0.0], [1.0, 2.0], 1.0, k=0.25)
    mon.add_episode(1.0, 0.0, 4)  # g = (0.5, 0); z = (0.5, 0)
    np.testing.assert_allclose(mon.cusum, [0.25, 0.0, 0.0, 0.0])
    mon.add_episode(2.0, -4.0, 1)  # z = (2, -2)
    np.testing.assert_allclose(mon.cusum, [2.0, 0.0, 0.0, 1.75])
    assert mon.alarm and mon.alarm_episode == 2
    s = mon.summary()
    assert s["alarm"] and s["n_episodes"] == 2 and s["statistic"] == 2.0
    json.dumps(s)
    mon.reset()
    assert not mon.alarm and mon.statistic == 0.0
    assert mon.add_episode(5.0, 5.0, 0) is False  # empty episodes are ignored


def test_calibrated_threshold_holds_its_false_alarm_rate():
    """Calibrated on 5,000 i.i.d. reference episodes for 5 % per 200 episodes; on 2,000
    fresh streams of the same law the rate is within binomial noise of 5 %."""
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((5000, 2)) * [0.3, 0.07] + [0.01, -0.02]
    mon = DriftMonitor.calibrate(ref, false_alarm_rate=0.05, horizon=200, n_runs=4000)
    alarms = 0
    for _ in range(2000):
        mon.reset()
        if mon.run(rng.standard_normal((200, 2)) * [0.3, 0.07] + [0.01, -0.02]) is not None:
            alarms += 1
    rate = alarms / 2000
    assert 0.03 < rate < 0.075, rate
    # a 1-sd shift of the location statistic is found within a few dozen episodes
    mon.reset()
    hit = mon.run(rng.standard_normal((500, 2)) * [0.3, 0.07] + [0.31, -0.02])
    assert hit is not None and hit < 100


def test_round_trip_and_errors(bank):
    mon = DriftMonitor([0.1, 0.2], [1.0, 2.0], 5.0, k=0.3, false_alarm_rate=0.01,
                       horizon=1000, n_reference=77)
    again = DriftMonitor.from_dict(json.loads(json.dumps(mon.to_dict())))
    assert again.to_dict() == mon.to_dict()
    with pytest.raises(ValueError, match="field 'threshold' is missing"):
        d = mon.to_dict()
        del d["threshold"]
        DriftMonitor.from_dict(d)
    with pytest.raises(ValueError, match="not a DriftMonitor"):
        DriftMonitor.from_dict({"kind": "x"})
    with pytest.raises(ValueError, match=">= 50 reference episodes"):
        DriftMonitor.calibrate(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="shape"):
        DriftMonitor.calibrate(np.zeros((100, 3)))
    with pytest.raises(ValueError, match="sd > 0"):
        DriftMonitor([0, 0], [0, 1], 1.0)
    with pytest.raises(ValueError, match="threshold"):
        DriftMonitor([0, 0], [1, 1], math.nan)
    from trim_pomdp.traces.records import Step, Trace

    bad = [Trace(id="t1", model="cheap", steps=[Step(prm_score=None, tokens=3)],
                 final_correct=True)]
    with pytest.raises(ValueError, match="'t1' step 1"):
        pit_reference(bank[0], bad)
    with pytest.raises(ValueError, match="no non-empty traces"):
        pit_reference(bank[0], [])
    assert np.isnan(episode_features([0.0, 0.0, 0.0])).all()


def test_from_traces_uses_cheap_replay(bank):
    from trim_pomdp.simulation.synth_traces import simulate_traces

    traces = simulate_traces(load_scenario("default"), n_problems=200, seed=5)
    f = pit_reference(bank[0], traces)
    assert f.shape == (200, 2)
    mon = DriftMonitor.from_traces(bank[0], traces, n_runs=50, horizon=100)
    assert mon.n_reference == 200 and mon.threshold > 0


# ------------------------------------------------------ min-previous-score models: a shadow
@pytest.fixture(scope="module")
def min_bank():
    m = _model(uses_min=True)  # 5 score x 3 min bins, random observation rows
    return solve_grid(m, default_lambdas(m, 8))


def test_min_model_pit_runs_on_a_shadow_of_the_score_marginal(min_bank):
    """With the min feature the router decides on the joint observation, but its PIT sums
    are exactly those of a router of the score marginal fed the same scores and the
    actions executed (brute force, step by step), live, in batch and in replay."""
    from trim_pomdp.routing.drift import pit_policy, pit_routed

    pol = min_bank[3]
    shadow_pol = pit_policy(pol)
    assert pit_policy(pol) is shadow_pol  # cached per model and lambda
    assert not shadow_pol.model.uses_min and shadow_pol.lam == pol.lam
    np.testing.assert_allclose(shadow_pol.model.obs_matrix,
                               pol.model.score_marginal().obs_matrix, atol=0)
    world = sample_world(default_scenario(), n_problems=200, seed=8)
    fed = []

    class Rec(DriftMonitor):
        def add_episode(self, a, b, n):
            fed.append((a, b, n))
            return False

    live = Router(pol, drift=Rec([0, 0], [1, 1], 1e9))
    plain = Router(pol)
    brute = Router(shadow_pol)
    want = []
    for i in range(world.n_problems):
        live.reset()
        plain.reset()
        brute.reset()
        acc = np.zeros(3)
        for j in range(int(world.length[i])):
            # the draft scores the always-cheap trajectory would see (any scores will do)
            score = float(world.z_draft[i, j] > 0) * 0.6 + 0.2 * (j % 3) / 2
            tok, fin = float(world.cheap_tokens[i, j]), j == int(world.length[i]) - 1
            d = live.step(score, tok, fin)
            assert d == plain.step(score, tok, fin)
            brute._step_pit(score, tok, fin, acc)
            if not fin:
                # the caller overrides every third advice: the shadow must follow it
                ex = ("regenerate" if d == "continue" else "continue") if j % 3 == 2 else d
                live.executed(ex)
                plain.executed(ex)
                brute.executed(ex)
        want.append(acc)
    np.testing.assert_allclose(np.array(fed), np.array(want), rtol=0, atol=1e-12)
    # the batch path (simulator) agrees with the live one on the simulator's own traffic
    live2_fed = []

    class Rec2(DriftMonitor):
        def add_episode(self, a, b, n):
            live2_fed.append((a, b, n))
            return False

    routed = simulate_routing_python(world, Router(pol, drift=Rec2([0, 0], [1, 1], 1e9)))
    bp = DriftBatchPolicy(pol)
    res = simulate_routing(world, bp)
    np.testing.assert_array_equal(res.strong_tokens, routed.strong_tokens)
    np.testing.assert_allclose(bp.acc, np.array(live2_fed), rtol=0, atol=1e-12)
    # and replaying the routed traces gives them again (up to the record's float32 scores:
    # a score moves by <= 6e-8, its PIT by as much times the bin's density)
    from trim_pomdp.fit.refit import served_format
    from trim_pomdp.simulation.synth_traces import routed_traces

    res2 = simulate_routing(world, DriftBatchPolicy(pol), record=True)
    np.testing.assert_allclose(pit_routed(pol, served_format(routed_traces(world, res2))),
                               bp.features, rtol=0, atol=1e-6)


def test_a_min_bank_monitor_is_calibrated_on_routed_in_distribution_traffic():
    """The reason for the shadow: on routed no-drift traffic a filter that reads the min of
    the *kept* scores is off (the policy decides what is kept), the marginal's is not."""
    from trim_pomdp.evaluation.from_scenario import FitConfig, fit_from_scenario
    from trim_pomdp.fit.refit import served_format
    from trim_pomdp.routing.bank import default_budget
    from trim_pomdp.routing.drift import _replay_routed, pit_routed
    from trim_pomdp.simulation.synth_traces import routed_traces, simulate_traces

    sc = default_scenario()
    m, _, _ = fit_from_scenario(sc, FitConfig(n_fit_problems=2000, features="score+min"))
    bank = solve_grid(m, default_lambdas(m, 16))
    pol = bank.nearest(default_budget(bank, 0.10))
    held = simulate_traces(sc, n_problems=2000, seed=77)
    ref = pit_reference(pol, held)
    w = sample_world(sc, n_problems=2000, seed=99)
    traces = served_format(routed_traces(w, simulate_routing(w, DriftBatchPolicy(pol),
                                                             record=True)))
    mu, sd = ref.mean(axis=0), ref.std(axis=0)
    z = (pit_routed(pol, traces).mean(axis=0) - mu) / sd
    # 2,000 episodes: the standard error of each mean z is ~0.022
    assert np.all(np.abs(z) < 0.1), z

    # the filter of the joint model itself, on the same traffic: shifted
    joint_ref = _replay_routed(Router(pol), held)
    z_own = ((_replay_routed(Router(pol), traces).mean(axis=0) - joint_ref.mean(axis=0))
             / joint_ref.std(axis=0))
    assert z_own[0] < -0.15, z_own
