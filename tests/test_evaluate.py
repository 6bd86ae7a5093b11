import json

import numpy as np
import pytest

from trim_pomdp import cli
from trim_pomdp.baselines import ThresholdPolicy
from trim_pomdp.evaluate import (
    FAMILY_FACTORIES,
    Family,
    FamilyOptions,
    FamilyUnavailableError,
    QueryFamily,
    evaluate,
    register_family,
    resolve_family,
)
from trim_pomdp.metrics import curve_metrics
from trim_pomdp.scenario import default_scenario
from trim_pomdp.simulator import sample_world, simulate_routing


@pytest.fixture(scope="module")
def world():
    return sample_world(default_scenario(), n_problems=3000, seed=21)


BASELINES = ["trim-thr", "random", "oracle", "query-oracle", "automix", "always-cheap",
             "always-strong"]


@pytest.fixture(scope="module")
def ev(world):
    # the POMDP family (piece router) is exercised by its own tests: it fits and solves
    return evaluate(world, BASELINES, family_options=FamilyOptions(n_params=11))


def test_default_family_list():
    from trim_pomdp.evaluate import DEFAULT_FAMILIES

    assert set(BASELINES) < set(DEFAULT_FAMILIES) and "trim-pomdp" in DEFAULT_FAMILIES


def test_baseline_families_and_references(ev, world):
    assert list(ev.curves) == BASELINES
    thr = ev.curves["trim-thr"]
    # k = 0 is always-cheap and k = 1.01 always-strong on the same (paired) problems
    assert thr.accuracy[0] == ev.acc_cheap and thr.cost_fraction[0] == 0.0
    assert thr.accuracy[-1] == ev.acc_strong and thr.cost_fraction[-1] == 1.0
    assert ev.curves["always-cheap"].accuracy[0] == ev.acc_cheap
    # query families reach the strong model's outcome at full escalation
    auto = ev.curves["automix"]
    assert auto.accuracy[-1] == ev.acc_strong and auto.cost_fraction[-1] == pytest.approx(1.0)
    q = ev.curves["query-oracle"]
    assert q.accuracy[0] == ev.acc_cheap


def test_curve_metrics_recomputed(ev):
    for c in ev.curves.values():
        m = curve_metrics(c.cost_fraction, c.accuracy, acc_cheap=ev.acc_cheap,
                          acc_strong=ev.acc_strong)
        for k, v in m.items():
            assert (np.isnan(v) and np.isnan(c.metrics[k])) or v == c.metrics[k]


def test_oracle_bounds_every_policy(ev):
    best = ev.curves["oracle"]
    for name, c in ev.curves.items():
        if name != "oracle":
            assert best.metrics["max_accuracy"] >= c.metrics["max_accuracy"]
            assert best.metrics["delta_ibc"] > c.metrics["delta_ibc"] or np.isnan(
                c.metrics["delta_ibc"])


def test_default_scenario_threshold_beats_query_level(ev):
    thr, auto = ev.curves["trim-thr"].metrics, ev.curves["automix"].metrics
    assert thr["delta_ibc"] > auto["delta_ibc"]
    assert thr["cpt_50"] < auto["cpt_50"]


def test_json_round_trip(ev):
    text = json.dumps(ev.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["curves"]["trim-thr"]["metrics"]["cpt_50"] == pytest.approx(
        ev.curves["trim-thr"].metrics["cpt_50"])
    assert "CPT50" in ev.table()


def test_custom_family_and_registry(world):
    fam = Family("thr-custom", [0.3, 0.6], lambda k: ThresholdPolicy(k), "k")
    ev = evaluate(world, {"x": fam})
    r = simulate_routing(world, ThresholdPolicy(0.6))
    assert ev.curves["thr-custom"].accuracy[1] == r.accuracy
    register_family("thr-registered", lambda opts: Family("thr-registered", [0.5],
                                                          lambda k: ThresholdPolicy(k)))
    try:
        ev2 = evaluate(world, ["thr-registered", "trim_pomdp.evaluate:random_family"])
        assert set(ev2.curves) == {"thr-registered", "random"}
    finally:
        del FAMILY_FACTORIES["thr-registered"]
    qf = QueryFamily("all", [1.0], lambda p, ctx: np.ones(ctx.world.n_problems, bool))
    ev3 = evaluate(world, [qf])
    assert ev3.curves["all"].accuracy[0] == ev3.acc_strong


def test_family_errors(world):
    with pytest.raises(KeyError, match="unknown policy family 'nope'"):
        resolve_family("nope")
    with pytest.raises(FamilyUnavailableError, match="not available"):
        resolve_family("no_such_module_xyz:make")
    with pytest.raises(FamilyUnavailableError, match="has no 'missing'"):
        resolve_family("trim_pomdp.evaluate:missing")
    with pytest.raises(ValueError, match="duplicate family names"):
        evaluate(world, ["random", "random"])
    with pytest.raises(ValueError, match="no budget parameters"):
        evaluate(world, [Family("empty", [], lambda k: ThresholdPolicy(k))])


def test_plot_png(ev, tmp_path):
    from trim_pomdp.plots import plot_curves

    p = plot_curves(ev, tmp_path / "c.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p2 = plot_curves(ev, tmp_path / "t.png", x="mean_strong_tokens", frontier_only=False)
    assert p2.stat().st_size > 1000
    with pytest.raises(ValueError, match="x must be"):
        plot_curves(ev, tmp_path / "bad.png", x="tokens")


def test_cli_evaluate_json_and_out(tmp_path, capsys):
    sc = tmp_path / "s.json"
    default_scenario().replace(n_problems=1500).to_json(sc)
    out = tmp_path / "out"
    rc = cli.main(["evaluate", "--scenario", str(sc), "--policies", "trim-thr,automix",
                   "--n-params", "6", "--json", "--out", str(out)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["policies"]) == {"trim-thr", "automix"}
    assert data["n_problems"] == 1500
    assert (out / "curves.png").exists()
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["format_version"] == 1
    assert len(saved["curves"]["trim-thr"]["params"]) == 7


def test_cli_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    d = default_scenario().to_dict()
    d["p_w"]["mean"] = 2
    bad.write_text(json.dumps(d))
    assert cli.main(["evaluate", "--scenario", str(bad)]) == 2
    assert "field 'p_w.mean'" in capsys.readouterr().err
    assert cli.main(["evaluate", "--policies", "nope", "--n-problems", "50"]) == 2
    assert "unknown policy family 'nope'" in capsys.readouterr().err
    assert cli.main(["evaluate", "--n-problems", "0"]) == 2
    assert cli.main(["evaluate", "--policies", "no_such_mod_q:fam", "--n-problems", "50"]) == 2
    assert "is not available" in capsys.readouterr().err


def test_paired_bootstrap(world):
    from trim_pomdp.evaluate import compare, paired_bootstrap

    ev = evaluate(world, ["trim-thr", "random", "automix"],
                  family_options=FamilyOptions(n_params=11), keep_outcomes=True)
    assert ev.curves["trim-thr"].correct.shape == (12, world.n_problems)
    # the bootstrap "replicate" with every problem once reproduces the point estimates
    ones = np.ones((1, world.n_problems))
    acc = ones @ ev.curves["trim-thr"].correct.T / world.n_problems
    np.testing.assert_allclose(acc[0], ev.curves["trim-thr"].accuracy)
    samples = paired_bootstrap(ev, n_boot=60, seed=1)
    d = samples["trim-thr"]["delta_ibc"]
    assert d.shape == (60,)
    # the bootstrap spread is centred near the estimate
    assert abs(np.median(d) - ev.curves["trim-thr"].metrics["delta_ibc"]) < 3 * d.std() + 1e-9
    cmp = compare(samples, "trim-thr", "random", "delta_ibc")
    assert cmp["p_better"] == 1.0 and cmp["ci_low"] > 0
    cmp2 = compare(samples, "trim-thr", "automix", "cpt_50", higher_is_better=False)
    assert cmp2["diff"] < 0 and cmp2["p_better"] > 0.95
    with pytest.raises(ValueError, match="keep_outcomes=True"):
        paired_bootstrap(evaluate(world, ["random"]))


def test_cli_bootstrap_json(capsys):
    rc = cli.main(["evaluate", "--policies", "trim-thr,automix", "--n-problems", "1200",
                   "--n-params", "6", "--bootstrap", "20", "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    lo, hi = data["bootstrap_ci95"]["trim-thr"]["delta_ibc"]
    assert isinstance(lo, float) and lo < hi
    assert cli.main(["evaluate", "--bootstrap", "-1"]) == 2


def test_package_level_evaluate_is_callable_after_submodule_import():
    import trim_pomdp
    import trim_pomdp.evaluate  # binds the package attribute to the submodule

    ev = trim_pomdp.evaluate("default", ["trim-thr"], n_problems=300, seed=1)
    assert ev.n_problems == 300 and "TRIM-Thr" in ev.curves or "trim-thr" in ev.curves
