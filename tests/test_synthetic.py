"""Recovery of known parameters from synthetic traces.

Tolerances are stated in standard errors (SE) of the estimator at the sample size used:
4 SE for a single estimate (two-sided false-failure probability 6e-5 under normality; the
seeds are fixed, so the tests are deterministic), and a binomial band for interval coverage.
"""

import numpy as np
import pytest
from scipy.special import polygamma

from trim_pomdp.fit.observation import ObservationModel, beta_mle
from trim_pomdp.fit.transition import TransitionModel
from trim_pomdp.traces.stats import step_accuracy
from trim_pomdp.traces.synthetic import generate_traces, length_distribution
from trim_pomdp.traces.table import traces_to_table

SCORE = ((6.0, 2.0), (2.0, 4.0), (2.5, 3.5))


def test_length_distribution_sums_to_one_and_caps():
    pl = length_distribution(0.1)
    assert pl.shape == (30,) and pl.sum() == pytest.approx(1.0, abs=1e-15)
    assert pl[0] == pytest.approx(0.1) and pl[29] == pytest.approx(0.9 ** 29)
    with pytest.raises(ValueError, match=r"hazard must be a number or have shape \(30,\)"):
        length_distribution(np.ones(5))


def test_labels_and_states_are_consistent():
    tr = generate_traces(n_traces=500, p_w=0.7, seed=1)
    table = traces_to_table(tr)
    for t in tr[:100]:
        labs = [s.label for s in t.steps]
        if "incorrect" in labs:
            k = labs.index("incorrect")
            assert labs[:k] == ["correct"] * k and all(lab is None for lab in labs[k + 1:])
            assert t.final_correct is (False)
        else:
            assert t.final_correct is True
    assert set(np.unique(table.state)) <= {0, 1, 2}  # first-error labels determine every state
    full = traces_to_table(generate_traces(n_traces=500, p_w=0.7, labels="full", seed=1))
    assert np.array_equal(full.state, table.state)  # same draws, same hidden states


def test_p_w_and_p_s_recovered_within_4_se():
    p_w, p_s = 0.83, 0.95
    cheap = generate_traces(n_traces=8000, p_w=p_w, hazard=0.15, seed=11)
    strong = generate_traces(n_traces=4000, p_w=p_w, p_s=p_s, model="strong", seed=12)
    tm = TransitionModel().fit(cheap, strong)
    assert abs(tm.p_w_ - p_w) < 4 * np.sqrt(p_w * (1 - p_w) / tm.n_w_)
    assert abs(tm.p_s_ - p_s) < 4 * np.sqrt(p_s * (1 - p_s) / tm.n_s_)
    assert tm.p_w_ci_[0] < tm.p_w_ < tm.p_w_ci_[1]


def test_wilson_interval_coverage():
    # 400 replications of a small experiment: the 90% interval must cover p_w in
    # 90% +- 3 binomial SE (SE = sqrt(.9 * .1 / 400) = 1.5%) of them.
    p_w = 0.8
    hits = 0
    for r in range(400):
        tr = generate_traces(n_traces=15, p_w=p_w, hazard=0.3, seed=1000 + r)
        est = step_accuracy(tr, ci=0.90)
        hits += est.lo <= p_w <= est.hi
    assert abs(hits / 400 - 0.90) <= 3 * 0.015


def test_hazard_recovered():
    t = np.arange(1, 31)
    true_h = np.clip(0.05 + 0.02 * t, 0, 1)  # rising hazard
    tr = generate_traces(n_traces=20000, p_w=0.9, hazard=true_h, seed=5)
    raw = TransitionModel(hazard_smoothing=0.0, p_s=0.9).fit(tr)
    enough = raw.hazard_at_risk_ >= 300
    assert enough.sum() >= 10
    se = np.sqrt(true_h * (1 - true_h) / np.maximum(raw.hazard_at_risk_, 1))
    assert np.all(np.abs(raw.hazard_ - true_h)[enough] < 4 * se[enough])
    # the smoothed hazard of a linear truth: local-linear smoothing is unbiased for it, ends included  # noqa: E501
    sm = TransitionModel(p_s=0.9).fit(tr)  # default smoothing
    assert np.all(np.abs(sm.hazard_ - true_h)[enough] < 4 * se[enough])
    assert sm.hazard_[29] == 1.0


def test_smoothed_hazard_keeps_sharp_well_observed_steps():
    # nobody stops before step 3 (as in the sim's default scenario), then a constant 0.2:
    # with thousands of traces at risk the smoothing must not leak hazard into steps 1-2
    true_h = np.r_[0.0, 0.0, np.full(28, 0.2)]
    tr = generate_traces(n_traces=5000, p_w=0.9, hazard=true_h, seed=8)
    tm = TransitionModel(p_s=0.9).fit(tr)
    assert tm.hazard_[0] < 1e-3 and tm.hazard_[1] < 1e-3
    se = np.sqrt(0.2 * 0.8 / tm.hazard_at_risk_[2])
    assert abs(tm.hazard_[2] - 0.2) < 4 * se


def test_beta_score_params_recovered_within_4_se():
    tr = generate_traces(n_traces=3000, p_w=0.8, score_params=SCORE, seed=7)
    om = ObservationModel(estimator="beta").fit(tr)
    for s, (a, b) in enumerate(SCORE):
        comp = om.components_[s]
        n = om.n_samples_[s]
        # Fisher information of Beta(a, b) per observation
        t = polygamma(1, a + b)
        info = np.array([[polygamma(1, a) - t, -t], [-t, polygamma(1, b) - t]])
        se = np.sqrt(np.diag(np.linalg.inv(info)) / n)
        assert abs(comp.a - a) < 4 * se[0], (s, comp.a, a, se)
        assert abs(comp.b - b) < 4 * se[1], (s, comp.b, b, se)


def test_difficulty_spread_and_survivorship():
    p = 0.7
    tr = generate_traces(n_traces=8000, p_w=p, difficulty_concentration=2.0, seed=9)
    table = traces_to_table(tr)
    first = table.state[table.offsets[:-1]]
    n = first.size
    # first steps: unbiased for the mean accuracy p
    assert abs((first == 0).mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    # pooled over correct prefixes: biased upwards (easy problems keep long correct prefixes)
    pooled = step_accuracy(table)
    assert pooled.p > p + 4 * np.sqrt(p * (1 - p) / pooled.n)
    # without spread there is no such bias
    flat = step_accuracy(generate_traces(n_traces=8000, p_w=p, seed=9))
    assert abs(flat.p - p) < 4 * np.sqrt(p * (1 - p) / flat.n)


def test_prm_bias_correlates_scores_within_a_trace():
    def between_trace_share(sd):
        tr = generate_traces(n_traces=3000, p_w=1.0, hazard=0.0, prm_bias_sd=sd, seed=3,
                             score_params=((4.0, 4.0), (2.0, 4.0), (2.5, 3.5)))
        table = traces_to_table(tr)
        s = np.clip(table.score.reshape(3000, 30), 1e-9, 1 - 1e-9)
        lg = np.log(s) - np.log1p(-s)
        # variance of per-trace mean logits minus what within-trace noise explains
        return lg.mean(axis=1).var() - lg.var(axis=1, ddof=1).mean() / 30

    # logit of Beta(4,4) has variance 2 psi'(4) = 0.568; bias adds sd^2 between traces
    assert abs(between_trace_share(0.0)) < 0.01
    assert between_trace_share(0.8) == pytest.approx(0.64, abs=0.06)


def test_tokens_lognormal_recovered():
    tr = generate_traces(n_traces=3000, p_w=0.9, token_mu=4.5, token_sigma=0.4, seed=4)
    tm = TransitionModel(p_s=0.9).fit(tr)
    n = tm.cheap_tokens_.n
    assert abs(tm.cheap_tokens_.mu_all - 4.5) < 4 * 0.4 / np.sqrt(n) + 1e-3  # rounding to ints
    assert abs(tm.cheap_tokens_.sigma_all - 0.4) < 4 * 0.4 / np.sqrt(2 * n) + 1e-3


def test_beta_mle_gradient_matches_finite_differences():
    # the analytic gradient in beta_mle's objective, re-derived here independently
    from scipy.special import betaln, digamma

    x = np.random.default_rng(0).beta(2.0, 5.0, size=500)
    L1, L2 = np.log(x).mean(), np.log1p(-x).mean()

    def f(a, b):
        return -((a - 1) * L1 + (b - 1) * L2 - betaln(a, b))

    a, b, eps = 1.7, 4.2, 1e-6
    ga = -(L1 - digamma(a) + digamma(a + b))
    gb = -(L2 - digamma(b) + digamma(a + b))
    assert ga == pytest.approx((f(a + eps, b) - f(a - eps, b)) / (2 * eps), rel=1e-6)
    assert gb == pytest.approx((f(a, b + eps) - f(a, b - eps)) / (2 * eps), rel=1e-6)
    a_hat, b_hat = beta_mle(x)
    # the MLE zeroes the gradient
    assert -(L1 - digamma(a_hat) + digamma(a_hat + b_hat)) == pytest.approx(0, abs=1e-7)
    assert -(L2 - digamma(b_hat) + digamma(a_hat + b_hat)) == pytest.approx(0, abs=1e-7)


def test_bad_parameters():
    with pytest.raises(ValueError, match="p_s is required for model='strong'"):
        generate_traces(n_traces=5, p_w=0.5, model="strong")
    with pytest.raises(ValueError, match=r"p_w must be in \[0, 1\]"):
        generate_traces(n_traces=5, p_w=1.5)
    with pytest.raises(ValueError, match=r"score_params must be \(3, 2\)"):
        generate_traces(n_traces=5, p_w=0.5, score_params=[(1, 1)])
