import numpy as np
import pytest
from scipy.special import betainc, ndtr

from trim_pomdp.errors import InsufficientDataError, ModelValidationError, NotFittedError
from trim_pomdp.fit.observation import ObservationModel, observation_index
from trim_pomdp.traces.records import Step, Trace
from trim_pomdp.traces.synthetic import generate_traces
from trim_pomdp.traces.table import traces_to_table

SCORE = ((6.0, 2.0), (2.0, 4.0), (2.5, 3.5))


@pytest.fixture(scope="module")
def traces():
    return generate_traces(n_traces=1500, p_w=0.8, score_params=SCORE, seed=21)


@pytest.fixture(scope="module")
def heldout():
    return generate_traces(n_traces=1500, p_w=0.8, score_params=SCORE, seed=22)


def test_observation_index_known_values():
    assert observation_index([0.0, 0.35, 0.999, 1.0], None, 10).tolist() == [0, 3, 9, 9]
    assert observation_index(0.35, 1.0, 10, 4).tolist() == 3 * 4 + 3
    assert observation_index([0.1, 0.9], [0.3, 0.0], 2, 3).tolist() == [0 * 3 + 0, 1 * 3 + 0]
    assert ObservationModel.observation_index(0.5, None, 4).tolist() == 2
    with pytest.raises(
        ValueError, match=r"score must be in \[0, 1\] \(no NaN\); got nan at index 1"
    ):
        observation_index([0.2, np.nan], None, 10)
    with pytest.raises(ValueError, match=r"min_prev must be in \[0, 1\]"):
        observation_index([0.2], [1.5], 10, 3)
    with pytest.raises(ValueError, match="min_prev is required"):
        observation_index([0.2], None, 10, 3)


@pytest.mark.parametrize("estimator", ["kde", "beta", "hist"])
@pytest.mark.parametrize("features", ["score", "score+min"])
def test_discretize_rows_and_empirical_frequencies(traces, estimator, features):
    om = ObservationModel(estimator=estimator, features=features).fit(traces)
    nm = 3 if features == "score+min" else None
    Z = om.discretize(5, nm)
    n_obs = 5 * (nm or 1)
    assert Z.shape == (3, n_obs)
    assert np.allclose(Z.sum(axis=1), 1.0, atol=1e-12) and np.all(Z >= 0)
    # a good density estimate reproduces the empirical bin frequencies of its training data
    # within sampling error (+ smoothing bias): 4 binomial SE + 0.02
    table = traces_to_table(traces)
    o = observation_index(table.score, table.min_prev if nm else None, 5, nm)
    for s in range(3):
        sel = table.state == s
        freq = np.bincount(o[sel], minlength=n_obs) / sel.sum()
        se = np.sqrt(np.maximum(freq * (1 - freq), 1e-4) / sel.sum())
        if estimator == "beta" and features == "score+min":
            # product-of-Betas ignores the score/min dependence: check the score margin
            Zs, fs = Z[s].reshape(5, nm).sum(1), freq.reshape(5, nm).sum(1)
            assert np.all(np.abs(Zs - fs) < 4 * np.sqrt(fs * (1 - fs) / sel.sum()) + 0.02)
        else:
            assert np.all(np.abs(Z[s] - freq) < 4 * se + 0.02), (s, Z[s], freq)


def test_beta_discretize_is_exact_incomplete_beta(traces):
    om = ObservationModel(estimator="beta").fit(traces)
    e = np.linspace(0, 1, 8)
    for s in range(3):
        c = om.components_[s]
        assert np.allclose(om.discretize(7)[s], np.diff(betainc(c.a, c.b, e)), atol=1e-12)


def _kern(x, data, h):
    """(len(x), len(data)) reflected Gaussian kernels, each normalised to mass 1 on [0, 1]."""
    x = np.asarray(x, dtype=float)[:, None]
    phi = lambda z: np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)  # noqa: E731
    mass = (ndtr((1 - data) / h) - ndtr(-data / h) + ndtr((1 + data) / h) - ndtr(data / h)
            + ndtr((data - 1) / h) - ndtr((data - 2) / h))
    return (phi((x - data) / h) + phi((x + data) / h) + phi((x - 2 + data) / h)) / h / mass


def _brute_reflected_kde(x, data, h):
    return _kern(x, data, h).mean(axis=1)


def test_kde_1d_matches_brute_force_reflected_kde():
    rng = np.random.default_rng(0)
    data = rng.beta(2.0, 0.7, size=400)  # mass piled at 1: reflection matters
    om = ObservationModel(estimator="kde", bandwidth=0.05)
    tr = [Trace(str(i), "m", [Step(prm_score=float(v), label="correct")]) for i, v in enumerate(data)]  # noqa: E501
    tr += [Trace(f"b{i}", "m", [Step(prm_score=float(v), label="incorrect"), Step(prm_score=0.5)])
           for i, v in enumerate(data[:50])]
    tr += [Trace(f"c{i}", "m", [Step(label="incorrect"), Step(prm_score=float(v))])
           for i, v in enumerate(data[:50])]
    om.fit(tr)
    comp = om.components_[0]
    xs = np.linspace(0, 1, 101)
    ref = _brute_reflected_kde(xs, data, 0.05)
    # linear binning on a 1024-point grid + interpolation: relative error ~ (dx/h)^2
    assert np.allclose(comp.pdf(xs), ref, rtol=2e-3, atol=1e-3)
    # bin probabilities = integrals of the brute-force density (fine trapezoid)
    fine = np.linspace(0, 1, 5001)
    dens = _brute_reflected_kde(fine, data, 0.05)
    edges = np.linspace(0, 1, 6)
    ref_bins = [np.trapezoid(dens[(fine >= a) & (fine <= b)], fine[(fine >= a) & (fine <= b)])
                for a, b in zip(edges[:-1], edges[1:], strict=True)]
    assert np.allclose(om.discretize(5)[0], ref_bins, atol=2e-4)
    # the reflected density is a density on [0, 1]
    assert np.trapezoid(comp.pdf(fine), fine) == pytest.approx(1.0, abs=1e-3)


def test_kde_reflection_keeps_uniform_flat_at_the_edges():
    rng = np.random.default_rng(1)
    data = rng.random(20000)
    tr = [Trace("a", "m", [Step(prm_score=float(v), label="correct") for v in data[:10000]]),
          Trace("b", "m", [Step(prm_score=float(v), label="incorrect") for v in data[10000:]])]
    tr[1].steps.insert(0, Step(label="correct"))
    om = ObservationModel(estimator="kde", bandwidth=0.05, min_samples_per_state=1).fit(tr)
    # without reflection the density at 0 and 1 would be about 0.5
    assert om.pdf([0.0, 1.0], 0) == pytest.approx([1.0, 1.0], abs=0.06)


def test_kde_2d_matches_brute_force():
    from trim_pomdp.fit._densities import _KDE2D

    rng = np.random.default_rng(2)
    x, m = rng.beta(3, 2, 300), rng.beta(2, 2, 300)
    k = _KDE2D.fit(x, m, 0.08)
    q = rng.random((50, 2))
    full = (_kern(q[:, 0], x, 0.08) * _kern(q[:, 1], m, 0.08)).mean(axis=1)
    assert np.allclose(k.pdf(q[:, 0], q[:, 1]), full, rtol=0.02, atol=2e-3)
    assert np.allclose(k.pdf_exact(q[:, 0], q[:, 1]), full, rtol=2e-3, atol=1e-4)
    assert k.bin_probs(np.linspace(0, 1, 4), np.linspace(0, 1, 3)).sum() == pytest.approx(1.0)


def test_hist_exact_probabilities():
    scores = [0.05, 0.15, 0.15, 0.95] * 5
    tr = [Trace("a", "m", [Step(prm_score=s, label="correct") for s in scores]),
          Trace("b", "m", [Step(label="incorrect")] + [Step(prm_score=s) for s in scores]),
          Trace("c", "m", [Step(prm_score=s, label="incorrect") for s in scores[:1]])]
    om = ObservationModel(estimator="hist", hist_bins=10, hist_pseudocount=1.0,
                          min_samples_per_state=1).fit(tr)
    p = om.components_[0].p
    # counts 5,10,0,...,0,5 plus 1 each over 20 + 10
    assert np.allclose(p, np.array([6, 11, 1, 1, 1, 1, 1, 1, 1, 6]) / 30)
    # two target bins of five histogram bins each
    assert np.allclose(om.discretize(2)[0], [20 / 30, 10 / 30])
    assert om.pdf([0.07], 0)[0] == pytest.approx(6 / 30 * 10)


def test_score_min_atom_weight_and_pdf(traces):
    om = ObservationModel(estimator="hist", features="score+min").fit(traces)
    table = traces_to_table(traces)
    for s in range(3):
        sel = table.state == s
        n_atom = (table.min_prev[sel] == 1.0).sum()
        assert om.atom_weight_[s] == pytest.approx((n_atom + 0.5) / (sel.sum() + 1))
    X = np.array([[0.5, 1.0], [0.5, 0.4]])
    d = om.pdf(X, 0)
    pi = om.atom_weight_[0]
    f_atom, f_cont = om.components_[0]
    assert d[0] == pytest.approx(pi * f_atom.pdf(np.array([0.5]))[0])
    assert d[1] == pytest.approx((1 - pi) * f_cont.pdf(np.array([0.5]), np.array([0.4]))[0])


def test_log_likelihood_prefers_true_family_and_discrete_matches_manual(traces, heldout):
    lls = {est: ObservationModel(estimator=est).fit(traces).log_likelihood(heldout, average=True)
           for est in ("beta", "kde")}
    coarse = ObservationModel(estimator="hist", hist_bins=2).fit(traces).log_likelihood(
        heldout, average=True)
    assert lls["beta"] > coarse and lls["kde"] > coarse
    assert lls["beta"] >= lls["kde"] - 0.01  # the true family is at least as good
    om = ObservationModel(estimator="kde", features="score+min").fit(traces)
    table = traces_to_table(heldout)
    Z = om.discretize(4, 2)
    o = observation_index(table.score, table.min_prev, 4, 2)
    manual = np.log(Z[table.state, o]).sum()
    assert om.log_likelihood(heldout, n_score_bins=4, n_min_bins=2) == pytest.approx(manual)


@pytest.mark.parametrize("estimator", ["kde", "beta", "hist"])
@pytest.mark.parametrize("features", ["score", "score+min"])
def test_save_load_round_trip(tmp_path, traces, estimator, features):
    om = ObservationModel(estimator=estimator, features=features).fit(traces)
    p = tmp_path / "om.npz"
    om.save(p)
    back = ObservationModel.load(p)
    nm = 3 if features == "score+min" else None
    assert np.array_equal(back.discretize(6, nm), om.discretize(6, nm))
    X = np.array([[0.2, 1.0], [0.7, 0.3]]) if nm else np.array([0.2, 0.7])
    for s in range(3):
        assert np.array_equal(back.pdf(X, s), om.pdf(X, s))
    assert back.describe() == om.describe()


def test_errors(traces, tmp_path):
    few = [Trace("a", "m", [Step(prm_score=0.9, label="correct")] * 20 +
                 [Step(prm_score=0.1, label="incorrect")] + [Step(prm_score=0.2)] * 3)]
    with pytest.raises(
        InsufficientDataError, match=r"state S1 has 3 labelled, scored steps; need at least 10"
    ):
        ObservationModel().fit(few)
    with pytest.raises(
        InsufficientDataError, match="no step has both a known hidden state and a PRM score"
    ):
        ObservationModel().fit([Trace("a", "m", [Step(label="correct")])])
    with pytest.raises(NotFittedError, match="not fitted yet"):
        ObservationModel().discretize(5)
    with pytest.raises(ValueError, match="estimator must be 'kde', 'beta' or 'hist'; got 'gmm'"):
        ObservationModel(estimator="gmm").fit(traces)
    with pytest.raises(ValueError, match="features must be 'score' or 'score\\+min'"):
        ObservationModel(features="min").fit(traces)
    om = ObservationModel(features="score+min", estimator="hist").fit(traces)
    with pytest.raises(
        ValueError, match=r"X must have shape \(n, 2\) for features='score\+min'; got \(3,\)"
    ):
        om.pdf([0.1, 0.2, 0.3], 0)
    with pytest.raises(ValueError, match="n_min_bins is required"):
        om.discretize(5)
    with pytest.raises(ValueError, match="state must be 0, 1 or 2"):
        om.pdf([[0.1, 0.2]], 3)
    with pytest.raises(ValueError, match=r"X must lie in \[0, 1\]"):
        om.pdf([[0.1, 1.2]], 0)
    om.save(tmp_path / "o.npz")
    from trim_pomdp.fit.transition import TransitionModel

    with pytest.raises(ModelValidationError, match="expected 'TransitionModel'"):
        TransitionModel.load(tmp_path / "o.npz")


def test_missing_scores_are_counted_not_silent(traces):
    tr = list(traces) + [Trace("x", "m", [Step(label="correct"), Step(label="incorrect")])]
    om = ObservationModel(estimator="hist").fit(tr)
    assert om.n_missing_score_ == 2


def test_beta_non_convergence_warns_with_scipy_message(monkeypatch):
    import scipy.optimize

    from trim_pomdp.fit.observation import beta_mle

    real = scipy.optimize.minimize

    def capped(*args, **kwargs):  # one iteration only: cannot have converged
        kwargs["options"] = {**kwargs["options"], "maxiter": 1}
        return real(*args, **kwargs)

    monkeypatch.setattr(scipy.optimize, "minimize", capped)
    x = np.random.default_rng(0).beta(8.0, 2.0, size=500)
    with pytest.warns(RuntimeWarning, match="did not converge: .*ITERATIONS"):
        beta_mle(x, where="unit")


def test_observation_index_agrees_with_searchsorted_on_edges():
    # exact multiples of 1/n and their float neighbours: the rule is "edges k/n <= x"
    for n in (3, 7, 10, 13):
        edges = np.arange(1, n) / n
        x = np.concatenate([edges, np.nextafter(edges, 0), np.nextafter(edges, 1), [0.0, 1.0]])
        ref = np.searchsorted(edges, x, side="right")
        assert np.array_equal(observation_index(x, None, n), ref)
