"""Online refit (issue 15, item 2): outcome EM with the transition model held."""

import numpy as np
import pytest

from trim_pomdp.errors import InsufficientDataError, ModelValidationError, RefitError
from trim_pomdp.evaluation.from_scenario import FitConfig, fit_from_scenario
from trim_pomdp.fit.refit import refit_bank, refit_observation, served_format
from trim_pomdp.routing.bank import default_lambdas, solve_grid
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.routing.router import TrimBatchPolicy
from trim_pomdp.simulation.scenario import default_scenario, load_scenario
from trim_pomdp.simulation.synth_traces import routed_traces
from trim_pomdp.simulation.world import sample_world, simulate_routing


@pytest.fixture(scope="module")
def bank():
    m, _, _ = fit_from_scenario(default_scenario(), FitConfig(n_fit_problems=1500, seed=1))
    return solve_grid(m, default_lambdas(m, 8))


def _served(scenario, bank, n=1500, seed=9):
    w = sample_world(scenario, n_problems=n, seed=seed)
    res = simulate_routing(w, TrimBatchPolicy(bank[3]), record=True)
    return served_format(routed_traces(w, res))


def test_served_format_moves_draft_scores():
    m = TrimModel.from_scenario(default_scenario(), n_score_bins=10, n_token_bins=4)
    b = solve_grid(m, [1e-4])
    w = sample_world(default_scenario(), n_problems=200, seed=2)
    res = simulate_routing(w, TrimBatchPolicy(b[0]), record=True)
    raw = routed_traces(w, res)
    served = served_format(raw)
    n_strong = 0
    for tr_raw, tr in zip(raw, served, strict=True):
        assert tr.final_correct == tr_raw.final_correct
        for a, s in zip(tr_raw.steps, tr.steps, strict=True):
            assert s.label is None
            if s.extra["writer"] == "strong":
                n_strong += 1
                assert s.prm_score is None and s.extra["draft_prm_score"] == a.prm_score
            else:
                assert s.prm_score == a.prm_score
    assert n_strong > 0


def test_refit_holds_transition_and_tracks_the_shift(bank):
    m = bank.model
    traces = _served(load_scenario("drift_shifted"), bank)
    new_bank, res = refit_bank(bank, traces)
    nm = new_bank.model
    assert nm.p_w == m.p_w and nm.p_s == m.p_s
    np.testing.assert_array_equal(nm.hazard, m.hazard)
    np.testing.assert_array_equal(nm.strong_tokens, m.strong_tokens)
    np.testing.assert_array_equal(new_bank.lambdas, bank.lambdas)
    np.testing.assert_array_equal(nm.obs_matrix[1], nm.obs_matrix[2])  # tied S1 = S2
    assert res.em["converged"]
    # the labelled fit on the deployment world is the target: the refit's S0 row is much
    # closer to it than the training fit's
    cfg = FitConfig(n_fit_problems=1500, seed=1, n_score_bins=m.n_score_bins)  # same bins
    dep, _, _ = fit_from_scenario(load_scenario("drift_shifted"), cfg, world="deployment")
    tv_old = 0.5 * np.abs(m.obs_matrix[0] - dep.obs_matrix[0]).sum()
    tv_new = 0.5 * np.abs(nm.obs_matrix[0] - dep.obs_matrix[0]).sum()
    assert tv_new < 0.4 * tv_old, (tv_new, tv_old)
    s = res.summary()
    assert s["n_traces"] == 1500 and len(s["tv_distance"]) == 3


def test_untied_refit_estimates_three_rows(bank):
    res = refit_observation(bank.model, _served(default_scenario(), bank, n=800),
                            tie_wrong=False)
    assert not np.allclose(res.new_obs_matrix[1], res.new_obs_matrix[2])


def test_refit_errors(bank):
    traces = _served(default_scenario(), bank, n=300)
    with pytest.raises(RefitError, match="did not converge in 1 iterations"):
        refit_observation(bank.model, traces, max_iter=1)
    import dataclasses

    unscored = [dataclasses.replace(t, steps=[dataclasses.replace(s, prm_score=None, extra={})
                                              for s in t.steps]) for t in traces]
    with pytest.raises(InsufficientDataError, match="no step carries a PRM score"):
        refit_observation(bank.model, unscored)
    no_outcome = [dataclasses.replace(t, final_correct=None) for t in traces]
    with pytest.raises(InsufficientDataError, match="known outcome"):
        refit_observation(bank.model, no_outcome)
    # a min-feature model is refitted (as its score marginal, tests/test_adapt.py); its bad
    # input is the same bad input
    m2, _, _ = fit_from_scenario(default_scenario(), FitConfig(
        n_fit_problems=500, seed=1, features="score+min", n_min_bins=3))
    with pytest.raises(InsufficientDataError, match="no step carries a PRM score"):
        refit_observation(m2, unscored)
    import types

    with pytest.raises(ModelValidationError, match="TRIM-POMDP\\+ model"):
        refit_observation(types.SimpleNamespace(n_hidden=9, uses_min=False), traces)


def test_rebin_known_answers():
    from trim_pomdp.fit.refit import rebin

    h = np.array([[0.1, 0.2, 0.3, 0.4]])
    e4 = np.arange(1, 4) / 4
    np.testing.assert_array_equal(rebin(h, e4, e4), h)
    np.testing.assert_allclose(rebin(h, e4, [0.5]), [[0.3, 0.7]])  # merge pairs
    np.testing.assert_allclose(rebin(h, e4, np.arange(1, 8) / 8),  # split each in two
                               [[0.05, 0.05, 0.1, 0.1, 0.15, 0.15, 0.2, 0.2]])
    # 4 bins onto 3: each new bin takes 4/3 old bins, spread uniformly; mass is kept
    got = rebin(h, e4, [1 / 3, 2 / 3])
    np.testing.assert_allclose(got, [[0.1 + 0.2 / 3, 0.2 * 2 / 3 + 0.3 * 2 / 3,
                                      0.3 / 3 + 0.4]])
    assert got.sum() == pytest.approx(1.0)


def test_refit_rechooses_the_bins_of_a_shifted_deployment(bank):
    # drift_shifted moves the deployment PRM's scores: the labelled chooser picks 32 bins on
    # its deployment world against 12 on the training one; from routed traces alone (no step
    # labels) the refit must also ask for more bins than the bank's, and its model must fit
    # the routed traces better than the old one at those bins
    m = bank.model
    traces = _served(load_scenario("drift_shifted"), bank, n=1500)
    res = refit_observation(m, traces, n_bins="auto")
    choice = res.em["bin_choice"]
    assert choice["from_bins"] == m.n_score_bins
    assert res.model.n_score_bins == choice["n_bins"] > m.n_score_bins
    np.testing.assert_allclose(res.model.score_edges,
                               np.arange(1, choice["n_bins"]) / choice["n_bins"])
    assert res.old_on_new_bins.shape == res.new_obs_matrix.shape
    assert res.loglik_after > res.loglik_before
    # keeping the bins is still available and changes nothing of the binning
    kept = refit_observation(m, traces)
    np.testing.assert_array_equal(kept.model.score_edges, m.score_edges)
    assert "bin_choice" not in kept.em
    with pytest.raises(ValueError, match=r"n_bins must be None, an int >= 2 or 'auto'; got 1"):
        refit_observation(m, traces, n_bins=1)
