"""Drift scenarios (issue 15, item 5): a deployment PRM that differs from the training PRM."""

import json

import numpy as np
import pytest
from scipy import special, stats

from trim_pomdp import cli
from trim_pomdp.errors import ScenarioError
from trim_pomdp.evaluation.from_scenario import FitConfig, fit_from_scenario
from trim_pomdp.evaluation.sweep import evaluate
from trim_pomdp.simulation.scenario import (
    DRIFT_SCENARIOS,
    Scenario,
    default_scenario,
    load_scenario,
)
from trim_pomdp.simulation.world import sample_world


@pytest.mark.parametrize("name", DRIFT_SCENARIOS)
def test_builtin_drift_scenarios_round_trip(name, tmp_path):
    sc = load_scenario(name)
    assert sc.has_drift and not sc.matches_trim_model
    assert not sc.training().has_drift
    assert sc.training().score_beta == default_scenario().score_beta
    path = tmp_path / "s.json"
    sc.to_json(path)
    assert load_scenario(path) == sc
    assert sc.replace(seed=3).deployment == sc.deployment  # survives re-validation


def _same_draws(a, b):
    for f in ("p_w", "p_s", "length", "u_w", "u_s", "z_draft", "z_strong", "cheap_tokens",
              "strong_tokens"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f


def test_logit_map_is_folded_into_table_and_bias():
    dep = load_scenario("drift_overconfident")
    w_dep = sample_world(dep, n_problems=500, seed=4)
    w_tr = sample_world(dep.training(), n_problems=500, seed=4)
    _same_draws(w_dep, w_tr)
    np.testing.assert_allclose(w_dep.bias, 3.0 * w_tr.bias, rtol=1e-15, atol=0)
    want = special.expit(3.0 * special.logit(np.clip(w_tr.score_table, 1e-12, 1 - 1e-12)))
    np.testing.assert_array_equal(w_dep.score_table, want)
    # the composed score is expit(3 logit(training score)) up to the table's interpolation
    states = np.zeros((500, 30), np.int8)
    got = w_dep.prm_scores(states, w_dep.z_draft)
    ref = special.expit(3.0 * special.logit(w_tr.prm_scores(states, w_tr.z_draft)))
    np.testing.assert_allclose(got, ref, atol=2e-3)


def test_shift_and_replaced_prm():
    sh = sample_world("drift_shifted", n_problems=200, seed=1)
    tr = sample_world(load_scenario("drift_shifted").training(), n_problems=200, seed=1)
    np.testing.assert_array_equal(sh.bias, tr.bias)
    inner = (tr.score_table > 1e-9) & (tr.score_table < 1 - 1e-9)
    assert inner.mean() > 0.9
    np.testing.assert_allclose(special.logit(sh.score_table[inner]),
                               special.logit(tr.score_table[inner]) - 1.0, atol=1e-7)
    noisy = load_scenario("drift_noisy")
    w = sample_world(noisy, n_problems=200, seed=1)
    beta = noisy.deployment_prm()["score_beta"]
    assert beta != noisy.score_beta
    zg = w.z_lo + w.dz * np.arange(w.score_table.shape[1])
    for s, (a, b) in enumerate(beta):
        np.testing.assert_allclose(w.score_table[s], stats.beta.ppf(special.ndtr(zg), a, b))


@pytest.mark.parametrize("dep, match", [
    ({"logit_scale": 0}, "deployment.logit_scale"),
    ({"logit_shift": "x"}, "deployment.logit_shift"),
    ({"scale": 2}, "deployment.scale"),
    ({"prm": {"S0": {"a": 1, "b": 1}, "S1": {"a": 1, "b": 1}}}, "deployment.prm.S2"),
    ({"prm": {"S0": {"a": 1, "b": -1}, "S1": {"a": 1, "b": 1}, "S2": {"a": 1, "b": 1}}},
     "deployment.prm.S0.b"),
    ([], "deployment"),
])
def test_bad_deployment_fields_named(dep, match, tmp_path):
    d = default_scenario().to_dict()
    d["deployment"] = dep
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ScenarioError, match=match.replace(".", r"\.")):
        load_scenario(p)
    with pytest.raises(ScenarioError):
        Scenario.from_dict(d)


def test_fit_uses_training_world_unless_asked():
    cfg = FitConfig(n_fit_problems=600, seed=3, n_score_bins=10)  # the same bins in every world
    m_drift, _, _ = fit_from_scenario(load_scenario("drift_shifted"), cfg)
    m_base, _, _ = fit_from_scenario(default_scenario(), cfg)
    np.testing.assert_array_equal(m_drift.obs_matrix, m_base.obs_matrix)
    m_dep, _, _ = fit_from_scenario(load_scenario("drift_shifted"), cfg, world="deployment")
    # shifted down: the fitted S0 row puts more mass on low scores
    assert m_dep.obs_matrix[0, :5].sum() > m_base.obs_matrix[0, :5].sum() + 0.1
    with pytest.raises(ValueError, match="world must be"):
        fit_from_scenario(default_scenario(), cfg, world="nope")


def test_evaluate_gain_kept_and_target_cost():
    ev = evaluate("drift_shifted", ["trim-pomdp", "trim-pomdp-deploy", "trim-thr"],
                  n_problems=2000,
                  target_cost_fraction=0.10, calibration_problems=800)
    assert ev.reference == "trim-pomdp-deploy"
    kept = ev.gain_kept()
    assert kept["trim-pomdp-deploy"] == 1.0
    for name, c in ev.curves.items():
        assert kept[name] == pytest.approx(c.metrics["delta_ibc"]
                                           / ev.curves["trim-pomdp-deploy"].metrics["delta_ibc"])
        t = ev.targets[name]
        i = list(c.params).index(t["param"])
        assert t["realized_cost"] == c.cost_fraction[i]
        assert t["realized_accuracy"] == c.accuracy[i]
    # the routers were fitted on the training world: fitting on the deployment world differs
    assert not np.array_equal(ev.curves["trim-pomdp"].accuracy,
                              ev.curves["trim-pomdp-deploy"].accuracy)
    d = ev.to_dict()
    assert set(d["targets"]) == set(ev.curves) and d["reference"] == "trim-pomdp-deploy"
    assert "kept%" in ev.table() and "cost@0.10" in ev.table()
    with pytest.raises(ValueError, match="target_cost_fraction"):
        evaluate("default", ["trim-thr"], n_problems=100, target_cost_fraction=1.5)


def test_no_drift_deploy_family_is_trim_pomdp():
    ev = evaluate("default", ["trim-pomdp", "trim-pomdp-deploy"], n_problems=1500)
    np.testing.assert_array_equal(ev.curves["trim-pomdp"].accuracy,
                                  ev.curves["trim-pomdp-deploy"].accuracy)
    assert ev.targets == {} and ev.target_cost_fraction is None


def test_cli_evaluate_drift(capsys):
    rc = cli.main(["evaluate", "--scenario", "drift_overconfident", "--policies",
                   "trim-thr,trim-pomdp-deploy", "--n-problems", "800", "--target-cost", "0.1",
                   "--calibration-problems", "300", "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reference"] == "trim-pomdp-deploy"
    assert set(data["targets"]) == {"trim-thr", "trim-pomdp-deploy"}
    assert 0 <= data["targets"]["trim-thr"]["realized_cost"] <= 1
    assert cli.main(["evaluate", "--policies", "trim-thr", "--n-problems", "50",
                     "--target-cost", "2"]) == 2
    assert "--target-cost must be in [0, 1]" in capsys.readouterr().err
    assert cli.main(["evaluate", "--policies", "trim-thr", "--n-problems", "50",
                     "--target-cost", "0.1", "--calibration-problems", "0"]) == 2
