import json

import numpy as np
import pytest

from trim_pomdp.errors import InsufficientDataError, ModelValidationError, NotFittedError
from trim_pomdp.fit.transition import TransitionModel, kernel_hazard, token_bin
from trim_pomdp.traces.records import Step, Trace
from trim_pomdp.traces.stats import step_accuracy, wilson_interval

C, I, N = "correct", "incorrect", None  # noqa: E741


def _tr(labels, tokens=None, tid="t", writers=None):
    tokens = tokens or [None] * len(labels)
    writers = writers or [None] * len(labels)
    return Trace(tid, "m", [Step(label=lab, tokens=tk, extra={"writer": w} if w else {})
                            for lab, tk, w in zip(labels, tokens, writers, strict=True)])


HAND = [
    _tr([C, C, I, N], tid="a"),   # trials: C, C, I          -> 2 of 3
    _tr([C], tid="b"),            # trials: C                -> 1 of 1
    _tr([C, I, C, I], tid="c"),   # full labels: trials C, I -> 1 of 2 (after the error: none)
    _tr([N, C], tid="d"),         # unknown prefix           -> no trial
]


def test_counts_on_hand_made_traces():
    est = step_accuracy(HAND)
    assert (est.k, est.n) == (4, 6)
    assert est.p == pytest.approx(4 / 6)


def test_wilson_interval_known_values():
    # Wilson 95% interval for 4/6 (e.g. Newcombe 1998 style tables): (0.3000, 0.9032)
    lo, hi = wilson_interval(4, 6, 0.95)
    assert lo == pytest.approx(0.29999, abs=5e-5)
    assert hi == pytest.approx(0.90323, abs=5e-5)
    # 0 of 10: lower bound 0, upper 0.2775
    lo, hi = wilson_interval(0, 10, 0.95)
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=5e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_fit_p_w_p_s_and_counts():
    strong = [_tr([C, C, C], tid="s1"), _tr([C, I, N], tid="s2")]  # 4 of 5
    tm = TransitionModel().fit(HAND, strong)
    assert (tm.k_w_, tm.n_w_) == (4, 6) and tm.p_w_ == pytest.approx(4 / 6)
    assert (tm.k_s_, tm.n_s_) == (4, 5) and tm.p_s_ == pytest.approx(0.8)
    assert tm.p_w_ci_ == pytest.approx(wilson_interval(4, 6, 0.95))
    assert tm.p_s_ci_ == pytest.approx(wilson_interval(4, 5, 0.95))
    assert tm.n_cheap_traces_ == 4 and tm.n_strong_traces_ == 2


def test_strong_steps_inside_routed_traces_count_for_p_s():
    routed = [_tr([C, C, I], writers=["cheap", "strong", "cheap"]),
              _tr([I, C], writers=["strong", "cheap"])]
    tm = TransitionModel().fit(routed + HAND)
    # cheap trials: C (1st), I (3rd) from trace 1 + 4/6 from HAND -> 5 of 8
    assert (tm.k_w_, tm.n_w_) == (5, 8)
    # strong trials: C (2nd of trace 1), I (1st of trace 2) -> 1 of 2
    assert (tm.k_s_, tm.n_s_) == (1, 2)


def test_p_s_parameter_and_missing_strong():
    tm = TransitionModel(p_s=0.9).fit(HAND)
    assert tm.p_s_ == 0.9 and tm.n_s_ == 0 and tm.p_s_ci_.tolist() == [0.9, 0.9]
    with pytest.raises(
        ValueError, match="no strong traces given; pass strong_traces or the p_s= parameter"
    ):
        TransitionModel().fit(HAND)
    with pytest.raises(InsufficientDataError, match=r"p_w has no data"):
        TransitionModel(p_s=0.9).fit([_tr([N, C])])
    with pytest.raises(InsufficientDataError, match=r"p_s has no data"):
        TransitionModel().fit(HAND, [_tr([N, N])])
    with pytest.raises(ValueError, match=r"p_s must be in \[0, 1\]"):
        TransitionModel(p_s=1.5).fit(HAND)
    with pytest.raises(ValueError, match=r"ci must be in \(0, 1\)"):
        TransitionModel(ci=1.0, p_s=0.5).fit(HAND)


def test_raw_hazard_known_values():
    h, at_risk, ended = kernel_hazard([1, 2, 2, 3, 31], 30, 0.0)
    assert ended[:3].tolist() == [1, 2, 1] and ended[29] == 1 and ended.sum() == 5
    assert at_risk[:4].tolist() == [5, 4, 2, 1] and at_risk[29] == 1
    assert h[:4].tolist() == [0.2, 0.5, 0.5, 0.0]
    assert h[29] == 1.0 and h.shape == (30,)
    tm = TransitionModel(hazard_smoothing=0.0, p_s=0.5).fit(
        [_tr([C] * n, tid=str(i)) for i, n in enumerate([1, 2, 2, 3, 31])])
    assert tm.n_truncated_ == 1 and np.array_equal(tm.hazard_, h)


def test_smoothed_hazard_is_shrunk_to_local_linear_fit():
    lengths = [1, 1, 2, 3, 3, 3, 5, 8]
    h, at_risk, ended = kernel_hazard(lengths, 30, smoothing=3.0, bandwidth=1.5)
    t = np.arange(30.0)
    K = np.exp(-0.5 * ((t[:, None] - t[None, :]) / 1.5) ** 2)
    ref = np.empty(30)
    for i in range(30):  # weighted least squares of raw hazards on (u - t), independently
        m = at_risk > 0
        u = t[m] - t[i]
        w = K[i, m] * at_risk[m]
        A = np.column_stack([np.ones(m.sum()), u]) * np.sqrt(w)[:, None]
        y = (ended[m] / at_risk[m]) * np.sqrt(w)
        ref[i] = np.linalg.lstsq(A, y, rcond=None)[0][0]
    expected = (ended + 3.0 * np.clip(ref, 0, 1)) / (at_risk + 3.0)
    assert np.allclose(h[:-1], expected[:-1], rtol=1e-9, atol=1e-12) and h[-1] == 1.0
    with pytest.raises(ValueError, match="hazard_smoothing must be a finite number >= 0"):
        kernel_hazard(lengths, 30, -1.0)
    with pytest.raises(ValueError, match="hazard_bandwidth must be a finite number > 0"):
        kernel_hazard(lengths, 30, 1.0, 0.0)


def test_token_model_ratio_edges_and_bins():
    cheap = [_tr([C, C, C, C], tokens=[10, 20, 30, 40], tid="c")]
    strong = [_tr([C, C], tokens=[50, 150], tid="s")]
    tm = TransitionModel().fit(cheap, strong)
    assert tm.cheap_tokens_.mean_all == 25.0 and tm.strong_tokens_.mean_all == 100.0
    assert tm.strong_cheap_ratio_ == 4.0
    assert tm.expected_strong_tokens([10, 2.5]).tolist() == [40.0, 10.0]
    edges = tm.token_bin_edges(2)
    assert edges.tolist() == [10.0, 20.0, 40.0]  # lower empirical median
    assert token_bin([10, 19, 20, 40, 1000], edges).tolist() == [0, 0, 1, 1, 1]
    assert tm.token_bin_probabilities(edges).tolist() == [0.25, 0.75]
    assert tm.expected_strong_tokens_per_bin(edges).tolist() == [40.0, 120.0]
    # log-normal fit of the pooled lengths
    assert tm.cheap_tokens_.mu_all == pytest.approx(np.log([10, 20, 30, 40]).mean())
    with pytest.raises(ValueError, match="cheap_tokens must be finite and >= 0"):
        tm.expected_strong_tokens([-1])
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        tm.token_bin_edges(0)


def test_no_tokens():
    tm = TransitionModel(p_s=0.9).fit(HAND)
    assert tm.cheap_tokens_ is None and tm.strong_cheap_ratio_ == 1.0
    with pytest.raises(InsufficientDataError, match="carry no token counts"):
        tm.token_bin_edges(3)


def test_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        TransitionModel().expected_strong_tokens([1])


def test_save_load_round_trip(tmp_path):
    cheap = [_tr([C, C, I], tokens=[10, 20, 30], tid="c"), _tr([C], tokens=[5], tid="d")]
    strong = [_tr([C, C], tokens=[50, 150], tid="s")]
    tm = TransitionModel(hazard_smoothing=0.5, hazard_bandwidth=3.0).fit(cheap, strong)
    p = tmp_path / "tm.npz"
    tm.save(p)
    back = TransitionModel.load(p)
    assert back.summary() == tm.summary()
    for attr in ("p_w_ci_", "p_s_ci_", "hazard_", "hazard_at_risk_", "hazard_ended_"):
        assert np.array_equal(getattr(back, attr), getattr(tm, attr))
    assert np.array_equal(back.token_bin_edges(3), tm.token_bin_edges(3))
    assert np.array_equal(back.cheap_tokens_.mu, tm.cheap_tokens_.mu)
    assert back.hazard_smoothing == 0.5 and back.hazard_bandwidth == 3.0
    with np.load(p, allow_pickle=False) as z:
        assert '"format_version": 1' in str(z["metadata_json"])


def test_load_errors(tmp_path):
    p = tmp_path / "x.npz"

    def write(kind, version):
        meta = json.dumps({"kind": kind, "format_version": version})
        np.savez(p, a=np.zeros(2), metadata_json=np.array(meta))

    write("ObservationModel", 1)
    with pytest.raises(ModelValidationError, match=r"x\.npz: field 'kind' is 'ObservationModel'; "
                       r"expected 'TransitionModel'"):
        TransitionModel.load(p)
    write("TransitionModel", 99)
    with pytest.raises(ModelValidationError, match=r"x\.npz: format_version 99 is not supported "
                       r"\(this trim_pomdp reads 1\)"):
        TransitionModel.load(p)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelValidationError,
                       match="cannot read model .npz file .truncated or corrupt"):
        TransitionModel.load(tmp_path / "junk.npz")
    tm = TransitionModel(p_s=0.5).fit(HAND)
    tm.save(p)
    with np.load(p, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["hazard"] = arrays["hazard"][:5]
    np.savez(p, **arrays)
    with pytest.raises(
        ModelValidationError, match=r"array 'hazard' must have shape \(30,\); got \(5,\)"
    ):
        TransitionModel.load(p)
