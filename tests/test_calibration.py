import subprocess
import sys

import numpy as np
import pytest

from trim_pomdp.errors import InsufficientDataError
from trim_pomdp.fit.prm_calibration import (
    auroc,
    brier_score,
    calibration_report,
    expected_calibration_error,
    plot_reliability,
    plot_state_histograms,
)
from trim_pomdp.traces.records import Step, Trace
from trim_pomdp.traces.synthetic import generate_traces


def _pairwise_auc(x, y):
    pos, neg = x[y == 1], x[y == 0]
    d = pos[:, None] - neg[None, :]
    return ((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size


def test_auroc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    x = np.round(rng.random(300), 1)  # many ties
    y = (rng.random(300) < x).astype(int)
    assert auroc(x, y) == pytest.approx(_pairwise_auc(x, y), abs=1e-12)
    assert auroc([0.1, 0.2, 0.9], [0, 0, 1]) == 1.0
    assert auroc([0.5, 0.5], [0, 1]) == 0.5
    with pytest.raises(
        InsufficientDataError, match="AUROC needs both classes; got 2 correct and 0 wrong"
    ):
        auroc([0.1, 0.2], [1, 1])


def test_ece_and_brier_hand_computed():
    x = np.array([0.05, 0.15, 0.15, 0.95])
    y = np.array([0, 1, 0, 1])
    # bins of width 0.5: {0.05, 0.15, 0.15} mean 0.1167, acc 1/3; {0.95} acc 1
    ece = 3 / 4 * abs(1 / 3 - 0.35 / 3) + 1 / 4 * abs(1 - 0.95)
    assert expected_calibration_error(x, y, n_bins=2) == pytest.approx(ece, abs=1e-15)
    assert brier_score(x, y) == pytest.approx((0.05**2 + 0.85**2 + 0.15**2 + 0.05**2) / 4)
    with pytest.raises(ValueError, match=r"scores must lie in \[0, 1\]"):
        brier_score([1.2], [1])
    with pytest.raises(ValueError, match="y must be 0 or 1"):
        brier_score([0.2], [2])
    with pytest.raises(ValueError, match="same length"):
        brier_score([0.2, 0.3], [1])


def test_perfectly_calibrated_prm_has_small_ece():
    rng = np.random.default_rng(1)
    x = rng.random(200_000)
    y = (rng.random(x.size) < x).astype(int)
    # sampling error of ECE with 10 bins of 20k: ~ sqrt(.25 / 20000) ~ 0.0035 per bin
    assert expected_calibration_error(x, y) < 0.01
    assert brier_score(x, y) == pytest.approx(1 / 6, abs=0.003)  # E[x(1-x)] = 1/6


def test_report_on_traces_and_plots(tmp_path):
    tr = generate_traces(n_traces=400, p_w=0.8, seed=2)
    rep = calibration_report(tr, n_bins=5)
    labelled = [(s.prm_score, s.label == "correct") for t in tr for s in t.steps
                if s.label is not None]
    x = np.array([a for a, _ in labelled])
    y = np.array([b for _, b in labelled], dtype=int)
    assert rep.n == x.size and rep.n_positive == y.sum()
    assert rep.auroc == pytest.approx(_pairwise_auc(x, y))
    assert rep.ece == pytest.approx(expected_calibration_error(x, y, 5))
    assert rep.bin_count.sum() == rep.n
    assert rep.state_hist.sum() == sum(len(t) for t in tr)
    assert rep.auroc > 0.75  # S0 ~ Beta(6, 2) vs S2 ~ Beta(2.5, 3.5)
    d = rep.to_dict()
    assert d["n"] == rep.n and len(d["bin_accuracy"]) == 5
    state = calibration_report(tr, target="state")
    # every state is known (S1 after the first error too); the positives are the same S0 steps
    assert state.n == sum(len(t) for t in tr) and state.n_positive == rep.n_positive
    for fn, name in ((plot_reliability, "rel.png"), (plot_state_histograms, "hist.png")):
        out = fn(rep, tmp_path / name)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_errors():
    with pytest.raises(
        InsufficientDataError, match="no step has both a PRM score and a known label"
    ):
        calibration_report([Trace("a", "m", [Step(label="correct")])])
    with pytest.raises(ValueError, match="target must be 'label' or 'state'"):
        calibration_report([Trace("a", "m", [Step(label="correct")])], target="x")


def test_matplotlib_imported_only_when_plotting():
    code = ("import sys; import trim_pomdp.fit.prm_calibration as c, trim_pomdp.fit.observation, "
            "trim_pomdp.fit.transition, trim_pomdp.traces; print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=300)
    assert out.stdout.strip() == "False"


def test_midranks_match_scipy_rankdata():
    from scipy.stats import rankdata

    from trim_pomdp.fit.prm_calibration import _midranks

    x = np.round(np.random.default_rng(5).random(2000), 2)
    assert np.array_equal(_midranks(x), rankdata(x))
