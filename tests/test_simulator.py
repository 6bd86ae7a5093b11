import math

import numpy as np
import pytest
from reference_simulator import simulate_routing_python
from scipy import special, stats

from trim_pomdp.routing.baselines import (
    AlwaysCheap,
    AlwaysStrong,
    OraclePolicy,
    RandomPolicy,
    ThresholdPolicy,
)
from trim_pomdp.simulation.scenario import Scenario, default_scenario
from trim_pomdp.simulation.synth_traces import routed_traces, simulate_traces
from trim_pomdp.simulation.world import sample_world, simulate_routing
from trim_pomdp.steps import S0, S1, S2


def _plain(**kw):
    """Scenario without problem spread, bias or correlation (closed forms apply)."""
    base = dict(p_w_mean=0.9, p_s_mean=0.97, hazard={"kind": "constant", "value": 0.25},
                score_beta=((5.0, 2.0), (2.0, 3.0), (2.0, 5.0)), n_problems=40_000, seed=5)
    base.update(kw)
    return Scenario(**base)


@pytest.fixture(scope="module")
def small_world():
    return sample_world(default_scenario(), n_problems=600, seed=11)


def test_score_table_matches_scipy():
    w = sample_world(_plain(n_problems=50), seed=1)
    z = np.linspace(-4, 4, 101)
    for s, (a, b) in enumerate(w.scenario.score_beta):
        ref = stats.beta.ppf(special.ndtr(z), a, b)
        got = w.prm_scores(np.full((1, z.size), s), z[None, :], np.zeros(1))[0]
        np.testing.assert_allclose(got, ref, atol=2e-6)


def test_numba_scores_equal_numpy_reference(small_world):
    w = small_world
    res = simulate_routing(w, ThresholdPolicy(0.4), record=True)
    rec = res.record
    live = rec.state >= 0
    ref = w.prm_scores(rec.state, w.z_draft)
    np.testing.assert_allclose(rec.score[live], ref[live], rtol=1e-6, atol=1e-7)
    assert np.all(np.isnan(rec.score[~live]))
    assert np.all((rec.score[live] >= 0) & (rec.score[live] <= 1))


@pytest.mark.parametrize("make", [AlwaysCheap, AlwaysStrong, lambda: ThresholdPolicy(0.55),
                                  lambda: OraclePolicy()])
def test_batch_simulator_equals_python_reference(small_world, make):
    fast = simulate_routing(small_world, make())
    slow = simulate_routing_python(small_world, make())
    for f in ("correct", "strong_tokens", "cheap_tokens", "steps", "regenerations",
              "always_strong_tokens"):
        np.testing.assert_array_equal(getattr(fast, f), getattr(slow, f), err_msg=f)


def test_min_prev_rule_all_matches_python(small_world):
    # with rule "all" the reference Router would need the same rule; check the recorded
    # feature directly against a NumPy running minimum
    for rule in ("kept", "all"):
        res = simulate_routing(small_world, ThresholdPolicy(0.5), record=True, min_prev_rule=rule)
        rec = res.record
        n = small_world.n_problems
        expect = np.full((n, 30), np.nan, np.float32)
        for i in range(n):
            m = 1.0
            for j in range(int(small_world.length[i])):
                expect[i, j] = m
                if rule == "all" or rec.action[i, j] == 0:
                    m = min(m, float(rec.score[i, j]))
        np.testing.assert_array_equal(rec.min_prev, expect)


def test_common_random_numbers_pairing(small_world):
    a = simulate_routing(small_world, AlwaysCheap())
    b = simulate_routing(small_world, ThresholdPolicy(0.0))
    c = simulate_routing(small_world, ThresholdPolicy(2.0))
    d = simulate_routing(small_world, AlwaysStrong())
    np.testing.assert_array_equal(a.correct, b.correct)
    np.testing.assert_array_equal(c.correct, d.correct)
    np.testing.assert_array_equal(c.strong_tokens, d.always_strong_tokens)
    assert a.cost_fraction == 0.0 and d.cost_fraction == 1.0
    # same seed -> same world; different seed -> different problems
    w2 = sample_world(default_scenario(), n_problems=600, seed=11)
    np.testing.assert_array_equal(w2.u_w, small_world.u_w)
    w3 = sample_world(default_scenario(), n_problems=600, seed=12)
    assert not np.array_equal(w3.u_w, small_world.u_w)


def test_random_policy_reproducible(small_world):
    r1 = simulate_routing(small_world, RandomPolicy(0.3, seed=4))
    r2 = simulate_routing(small_world, RandomPolicy(0.3, seed=4))
    np.testing.assert_array_equal(r1.correct, r2.correct)
    assert abs(r1.regeneration_rate - 0.3) < 4 * math.sqrt(0.21 / r1.n_steps)


def _len_pmf(h):
    t = np.arange(1, 31)
    pmf = h * (1 - h) ** (t - 1)
    pmf[-1] = (1 - h) ** 29
    return t, pmf


def test_oracle_accuracy_closed_form():
    # every S2 draft is rewritten: a step survives w.p. p_w + (1 - p_w) p_s
    sc = _plain()
    res = simulate_routing(sc, OraclePolicy())
    t, pmf = _len_pmf(0.25)
    q = 0.9 + 0.1 * 0.97
    expect = float(np.sum(pmf * q ** t))
    assert abs(res.accuracy - expect) < 4 * res.accuracy_stderr
    # the oracle never regenerates a correct or irrecoverable draft: cost per step is the
    # strong tokens of S2 drafts only, i.e. a (1 - p_w) share of steps before any failure
    assert res.regenerations.sum() <= res.steps.sum() * 0.2


def test_threshold_accuracy_closed_form():
    # i.i.d. Beta scores: from a correct prefix one step succeeds w.p.
    # p_w [(1 - F0(k)) + F0(k) p_s] + (1 - p_w) F2(k) p_s   (regenerate iff score < k)
    sc = _plain()
    k = 0.55
    res = simulate_routing(sc, ThresholdPolicy(k))
    f0 = stats.beta.cdf(k, 5, 2)
    f2 = stats.beta.cdf(k, 2, 5)
    q = 0.9 * ((1 - f0) + f0 * 0.97) + 0.1 * f2 * 0.97
    t, pmf = _len_pmf(0.25)
    expect = float(np.sum(pmf * q ** t))
    assert abs(res.accuracy - expect) < 4 * res.accuracy_stderr


def test_bad_policy_outputs(small_world):
    class Bad(AlwaysCheap):
        name = "bad"

        def act(self, t, score, *args, **kw):
            out = np.zeros(score.shape[0], np.int64)
            out[3] = 7
            return out

    with pytest.raises(ValueError, match=r"policy 'bad' returned action 7 for episode 3 at step 1"):
        simulate_routing(small_world, Bad())

    class Short(AlwaysCheap):
        name = "short"

        def act(self, t, score, *args, **kw):
            return np.zeros(3, np.int8)

    with pytest.raises(ValueError, match=r"returned actions of shape \(3,\); expected \(600,\)"):
        simulate_routing(small_world, Short())

    class Floats(AlwaysCheap):
        name = "floats"

        def act(self, t, score, *args, **kw):
            return np.zeros(score.shape[0])

    with pytest.raises(ValueError, match="dtype float64"):
        simulate_routing(small_world, Floats())
    with pytest.raises(ValueError, match="min_prev_rule"):
        simulate_routing(small_world, AlwaysCheap(), min_prev_rule="max")


def test_cheap_and_strong_traces_consistent_with_runs(small_world):
    w = small_world
    cheap = simulate_routing(w, AlwaysCheap(), record=True)
    strong = simulate_routing(w, AlwaysStrong())
    tc = simulate_traces(w, model="cheap")
    ts = simulate_traces(w, model="strong")
    assert len(tc) == len(ts) == w.n_problems
    for i, (a, b) in enumerate(zip(tc, ts, strict=True)):
        L = int(w.length[i])
        assert len(a.steps) == len(b.steps) == L
        assert a.final_correct == bool(cheap.correct[i])
        assert b.final_correct == bool(strong.correct[i])
        np.testing.assert_allclose([s.prm_score for s in a.steps], cheap.record.score[i, :L],
                                   rtol=1e-6)
        assert [s.tokens for s in a.steps] == list(w.cheap_tokens[i, :L])
        assert [s.tokens for s in b.steps] == list(w.strong_tokens[i, :L])
        labels = [s.label for s in a.steps]
        st = cheap.record.state[i, :L]
        expect = ["correct" if x == S0 else "incorrect" if x == S2 else None for x in st]
        assert labels == expect
        # first-error convention: nothing after the first incorrect label
        if "incorrect" in labels:
            k = labels.index("incorrect")
            assert all(lab is None for lab in labels[k + 1:])


def test_routed_traces_labels(small_world):
    w = small_world
    res = simulate_routing(w, ThresholdPolicy(0.5), record=True)
    traces = routed_traces(w, res)
    for i, tr in enumerate(traces):
        labs = [s.label for s in tr.steps]
        assert tr.final_correct == bool(res.correct[i])
        # a trace is right iff every written step is right
        assert tr.final_correct == all(lab == "correct" for lab in labs)
        for j, s in enumerate(tr.steps):
            if res.record.action[i, j] == 1:
                assert s.tokens == w.strong_tokens[i, j]
    with pytest.raises(ValueError, match="record=True"):
        routed_traces(w, simulate_routing(w, AlwaysCheap()))


def test_states_follow_transition_rules(small_world):
    res = simulate_routing(small_world, RandomPolicy(0.4, seed=2), record=True)
    rec = res.record
    w = small_world
    for i in range(w.n_problems):
        for j in range(int(w.length[i]) - 1):
            s, a, nxt = rec.state[i, j], rec.action[i, j], rec.state[i, j + 1]
            if s == S1 or (a == 0 and s == S2) or (a == 1 and rec.strong_ok[i, j] == 0):
                assert nxt == S1
            else:
                assert nxt == (S0 if w.u_w[i, j + 1] < w.p_w[i] else S2)


def test_step_correlation_lowers_fix_rate_keeps_end_points():
    # marginals unchanged (always-cheap / always-strong accuracies equal in expectation),
    # but P(strong right | cheap wrong) drops below p_s
    sc = _plain(p_w_mean=0.8, p_s_mean=0.9, n_problems=30_000)
    w0 = sample_world(sc, seed=3)
    w1 = sample_world(sc.replace(step_correlation=0.8), seed=3)
    for w in (w0, w1):
        cheap = simulate_routing(w, AlwaysCheap())
        strong = simulate_routing(w, AlwaysStrong())
        t, pmf = _len_pmf(0.25)
        assert abs(cheap.accuracy - np.sum(pmf * 0.8 ** t)) < 4 * cheap.accuracy_stderr
        assert abs(strong.accuracy - np.sum(pmf * 0.9 ** t)) < 4 * strong.accuracy_stderr
    wrong = w1.u_w >= 0.8
    fix = np.mean(w1.u_s[wrong] < 0.9)
    assert fix < 0.8  # vs 0.9 without correlation
    fix0 = np.mean(w0.u_s[w0.u_w >= 0.8] < 0.9)
    assert abs(fix0 - 0.9) < 0.01


def test_traces_work_with_fit_piece(tmp_path):
    # the emitted traces are trim_pomdp.traces objects: hidden states, save/load, and a
    # TransitionModel fit recovers the generating p_w / p_s on a TRIM-exact scenario
    from trim_pomdp.fit.transition import TransitionModel
    from trim_pomdp.traces.records import Trace, load_traces, save_traces
    from trim_pomdp.traces.table import hidden_state_labels

    sc = _plain(n_problems=4000)
    w = sample_world(sc, seed=8)
    cheap = simulate_traces(w, model="cheap")
    strong = simulate_traces(w, model="strong")
    assert isinstance(cheap[0], Trace)
    rec = simulate_routing(w, AlwaysCheap(), record=True).record
    for i in range(200):
        np.testing.assert_array_equal(hidden_state_labels(cheap[i]),
                                      rec.state[i, : w.length[i]])
    path = tmp_path / "cheap.jsonl"
    save_traces(cheap[:50], path)
    back = load_traces(path)
    assert [s.label for s in back[7].steps] == [s.label for s in cheap[7].steps]
    tm = TransitionModel(hazard_smoothing=0.0).fit(cheap, strong)
    assert abs(tm.p_w_ - 0.9) < 4 * math.sqrt(0.9 * 0.1 / tm.n_w_)
    assert abs(tm.p_s_ - 0.97) < 4 * math.sqrt(0.97 * 0.03 / tm.n_s_)
    routed = routed_traces(w, simulate_routing(w, ThresholdPolicy(0.5), record=True),
                           problems=range(20))
    assert routed[0].steps[0].extra["writer"] in ("cheap", "strong")


def test_world_is_read_only(small_world):
    with pytest.raises(ValueError, match="read-only"):
        small_world.u_w[0, 0] = 0.5
