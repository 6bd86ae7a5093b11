"""Sparse storage of T and Z (compressed rows) against the dense path, and the benchmark
generators (benchmarks/gen_pomdp.py).

* the parser's sparse rows hold exactly the dense parse's values (override semantics,
  wildcards, whole rows, zeros), on crafted text and on every shared file;
* solves of the same model held densely and sparsely are bit-identical (bounds, vectors,
  actions) at a fixed number of trials; so are single backups;
* errors: the same validation messages at the same lines; a statement that would take the
  rows over max_memory_mb is refused before it writes; malformed rows are typed errors;
* the generators: RockSample[4,4] reproduces the shared file's arrays and its value 17.9245;
  a RockSample[5,5] solves in CI time with a policy whose simulated return backs its bound.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, shared_path

from trim_pomdp import _core
from trim_pomdp.engine.model import POMDP
from trim_pomdp.engine.solver import SolverConfig, _solve_arrays, solve_info
from trim_pomdp.errors import MemoryLimitError, ModelValidationError, PomdpFormatError


def _gen():
    spec = importlib.util.spec_from_file_location("gen_pomdp", REPO / "benchmarks" / "gen_pomdp.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _same_model(a: POMDP, b: POMDP) -> None:
    for x, y in zip(a.T_csr[:3], b.T_csr[:3], strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.Z_csr[:3], b.Z_csr[:3], strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.T_csr[3] == b.T_csr[3] and a.Z_csr[3] == b.Z_csr[3]
    np.testing.assert_array_equal(a.R, b.R)
    np.testing.assert_array_equal(a.b0, b.b0)
    assert a.discount == b.discount
    assert (a.state_names, a.action_names, a.observation_names) == (
        b.state_names, b.action_names, b.observation_names)


def _same_solve(a: POMDP, b: POMDP, iterations: int) -> None:
    cfg = SolverConfig(time_limit=1e6, max_iterations=iterations, target_gap=1e-12, n_threads=1)
    pa, ia = solve_info(a, cfg)
    pb, ib = solve_info(b, cfg)
    assert ia.lower_bound == ib.lower_bound and ia.upper_bound == ib.upper_bound
    assert ia.iterations == ib.iterations == iterations
    np.testing.assert_array_equal(pa.alphas, pb.alphas)
    np.testing.assert_array_equal(pa.actions, pb.actions)


def _random_model(seed: int, S: int = 9, A: int = 3, O: int = 4, density: float = 0.3):  # noqa: E741
    rng = np.random.default_rng(seed)
    T = rng.random((A, S, S)) * (rng.random((A, S, S)) < density)
    T[:, np.arange(S), rng.integers(0, S, S)] += 0.5  # every row has an entry
    T /= T.sum(axis=2, keepdims=True)
    Z = rng.random((A, S, O)) * (rng.random((A, S, O)) < 0.5)
    Z[:, :, 0] += 0.1
    Z /= Z.sum(axis=2, keepdims=True)
    R = rng.normal(size=(A, S))
    b0 = rng.random(S) * (rng.random(S) < 0.6) + 1e-3
    return POMDP(T, Z, R, 0.95, b0 / b0.sum())


# ----------------------------------------------------------------------------- parser


TEXT = """discount: 0.9
values: reward
states: a b c d
actions: x y
observations: o1 o2 o3
start: 0.5 0.5 0 0
T: * : * uniform
T: x : a : b 0.0
T: x : a : c 0.25
T: x : a : d 0.25
T: x : a : a 0.5
T: y identity
T: y : b 0 0 1 0
T: * : d : * 0
T: * : d : d 1
O: * : * : o1 1.0
O: x : c 0.2 0.3 0.5
O: y uniform
O: y : a : o1 0.5
O: y : a : o2 0.0
O: y : a : o3 0.5
R: x : a : * : * 1.5
R: y : * : c : o2 -4
R: * : d : * : * 2
"""


def test_sparse_parse_holds_the_dense_values():
    dense = POMDP.from_string(TEXT, "t", storage="dense")
    sparse = POMDP.from_string(TEXT, "t", storage="sparse")
    assert dense.storage == "dense" and sparse.storage == "sparse"
    np.testing.assert_array_equal(sparse.T, dense.T)
    np.testing.assert_array_equal(sparse.Z, dense.Z)
    np.testing.assert_array_equal(sparse.R, dense.R)
    # the later zero removed T[x, a, b]; the rows hold no zeros
    ptr, idx, val, n = sparse.T_csr
    assert n == 4 and list(idx[ptr[0]:ptr[1]]) == [0, 2, 3] and np.all(val != 0)
    assert dense.T[0, 0].tolist() == [0.5, 0.0, 0.25, 0.25]
    _same_model(dense, sparse)


def test_sparse_rows_compact_many_overrides_of_one_entry():
    head = "discount: 0.9\nstates: 3\nactions: 1\nobservations: 1\nO: * uniform\nT: * identity\n"
    text = head + "".join(f"T: 0 : 0 : {i % 3} {0.1 * (i % 2)}\n" for i in range(200))
    text += "T: 0 : 0 : 0 1\nT: 0 : 0 : 1 0\nT: 0 : 0 : 2 0\n"
    dense = POMDP.from_string(text, "t", storage="dense")
    sparse = POMDP.from_string(text, "t", storage="sparse")
    np.testing.assert_array_equal(sparse.T, dense.T)
    assert sparse.T_csr[0].tolist() == [0, 1, 2, 3]


def test_every_shared_file_parses_the_same_sparsely(pomdp_collection_dir):
    files = sorted(p for d in (pomdp_collection_dir, pomdp_collection_dir.parent / "problems",
                               pomdp_collection_dir.parent / "large")
                   for p in d.iterdir() if p.is_file() and p.suffix.lower() == ".pomdp")
    assert len(files) >= 60
    for path in files:
        dense = POMDP.from_file(path, storage="dense")
        sparse = POMDP.from_file(path, storage="sparse")
        _same_model(dense, sparse)
        np.testing.assert_array_equal(sparse.T, dense.T)
        # the sparse writer's text reads back to the same model
        _same_model(POMDP.from_string(sparse.to_string(), "rt"), dense)


def test_validation_messages_are_the_same_in_both_storages():
    bad = TEXT.replace("T: x : a : a 0.5", "T: x : a : a 0.4")
    for storage in ("dense", "sparse"):
        with pytest.raises(PomdpFormatError, match=r"^t:11: T\[a=0, s=0, :\] sums to 0\.9; "
                                                   r"expected 1 .*\(a=x, s=a\) \(row last set"):
            POMDP.from_string(bad, "t", storage=storage)
    over = TEXT.replace("O: y : a : o2 0.0", "O: y : a : o2 0.25")
    msgs = set()
    for storage in ("dense", "sparse"):
        with pytest.raises(PomdpFormatError) as e:
            POMDP.from_string(over, "t", storage=storage)
        msgs.add(str(e.value))
    assert msgs == {"t:21: Z[a=1, s'=0, :] sums to 1.25; expected 1 (tol 1e-05) (a=y, s'=a) "
                    "(row last set at this line)"}


def test_auto_storage_switches_by_size():
    assert POMDP.from_string(TEXT, "t").storage == "dense"
    # 3000 states x 2 actions: 137 MB dense, under 256 MiB -> dense; 12000: sparse
    for S, want in ((3000, "dense"), (12000, "sparse")):
        text = (f"discount: 0.9\nstates: {S}\nactions: 2\nobservations: 1\nT: * identity\n"
                "O: * uniform\n")
        d = _core.parse_pomdp(text, "t")
        assert d["storage"] == want


def test_sparse_statement_over_the_memory_limit_is_refused_before_it_writes():
    text = "discount: 0.9\nstates: 12000\nactions: 2\nobservations: 1\nO: * uniform\n"
    ok = POMDP.from_string(text + "T: * identity\n", "t", max_memory_mb=64)
    assert ok.storage == "sparse" and len(ok.T_csr[2]) == 24000
    with pytest.raises(MemoryLimitError, match=r"^t:6: model too large: this T: entry writes "
                                               r"288000000 probabilities.*max_memory_mb=64;"):
        POMDP.from_string(text + "T: * uniform\n", "t", max_memory_mb=64)
    # the header part alone over the limit: refused at the states: line
    with pytest.raises(MemoryLimitError, match=r"^t:2: model too large: .*row bookkeeping"):
        POMDP.from_string(text, "t", max_memory_mb=0.5)


def test_dense_view_of_a_huge_sparse_model_is_a_typed_error():
    text = "discount: 0.9\nstates: 100000\nactions: 1\nobservations: 1\nT: * identity\n"
    m = POMDP.from_string(text + "O: * uniform\n", "big")
    assert m.storage == "sparse" and m.n_states == 100000
    with pytest.raises(MemoryLimitError, match=r"dense T of shape \(1, 100000, 100000\) would "
                                               r"take 76293\.9 MB.*use T_csr"):
        m.T  # noqa: B018


def test_from_csr_rejects_malformed_rows():
    m = _random_model(0)
    ptr, idx, val, n = m.T_csr
    r = int(np.flatnonzero(np.diff(ptr) >= 2)[0])
    bad = idx.copy()
    k = ptr[r]
    bad[[k, k + 1]] = bad[[k + 1, k]]  # columns out of order in row r
    with pytest.raises(ModelValidationError, match=rf"T: row {r} columns are not strictly"):
        POMDP.from_csr((ptr, bad, val, n), m.Z_csr, m.R, m.discount, m.b0)
    with pytest.raises(ModelValidationError, match=r"T_csr column indices must be in \[0, 9\)"):
        POMDP.from_csr((ptr, idx + 9, val, n), m.Z_csr, m.R, m.discount, m.b0)
    with pytest.raises(ModelValidationError, match=r"T_csr must have 28 row offsets"):
        POMDP.from_csr((ptr[:-1], idx, val, n), m.Z_csr, m.R, m.discount, m.b0)
    v2 = val.copy()
    v2[0] += 0.1
    with pytest.raises(ModelValidationError, match=r"^T\[a=0, s=0, :\] sums to 1\.1"):
        POMDP.from_csr((ptr, idx, v2, n), m.Z_csr, m.R, m.discount, m.b0)


# ----------------------------------------------------------------------------- solver


@pytest.mark.parametrize("seed", range(6))
def test_random_models_solve_bit_identically_dense_and_sparse(seed):
    dense = _random_model(seed)
    sparse = dense.to_sparse()
    assert sparse.storage == "sparse"
    np.testing.assert_array_equal(sparse.T, dense.T)
    _same_solve(dense, sparse, 40)


@pytest.mark.parametrize("seed", range(4))
def test_backup_is_the_same_from_dense_arrays_and_rows(seed):
    dense = _random_model(seed)
    sparse = dense.to_sparse()
    rng = np.random.default_rng(seed)
    alphas = rng.normal(size=(5, dense.n_states))
    actions = rng.integers(0, dense.n_actions, 5)
    b = rng.random(dense.n_states)
    b /= b.sum()
    x = _core._hsvi_backup(dense.T, dense.Z, dense.R, dense.discount, alphas, actions, b)
    y = _core._hsvi_backup(sparse.T_csr, sparse.Z_csr, sparse.R, sparse.discount, alphas,
                           actions, b)
    for key in ("alpha", "q_lower", "q_upper", "fib"):
        np.testing.assert_array_equal(x[key], y[key])
    assert x["action"] == y["action"]


@pytest.mark.parametrize("name", ["problems/RockSample_4_4.pomdp", "problems/hallway.POMDP",
                                  "problems/network.POMDP", "large/TagAvoid.pomdp"])
def test_shared_problems_solve_bit_identically_dense_and_sparse(name):
    path = shared_path("pomdp", *name.split("/"))
    _same_solve(POMDP.from_file(path, storage="dense"), POMDP.from_file(path, storage="sparse"),
                60)


def test_sparse_model_over_the_solver_memory_limit_is_refused():
    m = _random_model(1).to_sparse()
    with pytest.raises(MemoryLimitError, match=r"^the solver needs at least .* above "
                                               r"max_memory_mb=0\.001;"):
        solve_info(m, SolverConfig(max_memory_mb=0.001))
    T, Z = m.T_csr, m.Z_csr
    with pytest.raises(MemoryLimitError, match=r"^solver storage reached .* above max_memory_mb="):
        _solve_arrays(T, Z, m.R, m.discount, m.b0,
                      SolverConfig(max_memory_mb=0.02, time_limit=60, target_gap=1e-12))


def test_binding_rejects_mixed_storage():
    m = _random_model(2)
    with pytest.raises(ValueError, match="T and Z must both be dense arrays or both"):
        _core.solve_pomdp(m.T_csr, m.Z, m.R, m.discount, m.b0, time_limit=1, target_gap=1e-3,
                          max_iterations=1, max_memory_mb=100, n_threads=1)


# ----------------------------------------------------------------------------- generators


def test_rocksample_4_4_reproduces_the_shared_file(pomdp_problems_dir):
    gen = _gen()
    ours = POMDP.from_string(gen.rocksample(4, 4, two_observations=True), "gen")
    ref = POMDP.from_file(pomdp_problems_dir / "RockSample_4_4.pomdp")
    assert set(ours.state_names) == set(ref.state_names)
    ps = [ours.state_names.index(n) for n in ref.state_names]
    pa = [ours.action_names.index(n) for n in ref.action_names]
    po = [ours.observation_names.index(n) for n in ref.observation_names]
    np.testing.assert_array_equal(ours.T[np.ix_(pa, ps, ps)], ref.T)
    np.testing.assert_array_equal(ours.R[np.ix_(pa, ps)], ref.R)
    np.testing.assert_array_equal(ours.b0[ps], ref.b0)
    # the shared file prints probabilities with 6 decimals
    np.testing.assert_allclose(ours.Z[np.ix_(pa, ps, po)], ref.Z, rtol=0, atol=5e-7)


def test_rocksample_4_4_value_with_three_observations():
    gen = _gen()
    m = POMDP.from_string(gen.rocksample(4, 4), "gen")
    assert (m.n_states, m.n_actions, m.n_observations) == (257, 9, 3)
    _, info = solve_info(m, SolverConfig(time_limit=120, target_gap=1e-4))
    # ../shared/pomdp/README.md: SARSOP converges to 17.9245 on the 2-observation file
    assert info.lower_bound == pytest.approx(17.9245, abs=2e-4)
    assert info.upper_bound - info.lower_bound <= 1e-4


def test_rocksample_sizes_and_layouts():
    gen = _gen()
    start, rocks = gen.rocksample_layout(7, 8)
    assert start == (0, 3) and len(set(rocks)) == 8
    s1, r1 = gen.rocksample_layout(5, 5, "random", seed=3)
    assert (s1, r1) == gen.rocksample_layout(5, 5, "random", seed=3)
    assert s1 == (0, 2) and len(set(r1)) == 5 and s1 not in r1
    assert r1 != gen.rocksample_layout(5, 5, "random", seed=4)[1]
    with pytest.raises(ValueError, match=r"no standard layout for RockSample\[5,5\]"):
        gen.rocksample_layout(5, 5)
    head = gen.rocksample(7, 8).split("\nstart:")[0]
    assert len(head.split("states:")[1].split()) == 7 * 7 * 2**8 + 1 == 12545


def test_rocksample_5_5_solves_with_a_certified_bound():
    from trim_pomdp.engine.montecarlo import simulate

    gen = _gen()
    m = POMDP.from_string(gen.rocksample(5, 5, layout="random", seed=1), "rs55")
    assert (m.n_states, m.n_actions, m.n_observations) == (801, 10, 3)
    policy, info = solve_info(m, SolverConfig(time_limit=10, target_gap=1e-3))
    assert info.lower_bound <= info.upper_bound
    assert policy.value(m.b0) == pytest.approx(info.lower_bound, abs=1e-9)
    sim = simulate(m, policy, episodes=2000, seed=3)
    assert sim.mean + sim.truncation_bound >= info.lower_bound - 4 * sim.stderr
    # the same file held sparsely: the same solve
    _same_solve(m, m.to_sparse(), 30)


def test_tag_grid_shape_and_opponent_moves():
    gen = _gen()
    m = POMDP.from_string(gen.tag(3, 2), "tag")
    C = 6
    assert (m.n_states, m.n_actions, m.n_observations) == (C * C + 1, 5, C + 1)
    names = m.state_names
    tag = m.action_names.index("tag")
    # robot at cell 0 (0,0) tags and misses the opponent at cell 2 (2,0): the opponent stays
    # (0.2) or moves north to (2,1), its only move that gets it no closer (west would)
    row = m.T[tag, names.index("r0o2")]
    assert row[names.index("r0o2")] == pytest.approx(0.2)
    assert row[names.index("r0o5")] == pytest.approx(0.8)
    assert math.isclose(row.sum(), 1.0)
    # robot moves north to (0,1): every move of the opponent at (2,0) gets it closer: it stays
    assert m.T[0, names.index("r0o2"), names.index("r3o2")] == 1.0
    assert m.T[tag, names.index("r4o4"), names.index("tagged")] == 1.0
    assert m.R[tag, names.index("r4o4")] == 10.0 and m.R[tag, names.index("r4o1")] == -10.0
    assert m.Z[0, names.index("r4o4"), m.observation_names.index("seen")] == 1.0


def test_generator_cli_writes_a_file_that_parses(tmp_path):
    gen = _gen()
    out = tmp_path / "rs.pomdp"
    assert gen.main(["rocksample", "3", "2", "--seed", "5", "-o", str(out)]) == 0
    m = POMDP.from_file(out)
    assert m.n_states == 3 * 3 * 4 + 1
    assert gen.main(["rocksample", "2", "9"]) == 2
    assert Path(out).read_text().startswith("# RockSample[3,2]")
