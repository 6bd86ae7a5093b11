import json
import math

import numpy as np
import pytest

from trim_pomdp.errors import ScenarioError
from trim_pomdp.routing.baselines import AlwaysCheap, AlwaysStrong
from trim_pomdp.simulation.scenario import (
    Scenario,
    builtin_scenario,
    default_scenario,
    expected_end_points,
    load_scenario,
)
from trim_pomdp.simulation.world import sample_world, simulate_routing


def test_default_round_trip(tmp_path):
    sc = default_scenario()
    path = tmp_path / "s.json"
    sc.to_json(path)
    again = load_scenario(path)
    assert again == sc
    assert json.loads(path.read_text())["format_version"] == 1


def test_builtin_names_load_by_name():
    assert load_scenario("noisy_prm").name == "noisy_prm"
    with pytest.raises(ScenarioError, match="unknown built-in scenario 'nope'"):
        builtin_scenario("nope")


def test_expected_end_points_default_calibrated_to_paper():
    # the MATH-500 end points of TRIM: 0.65 / 0.82 / 462 strong tokens per query
    for name in ("default", "noisy_prm"):
        e = expected_end_points(builtin_scenario(name))
        assert abs(e["cheap_accuracy"] - 0.65) < 5e-4
        assert abs(e["strong_accuracy"] - 0.82) < 5e-4
        assert abs(e["strong_tokens_always_strong"] - 462) < 0.5


def test_calibration_verified_by_simulation():
    # 40k problems: binomial standard errors ~0.0024 (cheap) and ~0.0019 (strong)
    sc = default_scenario()
    world = sample_world(sc, n_problems=40_000, seed=123)
    cheap = simulate_routing(world, AlwaysCheap())
    strong = simulate_routing(world, AlwaysStrong())
    e = expected_end_points(sc)
    assert abs(cheap.accuracy - e["cheap_accuracy"]) < 4 * cheap.accuracy_stderr
    assert abs(strong.accuracy - e["strong_accuracy"]) < 4 * strong.accuracy_stderr
    # strong tokens per query: sd of the per-query total is ~ 420 -> se ~ 2.1
    se = strong.strong_tokens.std() / math.sqrt(world.n_problems)
    assert abs(strong.mean_strong_tokens - e["strong_tokens_always_strong"]) < 4 * se
    assert abs(np.mean(world.length) - e["mean_length"]) < 4 * world.length.std() / 200


def test_exact_expectation_without_spread():
    # no problem-level spread, constant hazard: E[p^L] in closed form
    sc = Scenario(p_w_mean=0.9, p_s_mean=0.95, hazard={"kind": "constant", "value": 0.5},
                  n_problems=10)
    h = 0.5
    pmf = np.array([h * (1 - h) ** (t - 1) for t in range(1, 31)])
    pmf[-1] = (1 - h) ** 29
    t = np.arange(1, 31)
    e = expected_end_points(sc)
    assert e["cheap_accuracy"] == pytest.approx(np.sum(pmf * 0.9 ** t), rel=1e-12)
    assert e["mean_length"] == pytest.approx(np.sum(pmf * t), rel=1e-12)


def test_hazard_list_and_last_step_final():
    vals = [0.0] * 30
    vals[4] = 1.0
    sc = Scenario(p_w_mean=0.9, p_s_mean=0.95, hazard={"kind": "list", "values": vals})
    assert sc.expected_length() == pytest.approx(5.0)
    sc2 = Scenario(p_w_mean=0.9, p_s_mean=0.95, hazard={"kind": "list", "values": [0.0] * 30})
    assert sc2.hazard_array()[-1] == 1.0 and sc2.expected_length() == pytest.approx(30.0)


def _bad(mutate):
    d = default_scenario().to_dict()
    mutate(d)
    return json.dumps(d)


_BAD_FIELDS = [
    (lambda d: d["p_w"].update(mean=1.5),
     r"field 'p_w.mean': expected a finite number in \(0.0, 1.0\); got 1.5"),
    (lambda d: d["p_s"].pop("mean"), r"field 'p_s.mean': required field is missing"),
    (lambda d: d.update(n_problem=3), r"field 'n_problem': unknown field"),
    (lambda d: d.update(n_problems=0), r"field 'n_problems': expected an integer >= 1; got 0"),
    (lambda d: d.update(seed="x"), r"field 'seed': expected an integer >= 0"),
    (lambda d: d["hazard"].update(kind="weibull"),
     r"field 'hazard.kind': expected \"constant\" or \"list\""),
    (lambda d: d.update(hazard={"kind": "list", "values": [0.1] * 29}),
     r"'hazard.values': expected a list of 30 numbers.*got 'a list of length 29'"),
    (lambda d: d.update(hazard={"kind": "list", "values": [0.1] * 29 + [float("nan")]}),
     r"'hazard.values\[29\]'"),
    (lambda d: d["prm"]["S2"].update(a=-1), r"field 'prm.S2.a'"),
    (lambda d: d["prm"].update(correlation=1.0), r"field 'prm.correlation'"),
    (lambda d: d["tokens"]["strong"].update(sigma=True), r"field 'tokens.strong.sigma'"),
    (lambda d: d.update(format_version=2), r"field 'format_version': expected 1; got 2"),
    (lambda d: d["p_w"].update(concentration=0), r"field 'p_w.concentration'"),
    (lambda d: d.update(step_correlation=1.5),
     r"field 'step_correlation': expected a finite number in \[-1.0, 1.0\]; got 1.5"),
    (lambda d: d["hazard"].update(min_steps=0),
     r"field 'hazard.min_steps': expected an integer in \[1, 30\]"),
]


@pytest.mark.parametrize(("mutate", "match"), _BAD_FIELDS)
def test_bad_fields_named(tmp_path, mutate, match):
    path = tmp_path / "bad.json"
    path.write_text(_bad(mutate))
    with pytest.raises(ScenarioError, match=match) as info:
        load_scenario(path)
    assert str(path) in str(info.value)


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "format_version": 1,\n  "p_w": {mean: 0.9}\n}\n')
    with pytest.raises(ScenarioError, match=r"broken.json:3:\d+: invalid JSON"):
        load_scenario(path)


def test_top_level_not_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(ScenarioError, match="expected an object"):
        load_scenario(path)


def test_programmatic_construction_is_validated():
    with pytest.raises(ScenarioError, match="'p_s.mean'"):
        Scenario(p_w_mean=0.9, p_s_mean=0.0)
    sc = default_scenario().replace(n_problems=7)
    assert sc.n_problems == 7
    with pytest.raises(ScenarioError, match="'n_problems'"):
        default_scenario().replace(n_problems=-1)


def _auroc(pos, neg):
    from scipy.stats import mannwhitneyu

    return mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg))


def test_prm_informative_but_noisy():
    # AUROC of the draft score, correct (S0) vs first-wrong (S2) drafts, on always-cheap
    # traces of 6000 problems (standard error ~0.006): default ~0.89, noisy_prm ~0.79
    out = {}
    for name in ("default", "noisy_prm"):
        w = sample_world(builtin_scenario(name), n_problems=6000, seed=9)
        rec = simulate_routing(w, AlwaysCheap(), record=True).record
        live = rec.state >= 0
        s, st = rec.score[live], rec.state[live]
        out[name] = _auroc(s[st == 0], s[st == 2])
    assert 0.85 < out["default"] < 0.93
    assert 0.74 < out["noisy_prm"] < 0.83


def test_trim_exact_and_expected_strong_tokens():
    sc = default_scenario()
    assert not sc.matches_trim_model
    ex = sc.trim_exact()
    assert ex.matches_trim_model and ex.p_w_mean == sc.p_w_mean
    # conditional mean of the strong step length given the cheap draft's, by simulation:
    # draws with cheap tokens in [45, 55] (rounding of the lognormal is negligible there)
    w = sample_world(sc, n_problems=20_000, seed=2)
    c, s = w.cheap_tokens.ravel(), w.strong_tokens.ravel()
    m = (c >= 45) & (c <= 55)
    pred = sc.expected_strong_tokens(c[m]).mean()
    se = s[m].std() / np.sqrt(m.sum())
    assert abs(s[m].mean() - pred) < 4 * se
    # no correlation: the unconditional lognormal mean
    flat = sc.replace(token_correlation=0.0)
    mu, sig = flat.strong_tokens
    np.testing.assert_allclose(flat.expected_strong_tokens([5, 500]), np.exp(mu + sig**2 / 2))


def test_scenario_hashable_and_equal():
    a, b = default_scenario(), default_scenario()
    assert a == b and hash(a) == hash(b)
    assert len({a, b, a.replace(seed=1)}) == 2
