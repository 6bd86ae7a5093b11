"""Finite-horizon MOMDP solver (trim_pomdp.finite, csrc/fh_*): known answers.

* exact optimal values by brute force (full expectimax over every reachable belief) on tiny
  random instances: the bounds always bracket them, and they are met exactly (gap 0) once the
  reachable beliefs are in the belief sets;
* the C++ backward pass against a slow NumPy implementation of the same point-based backups
  (lower bound vectors and sawtooth/FIB upper bound) on fixed belief sets;
* X = 1 is a plain finite-horizon POMDP; the flattened plain POMDP has the same value;
* sharing work across identical transition slices gives identical results;
* solve_finite_many equals solving one by one; bad input raises typed errors.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from trim_pomdp.engine.finite import (
    FiniteHorizonPolicy,
    FiniteHorizonPOMDP,
    FiniteSolveInfo,
    solve_finite,
    solve_finite_many,
)
from trim_pomdp.errors import ModelValidationError, PolicyFormatError


# --------------------------------------------------------------------------- helpers
def random_model(
    seed: int,
    H: int = 3,
    A: int = 2,
    X: int = 2,
    S: int = 2,
    O: int = 2,  # noqa: E741 (O: observations, as in the maths)
    *,
    sparse: bool = False,
    timed: bool = True,
    x0: int | None = 0,
    discount: float = 1.0,
) -> FiniteHorizonPOMDP:
    rng = np.random.default_rng(seed)
    lead = (H,) if timed else ()
    T = rng.random(lead + (A, X, S, X, S))
    Z = rng.random(lead + (A, X, S, O))
    if sparse:  # zeros exercise the skipped successors
        T = T * (rng.random(T.shape) < 0.6)
        Z = Z * (rng.random(Z.shape) < 0.7)
        T[..., 0, 0] += 0.05
        Z[..., 0] += 0.05
    T /= T.sum(axis=(-2, -1), keepdims=True)
    Z /= Z.sum(axis=-1, keepdims=True)
    R = rng.normal(size=lead + (A, X, S))
    R_final = rng.normal(size=(X, S))
    b0 = rng.dirichlet(np.ones(S), size=X)
    x0_arg = rng.dirichlet(np.ones(X)) if x0 is None else x0
    return FiniteHorizonPOMDP(
        T, Z, R, R_final=R_final, x0=x0_arg, b0=b0, horizon=H, discount=discount
    )


def brute_force(model: FiniteHorizonPOMDP) -> tuple[float, np.ndarray]:
    """Exact optimal value at (x0, b0) by expectimax over every reachable belief.

    Returns the value and all reachable beliefs (rows), used as belief points.
    """
    H, A, X, O = model.horizon, model.n_actions, model.n_observed, model.n_observations  # noqa: E741 (O: observations, as in the maths)
    g = model.discount
    seen: list[np.ndarray] = []

    def V(t: int, x: int, b: np.ndarray) -> float:
        seen.append(b)
        if t == H:
            return float(b @ model.R_final[x])
        Tt, Zt, Rt = model.T_at(t), model.Z_at(t), model.R_at(t)
        best = -np.inf
        for a in range(A):
            v = float(b @ Rt[a, x])
            tau = np.einsum("s,syz->yz", b, Tt[a, x])  # (X, S): P(x', s')
            for xp in range(X):
                for o in range(O):
                    y = tau[xp] * Zt[a, xp, :, o]
                    p = y.sum()
                    if p > 0:
                        v += g * p * V(t + 1, xp, y / p)
            best = max(best, v)
        return best

    total = sum(
        model.x0[x] * V(0, x, model.b0[x]) for x in range(X) if model.x0[x] > 0
    )
    return float(total), np.array(seen)


def brute_force_plain(T, Z, R, b0, discount, depth) -> float:
    """Exact value of a plain POMDP over `depth` steps (T[a,s,s'], Z[a,s',o], R[a,s])."""

    def V(n: int, b: np.ndarray) -> float:
        if n == 0:
            return 0.0
        best = -np.inf
        for a in range(T.shape[0]):
            v = float(b @ R[a])
            pred = b @ T[a]
            for o in range(Z.shape[2]):
                y = pred * Z[a, :, o]
                p = y.sum()
                if p > 1e-300:
                    v += discount * p * V(n - 1, y / p)
            best = max(best, v)
        return best

    return V(depth, b0)


def reference_solve(model: FiniteHorizonPOMDP, points: np.ndarray):
    """Slow NumPy version of one backward pass on fixed belief sets.

    The belief set of (t, x) is: the corners, then `points`, plus b0[x] at t = 0 when
    x0[x] > 0 (the C++ solver with n_samples=0, grid 0, no refinement, on a model whose
    observed values all have distinct transition slices).  Returns (gammas, lower, upper):
    gammas[t][x] = (alphas (K, S), actions (K,)), and the bounds at the initial belief.
    """
    H, A, X, S, O = (model.horizon, model.n_actions, model.n_observed, model.n_hidden,  # noqa: E741 (O: observations, as in the maths)
                     model.n_observations)
    g = model.discount
    gam = [[None] * X for _ in range(H + 1)]
    # upper bound of epoch t, x: (fib (A', S), corner (S,), list of (b_i, v_i))
    ub = [[None] * X for _ in range(H + 1)]
    for x in range(X):
        gam[H][x] = (model.R_final[x][None, :].copy(), np.array([-1]))
        ub[H][x] = (model.R_final[x][None, :].copy(), model.R_final[x].copy(), [])

    def ub_eval(t, x, y):
        # min(fast informed bound, corner interpolation, sawtooth) (grid_resolution=0: the
        # solver's grid is the corners only)
        fib, corner, pts = ub[t][x]
        f = np.max(fib @ y)
        lin = y @ corner
        best = lin
        for bi, vi in pts:
            sup = bi > 0
            best = min(best, lin + np.min(y[sup] / bi[sup]) * (vi - bi @ corner))
        return min(f, best)

    # fast informed bound vectors
    fib = [[None] * X for _ in range(H + 1)]
    for x in range(X):
        fib[H][x] = model.R_final[x][None, :].copy()
    for t in range(H - 1, -1, -1):
        Tt, Zt, Rt = model.T_at(t), model.Z_at(t), model.R_at(t)
        for x in range(X):
            q = np.array(Rt[:, x], dtype=float)
            for a in range(A):
                for xp in range(X):
                    for o in range(O):
                        # M[s, s'] = T[s, x', s'] Z[s', o]
                        M = Tt[a, x, :, xp, :] * Zt[a, xp, :, o][None, :]
                        q[a] += g * np.max(M @ fib[t + 1][xp].T, axis=1)
            fib[t][x] = q

    for t in range(H - 1, -1, -1):
        Tt, Zt, Rt = model.T_at(t), model.Z_at(t), model.R_at(t)
        for x in range(X):
            B = [np.eye(S)[s] for s in range(S)] + [p for p in points]
            if t == 0 and model.x0[x] > 0:
                B.append(model.b0[x])
            cands, acts, ubv = [], [], []
            for b in B:
                best_v, best_alpha, best_a, ub_best = -np.inf, None, 0, -np.inf
                for a in range(A):
                    alpha = Rt[a, x].astype(float).copy()
                    u = b @ Rt[a, x]
                    for xp in range(X):
                        al_next = gam[t + 1][xp][0]
                        for o in range(O):
                            M = Tt[a, x, :, xp, :] * Zt[a, xp, :, o][None, :]
                            y = b @ M
                            if y.sum() <= 0:
                                # impossible under b, possible from another state: the plan
                                # still needs a continuation (chosen at the uniform successor)
                                y_u = M.sum(axis=0)
                                if y_u.sum() > 0:
                                    alpha += g * (M @ al_next[int(np.argmax(al_next @ y_u))])
                                continue
                            k = int(np.argmax(al_next @ y))
                            alpha += g * (M @ al_next[k])
                            u += g * ub_eval(t + 1, xp, y)
                    v = b @ alpha
                    if v > best_v:
                        best_v, best_alpha, best_a = v, alpha, a
                    ub_best = max(ub_best, u)
                cands.append(best_alpha)
                acts.append(best_a)
                ubv.append(ub_best)
            cands = np.array(cands)
            keep = sorted({int(np.argmax(cands @ b)) for b in B})
            gam[t][x] = (cands[keep], np.array(acts)[keep])
            f = fib[t][x]
            corner = np.array([min(ubv[s], np.max(f[:, s])) for s in range(S)])
            # sawtooth points: those whose backed-up value beats both the fast informed
            # bound and the corner interpolation there (the others add nothing at b_i)
            pts = [
                (B[i], ubv[i])
                for i in range(S, len(B))
                if ubv[i] < min(np.max(f @ B[i]), B[i] @ corner) - 1e-12
            ]
            ub[t][x] = (f, corner, pts)

    lower = sum(
        model.x0[x] * np.max(gam[0][x][0] @ model.b0[x]) for x in range(X) if model.x0[x] > 0
    )
    upper = sum(
        model.x0[x] * ub_eval(0, x, model.b0[x]) for x in range(X) if model.x0[x] > 0
    )
    return gam, float(lower), float(upper)


# --------------------------------------------------------------------------- exact values
@pytest.mark.parametrize("seed", range(6))
def test_bounds_bracket_brute_force(seed):
    model = random_model(seed, H=3, X=2, S=2, O=2, sparse=seed % 2 == 1, x0=None if seed > 3 else 0)
    exact, _ = brute_force(model)
    pol = solve_finite(model, n_samples=8, n_refine=0, grid_resolution=0, seed=seed)
    assert pol.lower_bound <= exact + 1e-9
    assert pol.upper_bound >= exact - 1e-9
    assert pol.gap == pytest.approx(pol.upper_bound - pol.lower_bound, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_exact_with_reachable_beliefs(seed):
    """Every reachable belief in the belief sets -> both bounds equal the exact optimum."""
    model = random_model(
        100 + seed, H=3, X=2, S=3 if seed % 2 else 2, O=2, sparse=seed == 2,
        x0=None if seed == 3 else 1, discount=0.9 if seed == 4 else 1.0,
    )
    exact, reach = brute_force(model)
    pol = solve_finite(model, belief_points=reach, n_samples=0, n_refine=0, grid_resolution=0)
    assert pol.lower_bound == pytest.approx(exact, abs=1e-9)
    assert pol.upper_bound == pytest.approx(exact, abs=1e-9)
    assert pol.gap <= 1e-9


def test_exact_on_hand_computed_instance():
    """One hidden coin (heads w.p. b), one look (noisy observation), then guess.

    H = 2: epoch 0 actions 'look' (0) / 'guess heads' (1) / 'guess tails' (2); a guess pays
    +1 if right, -1 if wrong; a look costs 0.1 and shows the coin with accuracy 0.8.  Epoch 1
    the same (a look is worthless then).  From b = (0.5, 0.5): look, then guess the seen side:
    -0.1 + (0.8 - 0.2) = 0.5 (guessing at once gives 0).
    """
    S, A, O = 2, 3, 2  # noqa: E741 (O: observations, as in the maths)
    T = np.zeros((A, 1, S, 1, S))
    for a in range(A):
        T[a, 0, :, 0, :] = np.eye(S)
    Z = np.full((A, 1, S, O), 0.5)
    Z[0, 0] = [[0.8, 0.2], [0.2, 0.8]]
    R = np.array([[[-0.1, -0.1]], [[1.0, -1.0]], [[-1.0, 1.0]]])
    model = FiniteHorizonPOMDP(T, Z, R, horizon=2, b0=[0.5, 0.5])
    pol = solve_finite(model)
    assert pol.lower_bound == pytest.approx(0.5, abs=1e-12)
    assert pol.upper_bound == pytest.approx(0.5, abs=1e-12)
    assert pol.action(0, 0, [0.5, 0.5]) == 0
    assert pol.action(1, 0, [0.8, 0.2]) == 1
    assert pol.action(1, 0, [0.2, 0.8]) == 2
    assert pol.value(1, 0, [0.8, 0.2]) == pytest.approx(0.6, abs=1e-12)


def test_x1_is_plain_finite_horizon_pomdp():
    """X = 1: same value as a plain POMDP solved by exact finite-depth expectimax."""
    rng = np.random.default_rng(7)
    S, A, O, H = 3, 2, 3, 3  # noqa: E741 (O: observations, as in the maths)
    Tp = rng.dirichlet(np.ones(S), size=(A, S))
    Zp = rng.dirichlet(np.ones(O), size=(A, S))
    Rp = rng.normal(size=(A, S))
    b0 = np.array([0.2, 0.5, 0.3])
    model = FiniteHorizonPOMDP(
        Tp[:, None, :, None, :], Zp[:, None], Rp[:, None], horizon=H, b0=b0
    )
    exact = brute_force_plain(Tp, Zp, Rp, b0, 1.0, H)
    assert brute_force(model)[0] == pytest.approx(exact, abs=1e-12)
    pol = solve_finite(model, belief_points=brute_force(model)[1], n_samples=0, n_refine=0)
    assert pol.lower_bound == pytest.approx(exact, abs=1e-9)
    assert pol.upper_bound == pytest.approx(exact, abs=1e-9)
    assert pol.offsets.shape == (H + 1,)


# --------------------------------------------------------------------------- C++ vs NumPy
@pytest.mark.parametrize("seed", range(4))
def test_cpp_backward_pass_matches_numpy(seed):
    S = 2 + seed % 2
    model = random_model(
        200 + seed, H=3, X=2, S=S, O=2, A=2 + seed // 2, sparse=seed == 1, x0=None,
        discount=0.95 if seed == 2 else 1.0,
    )
    rng = np.random.default_rng(seed)
    points = rng.dirichlet(np.ones(S), size=5)
    gam, lower, upper = reference_solve(model, points)
    pol = solve_finite(model, belief_points=points, n_samples=0, n_refine=0, grid_resolution=0)
    assert pol.lower_bound == pytest.approx(lower, abs=1e-10)
    assert pol.upper_bound == pytest.approx(max(upper, lower), abs=1e-10)
    tests = rng.dirichlet(np.ones(S), size=20)
    for t in range(model.horizon):
        for x in range(model.n_observed):
            alphas, _ = pol.vectors(t, x)
            ref = gam[t][x][0]
            np.testing.assert_allclose(
                np.max(tests @ alphas.T, axis=1), np.max(tests @ ref.T, axis=1), atol=1e-10
            )
            assert len(alphas) == len(ref)


# --------------------------------------------------------------------------- flattening
def test_flatten_arrays_value_equals_model_value():
    model = random_model(11, H=3, X=2, S=2, O=2, x0=None, discount=0.9)
    f = model.flatten_arrays()
    n = model.horizon * model.n_observed * model.n_hidden + 2  # + start + terminal
    assert f["T"].shape == (model.n_actions, n, n)
    assert f["Z"].shape == (model.n_actions, n, model.n_observed * model.n_observations)
    np.testing.assert_allclose(f["T"].sum(axis=2), 1.0, atol=1e-12)
    np.testing.assert_allclose(f["Z"].sum(axis=2), 1.0, atol=1e-12)
    exact = brute_force(model)[0]
    assert f["n_steps"] == model.horizon + 1  # x0 is random: a start state reveals it
    flat = brute_force_plain(f["T"], f["Z"], f["R"], f["b0"], f["discount"], f["n_steps"])
    assert flat == pytest.approx(exact, abs=1e-12)
    # one more step only ever sits in the absorbing zero-reward terminal state
    flat2 = brute_force_plain(f["T"], f["Z"], f["R"], f["b0"], f["discount"], f["n_steps"] + 1)
    assert flat2 == pytest.approx(exact, abs=1e-12)


def test_flatten_arrays_fixed_x0():
    model = random_model(13, H=3, X=2, S=2, O=2, x0=1)
    f = model.flatten_arrays()
    assert f["n_steps"] == model.horizon and f["state_names"][-1] == "terminal"
    assert f["T"].shape[1] == model.horizon * 4 + 1
    flat = brute_force_plain(f["T"], f["Z"], f["R"], f["b0"], f["discount"], f["n_steps"])
    assert flat == pytest.approx(brute_force(model)[0], abs=1e-12)


def test_flatten_returns_pomdp():
    model = random_model(12, H=2, X=2, S=2, O=2)
    pomdp = model.flatten()
    f = model.flatten_arrays()
    np.testing.assert_array_equal(pomdp.T, f["T"])
    np.testing.assert_array_equal(pomdp.b0, f["b0"])
    assert pomdp.discount == 1.0


# --------------------------------------------------------------------------- sharing
def shared_slice_model() -> FiniteHorizonPOMDP:
    """x = 1 and x = 2 have identical transitions but different rewards."""
    rng = np.random.default_rng(5)
    H, A, X, S, O = 3, 2, 4, 3, 3  # noqa: E741 (O: observations, as in the maths)
    T = rng.random((H, A, X, S, X, S))
    T[:, :, 2] = T[:, :, 1]
    T /= T.sum(axis=(-2, -1), keepdims=True)
    Z = rng.dirichlet(np.ones(O), size=(A, X, S))
    R = rng.normal(size=(A, X, S))
    return FiniteHorizonPOMDP(T, Z, R, horizon=H, x0=rng.dirichlet(np.ones(X)), b0=[0.5, 0.3, 0.2])


def test_sharing_identical_slices_gives_identical_results():
    model = shared_slice_model()
    a = solve_finite(model, n_samples=16, seed=3, share_slices=True)
    b = solve_finite(model, n_samples=16, seed=3, share_slices=False)
    np.testing.assert_array_equal(a.alphas, b.alphas)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    assert a.lower_bound == b.lower_bound and a.upper_bound == b.upper_bound
    exact = brute_force(model)[0]
    assert a.lower_bound <= exact + 1e-9 <= a.upper_bound + 2e-9


def test_identical_observed_values_get_identical_policies():
    """Two copies of the same observed value (same T, Z, R) have the same vectors."""
    model = shared_slice_model()
    R = np.array(model.R)
    R[:, 2] = R[:, 1]
    m2 = model.with_rewards(R)
    pol = solve_finite(m2, n_samples=16)
    for t in range(m2.horizon):
        a1, k1 = pol.vectors(t, 1)
        a2, k2 = pol.vectors(t, 2)
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(k1, k2)


def test_time_invariant_equals_time_indexed():
    model = random_model(21, H=4, X=2, S=2, O=2, timed=False)
    H = model.horizon
    tiled = FiniteHorizonPOMDP(
        np.broadcast_to(model.T, (H,) + model.T.shape),
        np.broadcast_to(model.Z, (H,) + model.Z.shape),
        np.broadcast_to(model.R, (H,) + model.R.shape),
        R_final=model.R_final, x0=model.x0, b0=model.b0,
    )
    a = solve_finite(model, seed=1)
    b = solve_finite(tiled, seed=1)
    np.testing.assert_array_equal(a.alphas, b.alphas)
    assert a.lower_bound == b.lower_bound and a.upper_bound == b.upper_bound


# --------------------------------------------------------------------------- many
def test_many_equals_one_by_one():
    base = shared_slice_model()
    models = [base.with_rewards(np.array(base.R) * (1 + 0.1 * k)) for k in range(7)]
    many = solve_finite_many(models, n_samples=16, seed=4, n_threads=2)
    assert len(many) == len(models)
    for m, p in zip(models, many, strict=True):
        one = solve_finite(m, n_samples=16, seed=4, n_threads=1)
        np.testing.assert_array_equal(p.alphas, one.alphas)
        np.testing.assert_array_equal(p.actions, one.actions)
        np.testing.assert_array_equal(p.offsets, one.offsets)
        assert p.lower_bound == one.lower_bound and p.upper_bound == one.upper_bound
    assert solve_finite_many([]) == []


def test_threads_do_not_change_results():
    model = shared_slice_model()
    a = solve_finite(model, n_samples=32, n_threads=1)
    b = solve_finite(model, n_samples=32, n_threads=2)
    np.testing.assert_array_equal(a.alphas, b.alphas)
    assert a.upper_bound == b.upper_bound


def test_many_rethrows_worker_error_naming_model():
    ok = random_model(1, S=2)
    big = random_model(2, S=5, O=2, X=1, H=2)
    with pytest.raises(ValueError, match=r"models\[2\]: grid_resolution=30 gives 46376 points"):
        solve_finite_many([ok, ok, big, ok], grid_resolution=30, n_threads=2)


# --------------------------------------------------------------------------- policy object
def test_policy_save_load_roundtrip(tmp_path):
    model = shared_slice_model()
    pol, info = solve_finite(model, return_info=True)
    assert isinstance(info, FiniteSolveInfo) and pol.info is info
    assert info.n_alpha == pol.n_alpha and info.history.shape == (info.n_passes, 3)
    path = tmp_path / "p.npz"
    pol.save(path)
    back = FiniteHorizonPolicy.load(path)
    np.testing.assert_array_equal(back.alphas, pol.alphas)
    np.testing.assert_array_equal(back.actions, pol.actions)
    np.testing.assert_array_equal(back.offsets, pol.offsets)
    assert (back.horizon, back.n_observed, back.n_hidden) == (3, 4, 3)
    assert back.lower_bound == pol.lower_bound and back.upper_bound == pol.upper_bound
    b = np.array([0.2, 0.3, 0.5])
    assert back.value(1, 2, b) == pol.value(1, 2, b)
    assert back.action(1, 2, b) == pol.action(1, 2, b)


def test_policy_load_errors(tmp_path):
    with pytest.raises(PolicyFormatError,
                       match=r"missing\.npz: cannot read policy file: no such file"):
        FiniteHorizonPolicy.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "a.npz", alphas=np.zeros((1, 2)))
    with pytest.raises(
        PolicyFormatError,
        match=r"a\.npz: malformed policy file: missing actions, offsets, metadata$",
    ):
        FiniteHorizonPolicy.load(tmp_path / "a.npz")
    meta = {"format_version": 99, "kind": "trim_pomdp.FiniteHorizonPolicy"}
    np.savez(tmp_path / "b.npz", alphas=np.zeros((1, 2)), actions=np.zeros(1, dtype=int),
             offsets=np.array([0, 1]), metadata=np.array(json.dumps(meta)))
    with pytest.raises(PolicyFormatError, match=r"b\.npz: format_version 99 is not supported "
                       r"\(this trim_pomdp reads 1\)"):
        FiniteHorizonPolicy.load(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", alphas=np.zeros((1, 2)), actions=np.zeros(1, dtype=object),
             offsets=np.array([0, 1]), metadata=np.array("{}"))
    with pytest.raises(PolicyFormatError, match=r"c\.npz: cannot read policy file \(truncated or "
                       r"corrupt\?\): ValueError: Object arrays"):
        FiniteHorizonPolicy.load(tmp_path / "c.npz")  # object arrays need pickle: refused
    with pytest.raises(PolicyFormatError, match=r"offsets must be integers of shape .* = \(3,\)"):
        FiniteHorizonPolicy(np.zeros((1, 2)), [0], [0, 1], horizon=1, n_observed=2)
    with pytest.raises(PolicyFormatError, match="at least one vector"):
        FiniteHorizonPolicy(np.zeros((1, 2)), [0], [0, 1, 1], horizon=1, n_observed=2)


def test_policy_query_errors():
    pol = solve_finite(random_model(3))
    with pytest.raises(IndexError, match=r"epoch t must be an int in \[0, 3\); got 3"):
        pol.value(3, 0, [0.5, 0.5])
    with pytest.raises(IndexError, match=r"observed value x must be an int in \[0, 2\); got -1"):
        pol.action(0, -1, [0.5, 0.5])
    with pytest.raises(ValueError, match=r"b must have shape \(n_hidden,\) = \(2,\); got \(3,\)"):
        pol.value(0, 0, [0.2, 0.3, 0.5])


# --------------------------------------------------------------------------- bad input
def _arrays(seed=0, H=2, A=2, X=2, S=2, O=2):  # noqa: E741 (O: observations, as in the maths)
    m = random_model(seed, H=H, A=A, X=X, S=S, O=O)
    return np.array(m.T), np.array(m.Z), np.array(m.R)


def test_model_shape_errors():
    T, Z, R = _arrays()
    with pytest.raises(ModelValidationError, match=r"T must have shape .*; got \(2, 2, 2\)"):
        FiniteHorizonPOMDP(T[0, 0, 0], Z, R)
    with pytest.raises(
        ModelValidationError,
        match=r"Z must have shape .* = \(\[H,\] 2, 2, 2, O\); got \(2, 2, 3, 2, 2\)",
    ):
        FiniteHorizonPOMDP(T, np.concatenate([Z, Z[:, :, :1]], axis=2), R)
    with pytest.raises(
        ModelValidationError,
        match=r"R must have shape .* = \(\[H,\] 2, 2, 2\); got \(2, 2\)",
    ):
        FiniteHorizonPOMDP(T, Z, R[0, 0])
    with pytest.raises(ModelValidationError, match=r"inconsistent number of epochs \(T: 2, Z: 3"):
        FiniteHorizonPOMDP(T, np.concatenate([Z, Z[:1]]), R)
    with pytest.raises(ModelValidationError, match="horizon is required"):
        FiniteHorizonPOMDP(T[0], Z[0], R[0])
    with pytest.raises(
        ModelValidationError,
        match=r"R_final must have shape \(n_observed, n_hidden\) = \(2, 2\); got \(2,\)",
    ):
        FiniteHorizonPOMDP(T, Z, R, R_final=[1.0, 2.0])
    with pytest.raises(ModelValidationError, match=r"b0 must have shape \(n_hidden,\) = \(2,\) or"):
        FiniteHorizonPOMDP(T, Z, R, b0=[1.0, 0.0, 0.0])


def test_model_value_errors():
    T, Z, R = _arrays()
    T2 = T.copy()
    T2[1, 0, 1, 0, 0, 0] += 0.02
    with pytest.raises(
        ModelValidationError,
        match=r"T\[t=1, a=0, x=1, s=0, :, :\] sums to 1.02; expected 1 \(tol 1e-06\)",
    ):
        FiniteHorizonPOMDP(T2, Z, R)
    Z2 = Z.copy()
    Z2[0, 1, 0, 1] = [1.2, -0.2]
    with pytest.raises(ModelValidationError, match=r"Z\[0, 1, 0, 1, 1\] is -0.2; expected >= 0"):
        FiniteHorizonPOMDP(T, Z2, R)
    R2 = R.copy()
    R2[0, 1, 1, 0] = np.nan
    with pytest.raises(
        ModelValidationError,
        match=r"R\[0, 1, 1, 0\] is nan; expected a finite number",
    ):
        FiniteHorizonPOMDP(T, Z, R2)
    with pytest.raises(ModelValidationError, match=r"x0 must be in \[0, 2\); got 2"):
        FiniteHorizonPOMDP(T, Z, R, x0=2)
    with pytest.raises(ModelValidationError, match=r"x0\[:\] sums to 0.9"):
        FiniteHorizonPOMDP(T, Z, R, x0=[0.5, 0.4])
    with pytest.raises(ModelValidationError, match=r"b0\[x=1, :\] sums to 1.1"):
        FiniteHorizonPOMDP(T, Z, R, b0=[[0.5, 0.5], [0.6, 0.5]])
    with pytest.raises(ModelValidationError, match=r"discount must be in \(0, 1\]; got 0.0"):
        FiniteHorizonPOMDP(T, Z, R, discount=0.0)
    with pytest.raises(ModelValidationError, match="T must be a numeric array"):
        FiniteHorizonPOMDP([["a"]], Z, R)


def test_solver_argument_errors():
    model = random_model(0)
    with pytest.raises(
        ValueError,
        match=r"belief_points must have shape \(n_points, n_hidden\) = \(M, 2\); got \(3,\)",
    ):
        solve_finite(model, belief_points=[0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match=r"belief_points\[1\] sums to 0.5; expected 1"):
        solve_finite(model, belief_points=[[0.5, 0.5], [0.25, 0.25]])
    with pytest.raises(ValueError, match="n_threads must be an int >= 1; got 0"):
        solve_finite(model, n_threads=0)
    with pytest.raises(ValueError, match="n_samples must be an int >= 0; got -1"):
        solve_finite(model, n_samples=-1)
    with pytest.raises(ValueError, match="grid_resolution=30 gives 46376 points per"):
        solve_finite(random_model(0, S=5, X=1, H=1), grid_resolution=30)
    with pytest.raises(TypeError, match="model must be a FiniteHorizonPOMDP; got dict"):
        solve_finite({})
    with pytest.raises(TypeError, match=r"models\[1\] must be a FiniteHorizonPOMDP"):
        solve_finite_many([model, None])


def test_core_binding_shape_errors():
    from trim_pomdp import _core

    m = random_model(0)._core_dict()
    bad = dict(m, b0=np.zeros(3))
    with pytest.raises(
        ValueError,
        match=r"b0 must have shape \(n_observed, n_hidden\) = \(2, 2\); got \(3,\)",
    ):
        _core.solve_finite(bad)
    with pytest.raises(ValueError, match=r"models\[1\]: .*missing key 'T'"):
        _core.solve_finite_many([m, {k: v for k, v in m.items() if k != "T"}])


# --------------------------------------------------------------------------- bigger sanity
def test_grid_and_simplex_corner_cases():
    """S = 1 (fully observed MDP): value iteration by hand."""
    H, A, X = 3, 2, 3
    rng = np.random.default_rng(9)
    P = rng.dirichlet(np.ones(X), size=(A, X))  # P[a, x, x']
    Rm = rng.normal(size=(A, X))
    T = P[:, :, None, :, None]
    Z = np.ones((A, X, 1, 1))
    model = FiniteHorizonPOMDP(T, Z, Rm[:, :, None], horizon=H, x0=1)
    V = np.zeros(X)
    for _ in range(H):
        V = np.max(Rm + P @ V, axis=0)
    pol = solve_finite(model)
    assert pol.lower_bound == pytest.approx(V[1], abs=1e-12)
    assert pol.upper_bound == pytest.approx(V[1], abs=1e-12)


def test_grid_points_all_in_product():
    """A dense grid alone (no sampling) still gives valid bounds, tighter with resolution."""
    model = random_model(31, H=3, X=2, S=3, O=3)
    exact = brute_force(model)[0]
    gaps = []
    for r in (2, 6, 20):
        pol = solve_finite(model, grid_resolution=r, n_samples=0, n_refine=0)
        assert pol.lower_bound <= exact + 1e-9 <= pol.upper_bound + 2e-9
        gaps.append(pol.gap)
    assert gaps[2] <= gaps[0]


def test_simplex_grid_count():
    # every composition appears exactly once: C(r+S-1, S-1) grid points + nothing else
    model = random_model(1, H=1, X=1, S=3, O=1)
    pol = solve_finite(model, grid_resolution=4, n_samples=0, n_refine=0)
    assert pol.info is not None
    assert pol.info.n_beliefs == len(
        [c for c in itertools.product(range(5), repeat=3) if sum(c) == 4]
    ) + 1  # + b0


# --------------------------------------------------------------------------- generic solver
def _tiny_trim_like(lam: float) -> FiniteHorizonPOMDP:
    """A 4-step TRIM-like MOMDP (x: start, non-final draft, final draft, terminal)."""
    H, A, X, S, O = 5, 2, 4, 3, 3  # noqa: E741 (O: observations, as in the maths)
    START, DRAFT, FINAL, TERM = range(X)
    p_w, p_s, hz = 0.8, 0.95, 0.3
    good = np.array([p_w, 0.0, 1 - p_w])
    bad = np.array([0.0, 1.0, 0.0])
    T = np.zeros((H, A, X, S, X, S))
    for t in range(H):
        h = 1.0 if t >= H - 2 else hz
        for a in range(A):
            for s in range(S):
                for x in (FINAL, TERM):
                    T[t, a, x, s, TERM, s] = 1.0
                if t == H - 1:
                    T[t, a, START, s, TERM, s] = T[t, a, DRAFT, s, TERM, s] = 1.0
                    continue
                if a == 0:
                    nxt_draft = good if s == 0 else bad
                else:
                    nxt_draft = p_s * good + (1 - p_s) * bad if s != 1 else bad
                for x, nxt in ((START, good), (DRAFT, nxt_draft)):
                    T[t, a, x, s, FINAL] = h * nxt
                    T[t, a, x, s, DRAFT] = (1 - h) * nxt
    Z = np.zeros((A, X, S, O))
    Z[:, :, :, 0] = 1.0
    obs = np.array([[0.1, 0.3, 0.6], [0.6, 0.3, 0.1], [0.5, 0.3, 0.2]])
    Z[:, DRAFT] = Z[:, FINAL] = obs
    R = np.zeros((A, X, S))
    R[1, DRAFT] = R[1, FINAL] = -lam
    R[0, FINAL, 0] += 1.0
    R[1, FINAL, [0, 2]] += p_s
    return FiniteHorizonPOMDP(T, Z, R, horizon=H, x0=START, b0=[1.0, 0.0, 0.0])


@pytest.mark.parametrize("lam", [0.02, 0.15])
def test_flattened_model_matches_generic_solver(lam):
    """Value at b0 of solve_finite == the flattened plain POMDP solved by the HSVI solver."""
    import trim_pomdp.engine.solver as solver
    model = _tiny_trim_like(lam)
    exact, reach = brute_force(model)
    pol = solve_finite(model, belief_points=reach, n_samples=0, n_refine=0)
    assert pol.lower_bound == pytest.approx(exact, abs=1e-9)
    assert pol.upper_bound == pytest.approx(exact, abs=1e-9)
    default = solve_finite(model)
    assert default.lower_bound <= exact + 1e-9 <= default.upper_bound + 2e-9
    _, info = solver.solve_info(
        model.flatten(), solver.SolverConfig(time_limit=10.0, target_gap=1e-7)
    )
    assert info.gap <= 1e-6
    assert info.lower_bound == pytest.approx(exact, abs=1e-6)
    assert info.upper_bound == pytest.approx(exact, abs=1e-6)


def test_flattened_model_pomdp_file_round_trip(tmp_path):
    """The flattened model written as a .pomdp file (for SARSOP) reads back the same."""
    import trim_pomdp.engine.model as model_mod
    flat = _tiny_trim_like(0.05).flatten()
    path = tmp_path / "trim_tiny.pomdp"
    flat.to_file(path)
    back = model_mod.POMDP.from_file(path)
    np.testing.assert_array_equal(back.T, flat.T)
    np.testing.assert_array_equal(back.Z, flat.Z)
    np.testing.assert_array_equal(back.R, flat.R)
    np.testing.assert_array_equal(back.b0, flat.b0)
    assert back.discount == 1.0


def test_refinement_passes_only_tighten():
    """Pass 0 is the n_refine=0 solve; later passes keep the best lower bound and the
    smallest upper bound, both still bracketing the exact value; target_gap stops early."""
    model = random_model(41, H=4, X=2, S=3, O=2, sparse=True)
    exact = brute_force(model)[0]
    p0 = solve_finite(model, n_samples=4, grid_resolution=1, seed=2)
    p2, info = solve_finite(
        model, n_samples=4, grid_resolution=1, seed=2, n_refine=2, return_info=True
    )
    assert info.n_passes == 3 and info.history.shape == (3, 3)
    assert info.history[0, 1] == p0.lower_bound and info.history[0, 2] == p0.upper_bound
    assert np.all(np.diff(info.history[:, 1]) >= 0) and np.all(np.diff(info.history[:, 2]) <= 0)
    assert p2.lower_bound >= p0.lower_bound and p2.upper_bound <= p0.upper_bound
    assert p2.lower_bound <= exact + 1e-9 <= p2.upper_bound + 2e-9
    stop = solve_finite(model, n_samples=4, seed=2, n_refine=5, target_gap=1e9, return_info=True)
    assert stop[1].n_passes == 1


def test_simulated_return_of_greedy_policy_is_within_bounds():
    """Acting greedily on the vectors (with an exact Bayes filter over the hidden states)
    earns at least the lower bound in expectation and at most the upper bound: the Monte
    Carlo mean of 4000 episodes lies in [lower - 4 SE, upper + 4 SE]."""
    model = _tiny_trim_like(0.1)
    pol = solve_finite(model, n_samples=8)
    rng = np.random.default_rng(0)
    H, X, S, O = model.horizon, model.n_observed, model.n_hidden, model.n_observations  # noqa: E741
    n = 4000
    returns = np.zeros(n)
    for e in range(n):
        x = int(rng.choice(X, p=model.x0))
        b = model.b0[x].copy()
        s = int(rng.choice(S, p=b))
        for t in range(H):
            a = pol.action(t, x, b)
            returns[e] += model.R_at(t)[a, x, s]
            joint = model.T_at(t)[a, x, s].reshape(X * S)
            k = int(rng.choice(X * S, p=joint))
            xp, sp = divmod(k, S)
            o = int(rng.choice(O, p=model.Z_at(t)[a, xp, sp]))
            y = (b @ model.T_at(t)[a, x][:, xp, :]) * model.Z_at(t)[a, xp, :, o]
            b, x, s = y / y.sum(), xp, sp
        returns[e] += model.R_final[x, s]
    se = returns.std(ddof=1) / np.sqrt(n)
    assert pol.lower_bound - 4 * se <= returns.mean() <= pol.upper_bound + 4 * se
