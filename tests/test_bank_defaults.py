"""Artefacts carry what the next command needs (issue 13): the observation file records its
bins, solve-grid reads them (an explicit option that disagrees is an error naming both), and
the bank records a default budget that ``route --policy`` uses.  Files written before these
fields existed still load, with the old behaviour."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trim_pomdp.cli import main
from trim_pomdp.errors import PolicyFormatError
from trim_pomdp.fit.observation import ObservationModel
from trim_pomdp.routing.bank import (
    PolicyBank,
    default_budget,
    default_lambdas,
    expected_cost_fractions,
    solve_grid,
)
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.traces.records import save_traces
from trim_pomdp.traces.synthetic import generate_traces


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    d = tmp_path_factory.mktemp("fit")
    save_traces(generate_traces(n_traces=400, p_w=0.8, seed=1), d / "cheap.jsonl")
    save_traces(generate_traces(n_traces=150, p_w=0.8, p_s=0.95, model="strong",
                                token_mu=4.6, seed=2), d / "strong.jsonl")
    out = d / "fit"
    assert main(["fit", str(d / "cheap.jsonl"), "--strong", str(d / "strong.jsonl"),
                 "--out", str(out), "--score-bins", "6", "--min-bins", "3", "--no-plots",
                 "--json"]) == 0
    return out


def test_fit_records_bins_and_solve_grid_reads_them(fitted, tmp_path, capsys):
    capsys.readouterr()
    om = ObservationModel.load(fitted / "observation.npz")
    assert om.features == "score+min" and om.binning == {"n_score_bins": 6, "n_min_bins": 3}
    bank = tmp_path / "bank.npz"
    assert main(["solve-grid", "--transition", str(fitted / "transition.npz"),
                 "--observation", str(fitted / "observation.npz"), "--lambdas", "5",
                 "--out", str(bank)]) == 0
    out = capsys.readouterr().out
    assert "n_score_bins=6, n_min_bins=3" in out and "default budget" in out
    b = PolicyBank.load(bank)
    assert (b.model.n_score_bins, b.model.n_min_bins, b.model.uses_min) == (6, 3, True)
    # the bank's default is the grid's lambda nearest the 10% target, as default_budget says
    assert b.target_cost_fraction == 0.10
    assert b.default_lambda == default_budget(b, 0.10) and b.default_lambda in b.lambdas
    meta = json.loads(bank.with_suffix(".json").read_text())
    assert meta["format_version"] == 1 and meta["default_lambda"] == b.default_lambda
    # the same explicit values are fine
    assert main(["solve-grid", "--transition", str(fitted / "transition.npz"),
                 "--observation", str(fitted / "observation.npz"), "--lambdas", "2",
                 "--n-score-bins", "6", "--n-min-bins", "3", "--out", str(bank)]) == 0


@pytest.mark.parametrize("opt, value, key, recorded", [
    ("--n-score-bins", "8", "n_score_bins", 6), ("--n-min-bins", "4", "n_min_bins", 3)])
def test_option_that_disagrees_with_the_file_names_both(fitted, tmp_path, capsys, opt, value,
                                                          key, recorded):
    capsys.readouterr()
    rc = main(["solve-grid", "--transition", str(fitted / "transition.npz"),
               "--observation", str(fitted / "observation.npz"), opt, value,
               "--out", str(tmp_path / "b.npz")])
    assert rc == 2  # bad input
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{opt} {value} disagrees with" in err and f"{key}={recorded}" in err
    assert not (tmp_path / "b.npz").exists()


def test_old_observation_file_without_bins_keeps_the_old_options(fitted, tmp_path, capsys):
    # an observation.npz from before the bins were recorded: no 'binning' key in its metadata
    om = ObservationModel.load(fitted / "observation.npz")
    om.binning = None
    old = tmp_path / "old_observation.npz"
    om.save(old)
    assert ObservationModel.load(old).binning is None
    capsys.readouterr()
    argv = ["solve-grid", "--transition", str(fitted / "transition.npz"), "--observation",
            str(old), "--lambdas", "2", "--out", str(tmp_path / "b.npz")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "records no min-score bins" in err and "--n-min-bins" in err
    assert main([*argv, "--n-min-bins", "2"]) == 0  # the explicit option, as before
    b = PolicyBank.load(tmp_path / "b.npz")
    assert (b.model.n_score_bins, b.model.n_min_bins) == (10, 2)


def test_score_only_file_rejects_min_bins(fitted, tmp_path, capsys):
    om = ObservationModel(features="score").fit(generate_traces(n_traces=200, p_w=0.8, seed=3))
    om.set_binning(5)
    om.save(tmp_path / "o.npz")
    assert ObservationModel.load(tmp_path / "o.npz").binning == {"n_score_bins": 5,
                                                                 "n_min_bins": None}
    capsys.readouterr()
    assert main(["solve-grid", "--transition", str(fitted / "transition.npz"), "--observation",
                 str(tmp_path / "o.npz"), "--n-min-bins", "2", "--out",
                 str(tmp_path / "b.npz")]) == 2
    assert "models the PRM score alone" in capsys.readouterr().err
    with pytest.raises(ValueError, match="n_min_bins must be None for features='score'"):
        om.set_binning(5, 2)
    with pytest.raises(ValueError, match="n_min_bins is required"):
        ObservationModel(features="score+min").set_binning(5)


def test_bank_default_round_trip_and_old_banks(tmp_path):
    obs = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.7, 0.2, 0.1]])
    model = TrimModel.from_parameters(p_w=0.85, p_s=0.95, hazard=np.full(30, 0.25),
                                      obs_matrix=obs)
    bank = solve_grid(model, [1e-3, 1e-1])
    bank.default_lambda, bank.target_cost_fraction = 1e-3, 0.2
    path = bank.save(tmp_path / "b.npz")
    back = PolicyBank.load(path)
    assert (back.default_lambda, back.target_cost_fraction) == (1e-3, 0.2)
    # a bank written before the default was recorded loads with None
    meta = json.loads(path.with_suffix(".json").read_text())
    del meta["default_lambda"], meta["target_cost_fraction"]
    path.with_suffix(".json").write_text(json.dumps(meta))
    assert PolicyBank.load(path).default_lambda is None
    meta["default_lambda"] = "soon"
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(PolicyFormatError, match="default_lambda must be a finite number"):
        PolicyBank.load(path)


def test_expected_cost_fractions_match_the_simulator():
    # the envelope estimate -dV/dlambda / always-strong's cost, against the cost fraction
    # the paired simulator measures for the same policies on the scenario the model was
    # built from (20,000 problems: Monte Carlo s.e. of a fraction ~0.003)
    from trim_pomdp.routing.baselines import AlwaysStrong
    from trim_pomdp.routing.router import TrimBatchPolicy
    from trim_pomdp.simulation.scenario import default_scenario
    from trim_pomdp.simulation.world import sample_world, simulate_routing

    sc = default_scenario()
    model = TrimModel.from_scenario(sc, n_score_bins=10, n_token_bins=4)
    bank = solve_grid(model, default_lambdas(model, 32))
    est = expected_cost_fractions(bank)
    assert est.shape == (32,) and est[0] > 0.3 and est[-1] < 0.01
    world = sample_world(sc, n_problems=20_000, seed=5)
    denom = float(np.mean(simulate_routing(world, AlwaysStrong()).strong_tokens))
    measured = {}
    for i in (0, 1, 8, 14, 18, 21, 24, 28):
        res = simulate_routing(world, TrimBatchPolicy(bank[i]))
        measured[i] = float(np.mean(res.strong_tokens)) / denom
        if i > 0:
            assert abs(est[i] - measured[i]) < 0.03, (i, est[i], measured[i])
    # at lambda = 0 (the grid's first point) the estimate is the secant over [0, lambda_1]:
    # V is convex, so it lies between the costs at lambda_1 and at 0 (s.e. ~0.003)
    assert bank.lambdas[0] == 0.0
    assert measured[1] - 0.01 < est[0] < measured[0] + 0.01, (est[0], measured)
    assert np.isnan(expected_cost_fractions(solve_grid(model, [1e-3]))).all()
    assert default_budget(solve_grid(model, [1e-3])) == 1e-3
