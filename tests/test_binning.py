"""Defaults that hold (issue 15, item 4): the score-bin count chosen by solved value, and a
default lambda grid that reaches the accuracy plateau.  Known answers: the true number of
pieces of a piecewise-constant score density, the closed-form value of never
regenerating, and the brute-force maximum success probability of a tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from trim_pomdp.fit.observation import ObservationModel
from trim_pomdp.routing.bank import (
    default_lambdas,
    legacy_lambdas,
    nearest_lambda_index,
    solve_grid,
)
from trim_pomdp.routing.binning import choose_n_bins, never_regenerate_value
from trim_pomdp.routing.model import TrimModel

# per-state probabilities of 4 equal score pieces (S0 high, S1 low, S2 in between): the
# density is constant on each quarter of [0, 1]
PIECES = np.array([[0.04, 0.06, 0.15, 0.75],
                   [0.55, 0.25, 0.12, 0.08],
                   [0.15, 0.55, 0.20, 0.10]])


def _piecewise_model(n_bins: int, *, max_steps: int = 30, hazard: float = 0.2) -> TrimModel:
    om = ObservationModel.from_histograms(PIECES)  # exact bin integrals of the density
    return TrimModel.from_parameters(p_w=0.85, p_s=0.97, hazard=np.full(max_steps, hazard),
                                     obs_matrix=om.discretize(n_bins))


def test_chooser_picks_the_true_number_of_pieces():
    # 4 equal bins carry all the information of the density (its likelihood ratios are
    # constant inside each quarter); 2 and 3 bins mix pieces and lose value
    choice = choose_n_bins(_piecewise_model, candidates=(2, 3, 4, 5, 6), reference=8)
    assert choice.met and choice.n_bins == 4
    assert sorted(choice.values) == [2, 3, 4]  # the search stops at the first count that passes
    assert choice.worst_loss_ratio(3) > 1.0 and choice.worst_loss_ratio(2) > 1.0
    # 8 bins refine 4 without adding information: the same value, up to the solver's gap
    np.testing.assert_allclose(choice.values[4], choice.reference_values, atol=2e-4)
    d = choice.to_dict()
    assert d["n_score_bins"] == 4 and set(d["candidates"]) == {"2", "3", "4"}


def test_chooser_without_a_passing_candidate_says_so():
    choice = choose_n_bins(_piecewise_model, candidates=(2, 3), reference=4, rel_tol=0.0,
                           abs_tol=0.0)
    assert not choice.met and choice.n_bins == 3


@pytest.mark.parametrize("kwargs, match", [
    ({"candidates": ()}, "candidates"), ({"candidates": (0, 2)}, "candidates"),
    ({"reference": 6}, "reference"), ({"rel_tol": 1.5}, "rel_tol"),
    ({"abs_tol": -1.0}, "abs_tol")])
def test_chooser_rejects_bad_arguments(kwargs, match):
    args = {"candidates": (2, 4, 6), "reference": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        choose_n_bins(_piecewise_model, **args)


def test_never_regenerate_value_closed_form_and_solver():
    h, p_w, N = 0.2, 0.85, 30
    m = _piecewise_model(4, max_steps=N, hazard=h)
    t = np.arange(1, N)
    closed = float(np.sum(h * (1 - h) ** (t - 1) * p_w ** t) + (1 - h) ** (N - 1) * p_w ** N)
    assert never_regenerate_value(m) == pytest.approx(closed, rel=1e-12)
    # at a prohibitive lambda the optimal policy never regenerates
    assert solve_grid(m, [1e3])[0].value_b0 == pytest.approx(closed, abs=1e-9)


def _max_success_brute_force(model: TrimModel) -> float:
    """max over policies of P(success): the belief recursion over every action, observed
    state and observation of the model's arrays at lambda = 0 (tiny models only)."""
    a = model.arrays(0.0)
    T, Z, R = a["T"], a["Z"], a["R"]
    H, term = model.horizon, model.terminal

    def V(t: int, x: int, b: np.ndarray) -> float:
        if t == H or x == term:
            return 0.0
        best = -np.inf
        for act in range(model.n_actions):
            q = float(b @ R[t, act, x])
            joint = np.einsum("s,sxy->xy", b, T[t, act, x])  # (x', s')
            for x2 in range(model.n_observed):
                if joint[x2].sum() <= 0:
                    continue
                for o in range(model.n_observations):
                    w = joint[x2] * Z[act, x2, :, o]
                    if w.sum() > 1e-15:
                        q += w.sum() * V(t + 1, x2, w / w.sum())
            best = max(best, q)
        return best

    return V(0, a["x0"], a["b0"])


def test_default_grid_reaches_the_accuracy_plateau():
    m = _piecewise_model(3, max_steps=3, hazard=0.4)
    lams = default_lambdas(m, 8)
    assert lams[0] == 0.0 and np.all(np.diff(lams) > 0) and lams.size == 8
    np.testing.assert_allclose(lams[1:], legacy_lambdas(m, 7))
    bank = solve_grid(m, lams)
    best = _max_success_brute_force(m)
    # the grid's first policy is the most accurate one the model allows
    assert bank[0].value_b0 == pytest.approx(best, abs=1e-9)


def test_nearest_lambda_with_zero_on_the_grid():
    lams = np.array([0.0, 1e-4, 1e-3, 1e-2])
    assert nearest_lambda_index(lams, 0.0) == 0
    assert nearest_lambda_index(lams, 1e-9) == 1  # log scale among the positive lambdas
    assert nearest_lambda_index(lams, 4e-4) == 2 and nearest_lambda_index(lams, 2e-4) == 1
    assert nearest_lambda_index(lams, 1.0) == 3
    assert nearest_lambda_index(np.array([0.0]), 0.5) == 0
    with pytest.raises(ValueError, match="positive integer"):
        default_lambdas(_piecewise_model(2), 0)
    assert default_lambdas(_piecewise_model(2), 1).shape == (1,)


@pytest.mark.parametrize("value", ["0", "-3", "x12"])
def test_fit_rejects_a_bad_score_bins_option(tmp_path, capsys, value):
    from trim_pomdp.cli import main

    try:
        rc = main(["fit", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "o"),
                   "--score-bins", value])
    except SystemExit as exc:  # argparse's own exit
        rc = exc.code
    assert rc == 2
    assert "--score-bins: expected a positive integer or 'auto'" in capsys.readouterr().err
