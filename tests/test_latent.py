"""TRIM-POMDP+ (latent difficulty / PRM-bias classes): reduction to TrimModel, exact values,
the Router over the larger belief against a NumPy filter, and EM recovery of known classes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.special import betainc, expit, logit

from trim_pomdp.errors import ModelValidationError, NotFittedError
from trim_pomdp.fit.latent import LatentFitter
from trim_pomdp.routing.bank import solve_grid, solve_latent_grid
from trim_pomdp.routing.latent_model import LatentTrimModel, shifted_beta_obs_matrix
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.routing.router import Router, TrimBatchPolicy
from trim_pomdp.simulation.scenario import load_scenario
from trim_pomdp.traces.records import Step, Trace

EDGES = [0.2, 0.4, 0.6, 0.8]
BETAS = ((4.0, 1.6), (2.0, 2.6), (1.6, 3.0))


def base_model(max_steps: int = 30) -> TrimModel:
    obs = shifted_beta_obs_matrix(BETAS, 0.0, EDGES)
    return TrimModel.from_parameters(
        p_w=0.9, p_s=0.96, hazard=np.linspace(0.05, 0.5, max_steps), obs_matrix=obs,
        score_edges=EDGES, token_probs=[0.5, 0.5], strong_tokens=[30.0, 80.0],
        token_edges=[40.0])


def latent_model(D: int = 2, B: int = 2, max_steps: int = 30) -> LatentTrimModel:
    base = base_model(max_steps)
    pw = [0.97, 0.8, 0.9][:D]
    ps = [0.99, 0.93, 0.96][:D]
    shifts = [-1.0, 1.0, 0.0][:B]
    obs = np.stack([shifted_beta_obs_matrix(BETAS, s, EDGES) for s in shifts])
    prior_d = np.arange(1, D + 1, dtype=float) / (D * (D + 1) / 2)
    return LatentTrimModel(base, p_w=pw, p_s=ps, difficulty_prior=prior_d, obs_matrices=obs)


# ------------------------------------------------------------------------ D = B = 1
def test_d1_b1_arrays_equal_trim_model_exactly():
    base = base_model()
    lm = LatentTrimModel(base)
    assert lm.n_hidden == 3
    for lam in (0.0, 0.003, 0.05):
        a, b = base.arrays(lam), lm.arrays(lam)
        for k in ("T", "Z", "R", "b0"):
            np.testing.assert_array_equal(a[k], b[k])


def test_d1_b1_same_value_and_same_policy():
    base = TrimModel.from_scenario(load_scenario("default"))
    lm = LatentTrimModel(base)
    lams = [1e-4, 1e-3, 5e-3]
    b1, b2 = solve_grid(base, lams), solve_latent_grid(lm, lams)
    for p, q in zip(b1, b2, strict=True):
        assert p.value_b0 == q.value_b0 and p.upper_bound == q.upper_bound
        np.testing.assert_array_equal(p.alphas, q.alphas)
        np.testing.assert_array_equal(p.actions, q.actions)
        np.testing.assert_array_equal(p.offsets, q.offsets)


def test_from_scenario_without_spread_or_bias_is_trim_from_scenario():
    sc = load_scenario("default").trim_exact()
    lm = LatentTrimModel.from_scenario(sc)
    base = TrimModel.from_scenario(sc)
    assert (lm.n_classes_difficulty, lm.n_classes_bias) == (1, 1)
    for k in ("T", "Z", "R"):
        np.testing.assert_array_equal(lm.arrays(0.01)[k], base.arrays(0.01)[k])


# ------------------------------------------------------------------------ structure
def test_block_structure_and_b0():
    m = latent_model(3, 2)
    a = m.arrays(0.01)
    T, Z = a["T"], a["Z"]
    S = m.n_hidden
    assert S == 18 and T.shape[3] == T.shape[5] == S
    np.testing.assert_allclose(T.sum(axis=(4, 5)), 1.0, atol=1e-12)
    cls = np.arange(S) // 3
    off = cls[:, None] != cls[None, :]
    # no mass ever moves between classes
    mass_off = np.einsum("haxsyt,st->", T, off.astype(float))
    assert mass_off == 0.0
    np.testing.assert_allclose(Z.sum(axis=3), 1.0, atol=1e-12)
    b0 = m.b0
    assert b0.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(b0[0::3], np.outer(m.difficulty_prior, m.bias_prior).ravel())
    assert np.all(b0[1::3] == 0) and np.all(b0[2::3] == 0)
    mg = m.marginals(b0)
    np.testing.assert_allclose(mg["difficulty"], m.difficulty_prior)
    np.testing.assert_allclose(mg["bias"], m.bias_prior)
    np.testing.assert_allclose(mg["state"], [1.0, 0.0, 0.0])


def test_value_when_regeneration_never_pays_is_the_mixture_of_cheap_successes():
    """At a lambda so large that regenerating never pays, the optimal value at b0 is
    P(always-cheap succeeds) = sum_d pi_d sum_L P(L) p_w(d)^L exactly."""
    m = latent_model(2, 2)
    bank = solve_latent_grid(m, [100.0])
    h = m.hazard
    surv = np.concatenate([[1.0], np.cumprod(1 - h)[:-1]])
    pL = surv * h
    L = np.arange(1, m.max_steps + 1)
    want = sum(pi * np.sum(pL * pw**L) for pi, pw in zip(m.difficulty_prior, m.p_w, strict=True))
    assert bank[0].value_b0 == pytest.approx(want, abs=1e-12)
    assert bank[0].upper_bound == pytest.approx(want, abs=1e-12)


def test_value_with_free_regeneration_and_a_perfect_prm():
    """A PRM that reveals S0 (top bin) vs S1/S2 (bottom bin) and free regeneration: the
    optimum keeps correct drafts and regenerates wrong ones, so every step is right w.p.
    ``q_d = p_w(d) + (1 - p_w(d)) p_s(d)`` and the value is sum_d pi_d sum_L P(L) q_d^L."""
    base = base_model()
    perfect = np.zeros((3, 5))
    perfect[0, 4] = perfect[1, 0] = perfect[2, 0] = 1.0
    m = LatentTrimModel(base, p_w=[0.95, 0.7], p_s=[0.99, 0.8], difficulty_prior=[0.3, 0.7],
                        obs_matrices=perfect[None])
    bank = solve_latent_grid(m, [0.0])
    h = m.hazard
    pL = np.concatenate([[1.0], np.cumprod(1 - h)[:-1]]) * h
    L = np.arange(1, m.max_steps + 1)
    want = sum(pi * np.sum(pL * (pw + (1 - pw) * ps) ** L)
               for pi, pw, ps in zip(m.difficulty_prior, m.p_w, m.p_s, strict=True))
    assert bank[0].value_b0 == pytest.approx(want, abs=1e-12)
    assert bank[0].upper_bound == pytest.approx(want, abs=1e-12)


def test_identical_classes_have_the_mean_model_value():
    """Two identical classes are one class: the optimal value is the same, so the latent
    solve's bounds must bracket the plain solve's value and vice versa."""
    base = base_model()
    same = LatentTrimModel(base, p_w=[base.p_w, base.p_w], p_s=[base.p_s, base.p_s],
                           obs_matrices=np.stack([base.obs_matrix] * 2))
    v1 = solve_grid(base, [0.004])[0].value_b0
    v2 = solve_latent_grid(same, [0.004])[0].value_b0
    assert v2 == pytest.approx(v1, abs=2e-3)
    assert v2 <= solve_grid(base, [0.004])[0].upper_bound + 1e-9


# ------------------------------------------------------------------------ router
def _reference_beliefs(model, policy, steps):
    arr = model.arrays(0.0)
    T, Z = arr["T"], arr["Z"]
    b, t, x, a = model.b0, 0, 0, 0
    out = []
    for score, tokens, is_final in steps:
        final = is_final or (t + 1 == model.max_steps)
        x_new = model.observed_index(final, int(model.token_bin(tokens)))
        o = int(model.observation_index(score))
        u = Z[a, x_new, :, o] * (b @ T[t, a, x, :, x_new, :])
        b = u / u.sum()
        t, x = t + 1, x_new
        a = policy.action(t, x, b)
        out.append((b.copy(), a))
    return out


def test_router_filters_the_larger_belief_like_numpy():
    m = latent_model(2, 2)
    bank = solve_latent_grid(m, [0.002, 0.01])
    rng = np.random.default_rng(3)
    for pol in bank:
        r = Router(pol)
        for _ in range(5):
            n = int(rng.integers(2, 9))
            steps = [(float(rng.random()), float(rng.integers(5, 90)), j == n - 1)
                     for j in range(n)]
            ref = _reference_beliefs(m, pol, steps)
            r.reset()
            for (score, tok, fin), (b, a) in zip(steps, ref, strict=True):
                got = r.step(score, tok, fin)
                assert got == ("continue", "regenerate")[a]
                np.testing.assert_allclose(r.belief, b, rtol=1e-12, atol=1e-14)
                assert r.belief.shape == (m.n_hidden,)


def test_batch_policy_matches_router_on_the_latent_model():
    m = latent_model(2, 2)
    pol = solve_latent_grid(m, [0.003])[0]
    rng = np.random.default_rng(5)
    n, L = 6, 5
    scores = rng.random((n, L))
    toks = rng.integers(5, 90, size=(n, L)).astype(float)
    bp = TrimBatchPolicy(pol)
    bp.reset_batch(n)
    r = Router(pol)
    want = []
    for i in range(n):
        r.reset()
        want.append([r.step(scores[i, j], toks[i, j], j == L - 1) for j in range(L)])
    for j in range(L):
        acts = bp.act(j + 1, scores[:, j], np.ones(n), toks[:, j], np.full(n, j == L - 1),
                      np.ones(n, bool))
        bp.executed(acts)
        assert [("continue", "regenerate")[a] for a in acts] == [w[j] for w in want]


def test_belief_learns_the_bias_class_from_scores():
    """Scores consistently high for a correct-looking trace raise the lenient class
    (positive shift) posterior; consistently low ones the harsh class."""
    m = latent_model(1, 2)  # shifts -1 (harsh), +1 (lenient)
    pol = solve_latent_grid(m, [1.0])[0]  # never regenerates: pure filtering
    r = Router(pol)
    for _ in range(6):
        r.step(0.97, 30, False)
    assert m.marginals(r.belief)["bias"][1] > 0.9
    r.reset()
    for _ in range(6):
        r.step(0.55, 30, False)
    assert m.marginals(r.belief)["bias"][0] > m.bias_prior[0]


# ------------------------------------------------------------------------ observation
def test_shifted_beta_obs_matrix_known_values():
    obs0 = shifted_beta_obs_matrix(BETAS, 0.0, EDGES)
    e = np.concatenate([[0.0], EDGES, [1.0]])
    for s, (a, b) in enumerate(BETAS):
        np.testing.assert_allclose(obs0[s], np.diff(betainc(a, b, e)), atol=1e-15)
    obs1 = shifted_beta_obs_matrix(BETAS, 0.7, EDGES)
    # P(y <= 0.6) with y = expit(logit(q) + 0.7) is P(q <= expit(logit(0.6) - 0.7))
    a, b = BETAS[0]
    assert obs1[0, :3].sum() == pytest.approx(betainc(a, b, expit(logit(0.6) - 0.7)), abs=1e-14)


# ------------------------------------------------------------------------ errors
def test_bad_inputs_raise_typed_errors():
    base = base_model()
    with pytest.raises(ModelValidationError, match=r"p_w and p_s must both have shape \(D,\)"):
        LatentTrimModel(base, p_w=[0.9, 0.8], p_s=[0.9])
    with pytest.raises(ModelValidationError,
                       match=r"obs_matrices must have shape \(B, 3, n_observations\) = "
                             r"\(B, 3, 5\); got \(2, 3, 4\)"):
        LatentTrimModel(base, obs_matrices=np.full((2, 3, 4), 0.25))
    bad = np.stack([base.obs_matrix, base.obs_matrix * 0.5])
    with pytest.raises(ModelValidationError, match=r"obs_matrices\[b=1, s=0, :\] sums to 0.5"):
        LatentTrimModel(base, obs_matrices=bad)
    with pytest.raises(ModelValidationError, match="difficulty_prior must be a probability"):
        LatentTrimModel(base, p_w=[0.9, 0.8], p_s=[0.9, 0.9], difficulty_prior=[0.5, 0.6])
    with pytest.raises(ModelValidationError, match=r"p_w, p_s must lie in \[0, 1\]"):
        LatentTrimModel(base, p_w=[1.2], p_s=[0.9])
    with pytest.raises(TypeError, match="base must be a TrimModel"):
        LatentTrimModel("nope")
    with pytest.raises(NotFittedError, match="not fitted yet"):
        LatentFitter().build(base)
    with pytest.raises(ValueError, match="n_difficulty must be a positive int"):
        LatentFitter(n_difficulty=[0]).fit([Trace(id="a", model="cheap", steps=[Step(
            prm_score=0.5, label="correct")])])


# ------------------------------------------------------------------------ EM recovery
def _class_traces(n, seed, pw, ps, pi_d, shifts, pi_b, length=10):
    """Labelled paired cheap/strong traces from a world with discrete classes."""
    rng = np.random.default_rng(seed)
    d = rng.choice(len(pw), size=n, p=pi_d)
    b = rng.choice(len(shifts), size=n, p=pi_b)
    cheap, strong = [], []
    for i in range(n):
        for model, p, out in (("cheap", pw[d[i]], cheap), ("strong", ps[d[i]], strong)):
            ok = rng.random(length) < p
            first = int(np.argmax(~ok)) if not ok.all() else length
            steps = []
            for j in range(length):
                s = 0 if j < first else (2 if j == first else 1)
                a, bb = BETAS[s]
                y = float(expit(logit(rng.beta(a, bb)) + shifts[b[i]]))
                label = "correct" if s == 0 else ("incorrect" if s == 2 else None)
                steps.append(Step(prm_score=min(max(y, 1e-9), 1 - 1e-9), tokens=30,
                                  label=label))
            out.append(Trace(id=f"{model}-{i}", model=model, steps=steps, problem=str(i)))
    return cheap, strong


def test_em_recovers_known_classes_and_bic_picks_their_number():
    pw, ps, pi_d = [0.97, 0.75], [0.99, 0.9], [0.6, 0.4]
    shifts, pi_b = [-1.2, 1.2], [0.5, 0.5]
    cheap, strong = _class_traces(1000, 0, pw, ps, pi_d, shifts, pi_b)
    f = LatentFitter(n_difficulty=(1, 2, 3), n_bias=(1, 2, 3), seed=0).fit(cheap, strong)
    assert f.n_difficulty_ == 2
    assert f.n_bias_ == 2
    # tolerances: ~4 standard errors at n = 1000 problems
    np.testing.assert_allclose(f.p_w_, pw, atol=0.02)
    np.testing.assert_allclose(f.p_s_, ps, atol=0.03)
    np.testing.assert_allclose(f.difficulty_prior_, pi_d, atol=0.06)
    np.testing.assert_allclose(f.bias_shift_, shifts, atol=0.15)
    np.testing.assert_allclose(f.bias_prior_, pi_b, atol=0.05)
    for (a, b), (ta, tb) in zip(f.score_beta_, BETAS, strict=True):
        assert a == pytest.approx(ta, rel=0.15) and b == pytest.approx(tb, rel=0.15)
    m = f.build(base_model())
    assert (m.n_classes_difficulty, m.n_classes_bias) == (2, 2)


def test_em_without_classes_chooses_one_and_builds_the_mean_model():
    cheap, strong = _class_traces(600, 1, [0.9], [0.96], [1.0], [0.0], [1.0])
    f = LatentFitter(n_difficulty=(1, 2), n_bias=(1, 2), max_iter=40, seed=0).fit(cheap, strong)
    assert (f.n_difficulty_, f.n_bias_) == (1, 1)
    assert f.p_w_[0] == pytest.approx(0.9, abs=0.02)
    base = base_model()
    m = f.build(base)
    np.testing.assert_array_equal(m.arrays(0.01)["T"], base.arrays(0.01)["T"])


def test_from_scenario_quantises_the_spread():
    sc = dataclasses.replace(load_scenario("default"), p_w_concentration=5.0,
                             p_s_concentration=5.0, prm_bias_sd=1.0)
    m = LatentTrimModel.from_scenario(sc, n_difficulty=3, n_bias=3, n_mc=20000)
    assert m.n_hidden == 27
    assert np.all(np.diff(m.p_w) > 0)  # classes ordered by the quantile of g_w
    # the class means average back to the scenario mean (equal-probability classes)
    assert m.p_w.mean() == pytest.approx(sc.p_w_mean, abs=0.01)
    # bias shifts: +-sd * phi(z_{1/3}) * 3 = +-1.0911 for sd = 1, and 0 in the middle
    assert m.obs_matrices.shape[0] == 3
    np.testing.assert_allclose(m.obs_matrices[1], TrimModel.from_scenario(sc).obs_matrix,
                               atol=1e-12)


def test_fit_without_scores_or_strong_runs_fits_difficulty_only():
    cheap, _ = _class_traces(300, 2, [0.9], [0.96], [1.0], [0.0], [1.0])
    bare = [Trace(id=t.id, model="cheap", problem=t.problem,
                  steps=[Step(label=s.label, tokens=s.tokens) for s in t.steps]) for t in cheap]
    f = LatentFitter(n_difficulty=(1, 2), seed=0).fit(bare)
    assert f.n_bias_ == 1 and f.score_beta_ is None and not f.has_strong_
    assert np.all(np.isnan(f.p_s_))
    with pytest.raises(NotFittedError, match="no PRM scores"):
        f.obs_matrices(EDGES)


def test_processbench_one_class_fit_is_the_closed_form(processbench_dir):
    """D = 1: p_w = (sum k + 1/2) / (sum (k + m) + 1) over solutions (k correct steps before
    the first wrong one, m = 1 if one is reached) -- the M-step's Beta(1/2, 1/2) smoothing."""
    from trim_pomdp.traces.processbench import read_processbench

    traces = read_processbench(processbench_dir / "gsm8k.json")
    k = m = 0
    for tr in traces:
        labels = [s.label for s in tr.steps]
        first = labels.index("incorrect") if "incorrect" in labels else None
        k += first if first is not None else sum(lab == "correct" for lab in labels)
        m += first is not None
    f = LatentFitter(n_difficulty=1, n_bias=1).fit(traces)
    assert f.p_w_[0] == pytest.approx((k + 0.5) / (k + m + 1.0), rel=1e-12)


def test_latent_bank_save_load_round_trip(tmp_path):
    from trim_pomdp.errors import PolicyFormatError
    from trim_pomdp.routing.bank import load_latent_bank

    m = latent_model(2, 2)
    bank = solve_latent_grid(m, [0.002, 0.01])
    path = bank.save(tmp_path / "bank.npz")
    got = load_latent_bank(path)
    assert isinstance(got.model, LatentTrimModel)
    for k in ("T", "Z", "R", "b0"):
        np.testing.assert_array_equal(got.model.arrays(0.01)[k], m.arrays(0.01)[k])
    for p, q in zip(bank, got, strict=True):
        assert p.lam == q.lam and p.value_b0 == q.value_b0
        np.testing.assert_array_equal(p.alphas, q.alphas)
        np.testing.assert_array_equal(p.offsets, q.offsets)
    r1, r2 = Router(bank[0]), Router(got[0])
    for score in (0.9, 0.3, 0.7):
        assert r1.step(score, 30, False) == r2.step(score, 30, False)
        np.testing.assert_array_equal(r1.belief, r2.belief)
    plain = solve_grid(base_model(), [0.01]).save(tmp_path / "plain.npz")
    with pytest.raises(PolicyFormatError, match="not a latent-model PolicyBank"):
        load_latent_bank(plain)
