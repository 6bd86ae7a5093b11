"""Belief update: exact values, Numba vs NumPy reference, simplex property, errors."""

from __future__ import annotations

import numpy as np
import pytest
from brute_force import random_pomdp, tiger
from hypothesis import given, settings
from hypothesis import strategies as st

from trim_pomdp.engine.belief import (
    BeliefUpdater,
    update_belief,
    update_belief_numpy,
    update_beliefs,
)
from trim_pomdp.errors import ZeroProbabilityObservationError

# ---------------------------------------------------------------------------- known answers


def test_tiger_listen_known_values():
    m = tiger()
    b1 = update_belief(m.T, m.Z, m.b0, 0, 0)
    np.testing.assert_allclose(b1, [0.85, 0.15], rtol=0, atol=1e-15)
    b2 = update_belief(m.T, m.Z, b1, 0, 0)
    # 0.85^2 / (0.85^2 + 0.15^2)
    np.testing.assert_allclose(b2, [0.7225 / 0.745, 0.0225 / 0.745], rtol=1e-15)
    # Contradicting evidence cancels: back to the start.
    np.testing.assert_allclose(update_belief(m.T, m.Z, b1, 0, 1), [0.5, 0.5], rtol=1e-15)
    # Opening a door resets to uniform whatever is heard.
    np.testing.assert_allclose(update_belief(m.T, m.Z, b2, 1, 1), [0.5, 0.5], rtol=1e-15)


def test_prediction_then_correction_by_hand():
    # 3 states, 1 action, 2 observations; numbers chosen so the answer is exact in binary.
    T = np.array([[[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]]])
    Z = np.array([[[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]])
    b = np.array([0.5, 0.5, 0.0])
    # prediction: [0.25, 0.5, 0.25]; o=1 likelihood [0, .5, 1] -> [0, .25, .25] / .5
    np.testing.assert_array_equal(update_belief(T, Z, b, 0, 1), [0.0, 0.5, 0.5])
    np.testing.assert_array_equal(update_belief(T, Z, b, 0, 0), [0.5, 0.5, 0.0])


# ---------------------------------------------------------------------------- Numba vs NumPy


@pytest.mark.parametrize("seed", range(5))
def test_numba_matches_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    S, A, n_obs = 6, 3, 4
    m = random_pomdp(rng, S, A, n_obs)
    for _ in range(30):
        b = rng.dirichlet(np.ones(S))
        a, o = int(rng.integers(A)), int(rng.integers(n_obs))
        np.testing.assert_allclose(
            update_belief(m.T, m.Z, b, a, o), update_belief_numpy(m.T, m.Z, b, a, o),
            rtol=1e-13, atol=1e-15,
        )  # fmt: skip


def test_batched_matches_single_and_reference():
    rng = np.random.default_rng(7)
    S, A, n_obs, N = 5, 2, 3, 200
    m = random_pomdp(rng, S, A, n_obs)
    B = rng.dirichlet(np.ones(S), size=N)
    acts = rng.integers(0, A, size=N)
    obs = rng.integers(0, n_obs, size=N)
    out = update_beliefs(m.T, m.Z, B, acts, obs)
    single = np.array([update_belief(m.T, m.Z, B[i], acts[i], obs[i]) for i in range(N)])
    np.testing.assert_array_equal(out, single)  # same kernel, bit-identical
    ref = np.array([update_belief_numpy(m.T, m.Z, B[i], acts[i], obs[i]) for i in range(N)])
    np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("sparsity", [0.0, 0.7])
def test_sparse_kernel_bit_identical_to_dense(sparsity):
    # The simulator's CSR kernel must give exactly the dense kernel's beliefs (same additions
    # in the same order, minus exact zeros) and the right support.
    from trim_pomdp.engine.belief import (
        belief_update_kernel,
        belief_update_sparse_kernel,
        transition_csr,
    )

    rng = np.random.default_rng(11)
    S, A, n_obs = 9, 3, 4
    m = random_pomdp(rng, S, A, n_obs, sparsity=sparsity)
    indptr, indices, data = transition_csr(m.T)
    assert indptr[-1] == np.count_nonzero(m.T)
    dense, sparse = np.empty(S), np.empty(S)
    out_supp = np.empty(S, dtype=np.int64)
    checked = 0
    for _ in range(200):
        b = rng.random(S) * (rng.random(S) > sparsity)
        if b.sum() == 0:
            continue
        b /= b.sum()
        supp = np.flatnonzero(b > 0).astype(np.int64)
        a, o = int(rng.integers(A)), int(rng.integers(n_obs))
        p_dense = belief_update_kernel(m.T, m.Z, b, a, o, dense)
        p_sparse, n_out = belief_update_sparse_kernel(
            indptr, indices, data, m.Z, b, supp, supp.size, a, o, sparse, out_supp
        )
        assert p_sparse == p_dense
        if p_dense > 0:
            checked += 1
            np.testing.assert_array_equal(sparse, dense)
            np.testing.assert_array_equal(out_supp[:n_out], np.flatnonzero(dense > 0))
            np.testing.assert_allclose(
                sparse, update_belief_numpy(m.T, m.Z, b, a, o), rtol=1e-13, atol=1e-15
            )
    assert checked > 50


def test_preallocated_outputs_are_used():
    m = tiger()
    out = np.empty(2)
    res = update_belief(m.T, m.Z, m.b0, 0, 1, out=out)
    assert res is out
    np.testing.assert_allclose(out, [0.15, 0.85], atol=1e-15)
    outB = np.empty((2, 2))
    resB = update_beliefs(m.T, m.Z, np.tile(m.b0, (2, 1)), [0, 0], [0, 1], out=outB)
    assert resB is outB
    np.testing.assert_allclose(outB, [[0.85, 0.15], [0.15, 0.85]], atol=1e-15)


# ---------------------------------------------------------------------------- properties


@st.composite
def problems_and_beliefs(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    S = draw(st.integers(1, 6))
    A = draw(st.integers(1, 3))
    n_obs = draw(st.integers(1, 4))
    sparsity = draw(st.sampled_from([0.0, 0.5]))
    rng = np.random.default_rng(seed)
    m = random_pomdp(rng, S, A, n_obs, sparsity=sparsity)
    w = rng.random(S) * (rng.random(S) > sparsity)
    if w.sum() == 0:
        w[0] = 1.0
    return m, w / w.sum(), int(rng.integers(A)), int(rng.integers(n_obs))


@settings(max_examples=200, deadline=None)
@given(case=problems_and_beliefs())
def test_beliefs_stay_on_the_simplex(case):
    m, b, a, o = case
    p = float((b @ m.T[a]) @ m.Z[a, :, o])
    if p > 0:
        b2 = update_belief(m.T, m.Z, b, a, o)
        assert np.all(b2 >= 0)
        assert abs(b2.sum() - 1.0) <= 1e-12
        np.testing.assert_allclose(
            b2, update_belief_numpy(m.T, m.Z, b, a, o), rtol=1e-12, atol=1e-15
        )
        # support of b' is inside the states reachable under T[a] and able to emit o
        reach = (b @ m.T[a] > 0) & (m.Z[a, :, o] > 0)
        assert np.all(b2[~reach] == 0)
    else:
        with pytest.raises(ZeroProbabilityObservationError):
            update_belief(m.T, m.Z, b, a, o)


# ---------------------------------------------------------------------------- zero probability


def _deterministic_model():
    # Observation reveals the state exactly; state never changes.
    T = np.array([np.eye(3)])
    Z = np.array([np.eye(3)])
    return T, Z


def test_zero_probability_observation_names_a_o_and_support():
    T, Z = _deterministic_model()
    b = np.array([0.5, 0.0, 0.5])
    with pytest.raises(
        ZeroProbabilityObservationError,
        match=r"observation o=1 has zero probability after action a=0 from a belief with "
        r"support \{0, 2\}",
    ):
        update_belief(T, Z, b, 0, 1)
    with pytest.raises(ZeroProbabilityObservationError) as info:
        update_belief(T, Z, b, 0, 1)
    err = info.value
    assert (err.action, err.observation, err.support, err.row) == (0, 1, (0, 2), None)


def test_zero_probability_in_batch_names_row():
    T, Z = _deterministic_model()
    B = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    with pytest.raises(
        ZeroProbabilityObservationError,
        match=r"o=0 has zero probability after action a=0 from a belief with support \{1\} "
        r"\(row 1 of the batch\)",
    ):
        update_beliefs(T, Z, B, [0, 0], [0, 0])


def test_updater_error_uses_names():
    m = tiger()
    # make listening perfectly accurate so the wrong observation is impossible
    m.Z[0] = np.eye(2)
    up = BeliefUpdater(m)
    with pytest.raises(
        ZeroProbabilityObservationError,
        match=r"o=1 \(tiger-right\) has zero probability after action a=0 \(listen\) from a "
        r"belief with support \{0 \(tiger-left\)\}",
    ):
        up.update([1.0, 0.0], 0, 1)


# ---------------------------------------------------------------------------- BeliefUpdater


def test_belief_updater_matches_function():
    m = tiger()
    up = BeliefUpdater(m)
    b = up.initial_belief()
    np.testing.assert_array_equal(b, [0.5, 0.5])
    b[0] = 7.0  # a copy: the model's b0 is untouched
    np.testing.assert_array_equal(up.initial_belief(), [0.5, 0.5])
    b = up.initial_belief()
    for a, o in [(0, 0), (0, 0), (0, 1), (1, 0)]:
        b_ref = update_belief(m.T, m.Z, b, a, o)
        b = up.update(b, a, o)
        np.testing.assert_array_equal(b, b_ref)
    np.testing.assert_allclose(up.observation_probability([0.85, 0.15], 0), [0.745, 0.255])
    B = np.array([[0.5, 0.5], [0.85, 0.15]])
    np.testing.assert_array_equal(
        up.update_many(B, [0, 0], [0, 0]),
        [update_belief(m.T, m.Z, B[0], 0, 0), update_belief(m.T, m.Z, B[1], 0, 0)],
    )


# ---------------------------------------------------------------------------- input errors


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (
            {"b": [0.5, 0.5, 0.0]},
            ValueError,
            r"b must have shape \(n_states,\) = \(2,\); got \(3,\)",
        ),
        ({"b": [0.5, 0.6]}, ValueError, r"b must sum to 1 \(tol 1e-06\); it sums to 1.1"),
        ({"b": [1.5, -0.5]}, ValueError, "b must be non-negative"),
        ({"b": [np.nan, 0.5]}, ValueError, "b must be finite"),
        ({"a": 3}, ValueError, r"a must be in 0..2; got 3"),
        ({"o": -1}, ValueError, r"o must be in 0..1; got -1"),
        ({"a": 0.0}, TypeError, "a must be an integer index; got float"),
        (
            {"T": np.ones((3, 2))},
            ValueError,
            r"T must have shape \(n_actions, n_states, n_states\); got \(3, 2\)",
        ),
        (
            {"Z": np.ones((3, 3, 2))},
            ValueError,
            r"Z must have shape \(n_actions, n_states, n_observations\) = \(3, 2, O\); "
            r"got \(3, 3, 2\)",
        ),
        (
            {"out": np.empty(3)},
            ValueError,
            r"out must be a C-contiguous float64 array of shape \(2,\)",
        ),
    ],
)
def test_update_belief_input_errors(kwargs, exc, match):
    m = tiger()
    args = {"T": m.T, "Z": m.Z, "b": m.b0, "a": 0, "o": 0}
    args.update(kwargs)
    out = args.pop("out", None)
    with pytest.raises(exc, match=match):
        update_belief(args["T"], args["Z"], args["b"], args["a"], args["o"], out=out)


def test_out_must_not_alias_input():
    m = tiger()
    b = m.b0.copy()
    with pytest.raises(ValueError, match="out must not share memory with b"):
        update_belief(m.T, m.Z, b, 0, 0, out=b)


@pytest.mark.parametrize(
    ("B", "acts", "obs", "exc", "match"),
    [
        ([[0.5, 0.5]], [0, 0], [0], ValueError, r"actions must have shape \(1,\); got \(2,\)"),
        ([[0.5, 0.5]], [0], [2], ValueError, r"obs\[0\] must be in 0..1; got 2"),
        ([[0.5, 0.5]], [0.0], [0], TypeError, "actions must be an integer array"),
        ([[0.5, 0.5], [0.2, 0.2]], [0, 0], [0, 0], ValueError, r"B\[1\] must sum to 1"),
        (
            [0.5, 0.5],
            [0],
            [0],
            ValueError,
            r"B must have shape \(n_beliefs, n_states\) = \(N, 2\); got \(2,\)",
        ),
    ],
)
def test_update_beliefs_input_errors(B, acts, obs, exc, match):
    m = tiger()
    with pytest.raises(exc, match=match):
        update_beliefs(m.T, m.Z, B, acts, obs)
