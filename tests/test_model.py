"""trim_pomdp.model.POMDP: validation on construction, the shared `.pomdp` files, and exact
round trips through the writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trim_pomdp import POMDP, ModelValidationError, PomdpFormatError
from trim_pomdp.model import FILE_TOL


def tiger_arrays():
    T = np.array([np.eye(2), np.full((2, 2), 0.5), np.full((2, 2), 0.5)])
    Z = np.array([[[0.85, 0.15], [0.15, 0.85]], np.full((2, 2), 0.5), np.full((2, 2), 0.5)])
    R = np.array([[-1.0, -1.0], [-100.0, 10.0], [10.0, -100.0]])
    return T, Z, R


def random_model(rng: np.random.Generator, S: int, A: int, O: int, sparse: float = 0.0):  # noqa: E741
    T = rng.random((A, S, S)) * (rng.random((A, S, S)) >= sparse)
    T[..., 0] += 1e-3  # no empty rows
    T /= T.sum(axis=2, keepdims=True)
    Z = rng.random((A, S, O))
    Z /= Z.sum(axis=2, keepdims=True)
    R = rng.normal(scale=10.0, size=(A, S))
    b0 = rng.random(S)
    b0 /= b0.sum()
    return T, Z, R, b0


def assert_same_model(m1: POMDP, m2: POMDP) -> None:
    for name in ("T", "Z", "R", "b0"):
        a, b = getattr(m1, name), getattr(m2, name)
        assert a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), f"{name} differs"  # bit for bit
    assert m1.discount == m2.discount
    assert m1.state_names == m2.state_names
    assert m1.action_names == m2.action_names
    assert m1.observation_names == m2.observation_names


# ---------------------------------------------------------------- construction
def test_construct_tiger():
    T, Z, R = tiger_arrays()
    m = POMDP(T, Z, R, 0.95, action_names=["listen", "open-left", "open-right"])
    assert (m.n_states, m.n_actions, m.n_observations) == (2, 3, 2)
    np.testing.assert_array_equal(m.b0, [0.5, 0.5])  # None -> uniform
    assert m.discount == 0.95 and m.tol == 1e-6
    assert m.action_names == ("listen", "open-left", "open-right")
    assert m.state_names is None
    for arr in (m.T, m.Z, m.R, m.b0):
        assert arr.dtype == np.float64 and arr.flags.c_contiguous and not arr.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        m.T[0, 0, 0] = 0.5
    assert repr(m) == "POMDP(n_states=2, n_actions=3, n_observations=2, discount=0.95)"


def test_inputs_are_copied():
    T, Z, R = tiger_arrays()
    m = POMDP(T, Z, R, 0.95)
    T[0, 0, 0] = 7.0
    assert m.T[0, 0, 0] == 1.0


def test_integer_and_list_inputs_become_float64():
    m = POMDP([[[1, 0], [0, 1]]], [[[1], [1]]], [[0, 1]], 1, b0=[1, 0])
    assert m.T.dtype == np.float64 and m.Z.shape == (1, 2, 1)
    assert m.discount == 1.0


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda T, Z, R: (T[:, :1], Z, R),
         r"^T must have shape \(n_actions, n_states, n_states\); got \(3, 1, 2\)$"),
        (lambda T, Z, R: (T, Z[:, :, 0], R),
         r"^Z must have shape \(n_actions, n_states, n_observations\) = \(3, 2, 2\); "
         r"got \(3, 2\)$"),
        (lambda T, Z, R: (T, Z[:2], R),
         r"^Z must have shape \(n_actions, n_states, n_observations\) = \(3, 2, 2\); "
         r"got \(2, 2, 2\)$"),
        (lambda T, Z, R: (T, Z, R[:, 0]),
         r"^R must have shape \(n_actions, n_states\) = \(3, 2\); got \(3,\)$"),
    ],
)
def test_shape_errors(change, message):
    T, Z, R = change(*tiger_arrays())
    with pytest.raises(ModelValidationError, match=message):
        POMDP(T, Z, R, 0.95)


def test_b0_shape_error():
    T, Z, R = tiger_arrays()
    with pytest.raises(ModelValidationError,
                       match=r"^b0 must have shape \(n_states\) = \(2,\); got \(3,\)$"):
        POMDP(T, Z, R, 0.95, b0=[0.2, 0.3, 0.5])


def test_row_sum_message_names_array_action_state_and_sum():
    rng = np.random.default_rng(0)
    T, Z, R, b0 = random_model(rng, 5, 3, 2)
    T[1, 3] = [0.5, 0.48, 0.0, 0.0, 0.0]
    with pytest.raises(ModelValidationError,
                       match=r"^T\[a=1, s=3, :\] sums to 0\.98; expected 1 \(tol 1e-06\)$"):
        POMDP(T, Z, R, 0.95, b0)
    # Within the tolerance it is accepted (and kept as given).
    T[1, 3] = [0.5, 0.5 - 5e-7, 0.0, 0.0, 0.0]
    assert POMDP(T, Z, R, 0.95, b0).T[1, 3, 1] == 0.5 - 5e-7
    with pytest.raises(ModelValidationError, match=r"sums to 0\.9999995; expected 1 \(tol 1e-07\)"):
        POMDP(T, Z, R, 0.95, b0, tol=1e-7)


def test_messages_carry_names_when_given():
    T, Z, R = tiger_arrays()
    Z[2, 1] = [0.5, 0.6]
    with pytest.raises(ModelValidationError,
                       match=r"^Z\[a=2, s'=1, :\] sums to 1\.1; expected 1 \(tol 1e-06\) "
                             r"\(a=open-right, s'=right\)$"):
        POMDP(T, Z, R, 0.95, state_names=["left", "right"],
              action_names=["listen", "open-left", "open-right"])


@pytest.mark.parametrize(
    "where,value,message",
    [
        (("T", (0, 1, 0)), -0.25, r"^T\[a=0, s=1, s'=0\] = -0\.25 is negative$"),
        (("T", (2, 0, 1)), np.nan, r"^T\[a=2, s=0, s'=1\] is nan; expected a finite probability$"),
        (("Z", (1, 1, 0)), np.inf, r"^Z\[a=1, s'=1, o=0\] is inf; expected a finite probability$"),
        (("R", (2, 1)), np.nan, r"^R\[a=2, s=1\] is nan; expected a finite number$"),
        (("R", (0, 0)), -np.inf, r"^R\[a=0, s=0\] is -inf; expected a finite number$"),
    ],
)
def test_non_finite_and_negative_entries(where, value, message):
    T, Z, R = tiger_arrays()
    arrays = {"T": T, "Z": Z, "R": R}
    arrays[where[0]][where[1]] = value
    with pytest.raises(ModelValidationError, match=message):
        POMDP(T, Z, R, 0.95)


@pytest.mark.parametrize(
    "b0,message",
    [
        ([0.5, 0.4], r"^b0 sums to 0\.9; expected 1 \(tol 1e-06\)$"),
        ([1.5, -0.5], r"^b0\[1\] = -0\.5 is negative$"),
        ([np.nan, 1.0], r"^b0\[0\] is nan; expected a finite probability$"),
    ],
)
def test_b0_errors(b0, message):
    with pytest.raises(ModelValidationError, match=message):
        POMDP(*tiger_arrays(), 0.95, b0)


@pytest.mark.parametrize("discount", [0.0, -0.5, 1.0000001, np.nan, np.inf])
def test_discount_must_be_in_0_1(discount):
    with pytest.raises(ModelValidationError, match=r"^discount must be in \(0, 1\]; got "):
        POMDP(*tiger_arrays(), discount)


def test_bad_arguments():
    T, Z, R = tiger_arrays()
    with pytest.raises(ModelValidationError, match=r"^discount must be a number; got 'x'$"):
        POMDP(T, Z, R, "x")
    with pytest.raises(ModelValidationError, match=r"^T must be an array of real numbers"):
        POMDP([[["a", "b"]]], Z, R, 0.9)
    with pytest.raises(ModelValidationError, match=r"^tol must be a finite number >= 0; got -1"):
        POMDP(T, Z, R, 0.9, tol=-1)
    with pytest.raises(ModelValidationError,
                       match=r"^state_names must have n_states = 2 entries; got 3$"):
        POMDP(T, Z, R, 0.9, state_names=["a", "b", "c"])
    with pytest.raises(ModelValidationError,
                       match=r"^action_names has a duplicate name 'x' \(indices 0 and 2\)$"):
        POMDP(T, Z, R, 0.9, action_names=["x", "y", "x"])
    with pytest.raises(ModelValidationError, match=r"^observation_names\[1\] must be a non-empty "
                                                   r"string; got 3"):
        POMDP(T, Z, R, 0.9, observation_names=["x", 3])
    with pytest.raises(ModelValidationError, match=r"^state_names must be a sequence of strings"):
        POMDP(T, Z, R, 0.9, state_names="ab")
    with pytest.raises(ModelValidationError, match=r"a model needs at least one action"):
        POMDP(np.zeros((0, 2, 2)), Z, R, 0.9)


# ---------------------------------------------------------------- writer / round trips
@pytest.mark.parametrize("seed", range(6))
def test_round_trip_random_models_bit_for_bit(seed, tmp_path):
    rng = np.random.default_rng(seed)
    S, A, O = (int(x) for x in rng.integers(1, 9, size=3))  # noqa: E741
    if seed % 2:
        S = int(rng.integers(30, 80))  # large and sparse: written as single entries
    T, Z, R, b0 = random_model(rng, S, A, O, sparse=0.9 if seed % 2 else 0.0)
    names = {}
    if seed % 3 == 0:
        names = dict(state_names=[f"s{i}-x_{i}" for i in range(S)],
                     action_names=[f"act{i}" for i in range(A)],
                     observation_names=[f"obs{i}" for i in range(O)])
    R[0, 0] = 0.0
    if S > 1:
        R[0, 1] = 1e-300 * rng.random()  # tiny numbers survive too
    m = POMDP(T, Z, R, float(rng.uniform(0.5, 1.0)), b0, **names)
    m2 = POMDP.from_string(m.to_string(), tol=1e-6)
    assert_same_model(m, m2)
    path = tmp_path / "m.pomdp"
    m.to_file(path)
    assert_same_model(m, POMDP.from_file(path))


@settings(max_examples=60, deadline=None)
@given(
    dims=st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 4)),
    seed=st.integers(0, 2**32 - 1),
    # |R| <= 1e90 and 1 / (1 - discount) <= 1e10 keep |R| / (1 - discount) within the 1e100
    # a model may have (_core.MAX_VALUE; larger rewards are refused, see test_hostile_input)
    rewards=st.lists(st.floats(min_value=-1e90, max_value=1e90, width=64), min_size=1,
                     max_size=20),
    discount=st.one_of(st.floats(min_value=1e-300, max_value=1.0 - 1e-10), st.just(1.0)),
)
def test_round_trip_property(dims, seed, rewards, discount):
    # Any admissible rewards (subnormals, -0.0, +-1e90) and any discount in (0, 1] survive
    # to_string/from_string bit for bit.
    S, A, O = dims  # noqa: E741
    rng = np.random.default_rng(seed)
    T, Z, _, b0 = random_model(rng, S, A, O, sparse=0.5)
    R = np.resize(np.array(rewards, dtype=np.float64), (A, S))
    m = POMDP(T, Z, R, discount, b0)
    assert_same_model(m, POMDP.from_string(m.to_string(), tol=1e-6))


def test_writer_compact_forms():
    T, Z, R = tiger_arrays()
    R[0] = 3.0
    text = POMDP(T, Z, R, 0.95, state_names=["l", "r"]).to_string()
    assert "R: 0 : * : * : * 3\n" in text  # constant row written once
    assert "R: 1 : l : * : * -100\n" in text
    assert "discount: 0.95\n" in text and "start: 0.5 0.5\n" in text
    R[1, 0] = 1e-5
    R[1, 1] = -2.5e90
    text = POMDP(T, Z, R, 0.95).to_string()
    assert "R: 1 : 0 : * : * 1.0e-05\n" in text  # exponent forms keep a decimal point
    assert "R: 1 : 1 : * : * -2.5e+90\n" in text


@pytest.mark.parametrize(
    "names,message",
    [
        (dict(state_names=["a b", "c"]), r"cannot write state name 'a b' \(index 0\)"),
        (dict(state_names=["1a", "c"]), r"cannot write state name '1a'"),
        (dict(state_names=["x:y", "c"]), r"cannot write state name 'x:y'"),
        (dict(state_names=["_a", "c"]), r"cannot write state name '_a'"),
        (dict(state_names=["a.b", "c"]), r"cannot write state name 'a\.b'"),
        (dict(action_names=["listen", "uniform", "x"]), r"cannot write action name 'uniform'"),
        (dict(observation_names=["T", "x"]), r"cannot write observation name 'T'"),
    ],
)
def test_writer_rejects_names_the_format_cannot_hold(names, message):
    m = POMDP(*tiger_arrays(), 0.95, **names)
    with pytest.raises(ValueError, match=message):
        m.to_string()


def test_from_string_type_error():
    with pytest.raises(TypeError, match="text must be str or bytes; got int"):
        POMDP.from_string(3)


# ---------------------------------------------------------------- the shared files
def shared_files(directory: Path) -> list[Path]:
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() == ".pomdp")
    assert files, f"no .pomdp files in {directory}"
    return files


def test_every_collection_file_parses_and_round_trips(pomdp_collection_dir):
    files = shared_files(pomdp_collection_dir)
    assert len(files) == 55
    for path in files:
        m = POMDP.from_file(path)
        assert m.tol == FILE_TOL
        for arr in (m.T, m.Z, m.R, m.b0):
            assert arr.dtype == np.float64 and arr.flags.c_contiguous and not arr.flags.writeable
        assert_same_model(m, POMDP.from_string(m.to_string(), path.name))
        # The constructor's validation accepts what the parser's validation accepted.
        rebuilt = POMDP(m.T, m.Z, m.R, m.discount, m.b0, state_names=m.state_names,
                        action_names=m.action_names, observation_names=m.observation_names,
                        tol=FILE_TOL)
        assert_same_model(m, rebuilt)


HEADLINE = {
    # file: (S, A, O, discount)
    "tiger.95.POMDP": (2, 3, 2, 0.95),
    "shuttle.95.POMDP": (8, 3, 5, 0.95),
    "cheese.95.POMDP": (11, 4, 7, 0.95),
    "4x3.95.POMDP": (11, 4, 6, 0.95),
    "4x4.95.POMDP": (16, 4, 2, 0.95),
    "network.POMDP": (7, 4, 2, 0.95),
    "RockSample_4_4.pomdp": (257, 9, 2, 0.95),
    "hallway.POMDP": (60, 5, 21, 0.95),
}


def test_every_problem_file_parses_with_reference_sizes(pomdp_problems_dir):
    files = shared_files(pomdp_problems_dir)
    assert sorted(p.name for p in files) == sorted(HEADLINE)
    for path in files:
        m = POMDP.from_file(path)
        S, A, O, discount = HEADLINE[path.name]  # noqa: E741
        assert (m.n_states, m.n_actions, m.n_observations, m.discount) == (S, A, O, discount)
        assert_same_model(m, POMDP.from_string(m.to_string(), path.name))


def test_tiger_file_known_arrays(pomdp_problems_dir):
    m = POMDP.from_file(pomdp_problems_dir / "tiger.95.POMDP")
    T, Z, R = tiger_arrays()
    np.testing.assert_array_equal(m.T, T)
    np.testing.assert_array_equal(m.Z, Z)
    np.testing.assert_array_equal(m.R, R)
    np.testing.assert_array_equal(m.b0, [0.5, 0.5])
    assert m.action_names == ("listen", "open-left", "open-right")


def test_rocksample_start_and_names(pomdp_problems_dir):
    m = POMDP.from_file(pomdp_problems_dir / "RockSample_4_4.pomdp")
    # Robot at (0, 2), the 16 rock configurations equally likely.
    assert np.count_nonzero(m.b0) == 16 and set(m.b0[m.b0 > 0]) == {0.0625}
    assert m.state_names[0] == "s000000" and m.state_names[-1] == "st"
    assert m.action_names == ("amn", "ame", "ams", "amw", "ac0", "ac1", "ac2", "ac3", "as")
    assert m.observation_names == ("ogood", "obad")


def test_successor_dependent_rewards_in_shared_files(pomdp_problems_dir, pomdp_collection_dir):
    # R: * : * : 10 : * 1.0 -> R(a, s) = T(10 | s, a), the probability of reaching the cheese.
    m = POMDP.from_file(pomdp_problems_dir / "cheese.95.POMDP")
    np.testing.assert_array_equal(m.R, m.T[:, :, 10])
    # hallway: reward 1 on reaching any of the goal states 56..59.
    m = POMDP.from_file(pomdp_problems_dir / "hallway.POMDP")
    np.testing.assert_allclose(m.R, m.T[:, :, 56:60].sum(axis=2), rtol=0, atol=1e-15)
    # shuttle: R: GoForward : 1 : 1 : * -3 (and the same for state 6), Backup : 3 : 0 : * 10.
    m = POMDP.from_file(pomdp_problems_dir / "shuttle.95.POMDP")
    go, backup = m.action_names.index("GoForward"), m.action_names.index("Backup")
    expected = np.zeros((3, 8))
    expected[go, 1] = -3 * m.T[go, 1, 1]
    expected[go, 6] = -3 * m.T[go, 6, 6]
    expected[backup, 3] = 10 * m.T[backup, 3, 0]
    np.testing.assert_array_equal(m.R, expected)
    # query.s2: rewards by observation -> R = T @ (Z @ r).
    m = POMDP.from_file(pomdp_collection_dir / "query.s2.POMDP")
    r = np.zeros(m.n_observations)
    for name, value in (("NoResponse", 0.0), ("FastResponse", 10.0), ("SlowResponse", 3.0)):
        r[m.observation_names.index(name)] = value
    np.testing.assert_allclose(m.R, np.einsum("ast,ato,o->as", m.T, m.Z, r), rtol=1e-14)


def test_cost_files_are_negated(pomdp_collection_dir):
    m = POMDP.from_file(pomdp_collection_dir / "ejs3.POMDP")  # values: cost
    np.testing.assert_array_equal(m.R, [[-4.0, 4.0], [0.0, 3.0]])
    assert m.discount == 1.0 and m.state_names is None


def test_start_include_in_shared_file(pomdp_collection_dir):
    m = POMDP.from_file(pomdp_collection_dir / "parr95.95.POMDP")  # start include: I
    np.testing.assert_array_equal(m.b0, np.eye(7)[m.state_names.index("I")])


def test_missing_start_is_uniform(pomdp_problems_dir):
    m = POMDP.from_file(pomdp_problems_dir / "network.POMDP")
    np.testing.assert_array_equal(m.b0, np.full(7, 1 / 7))


def test_six_decimal_files_need_the_file_tolerance(pomdp_problems_dir):
    path = pomdp_problems_dir / "4x4.95.POMDP"
    with pytest.raises(PomdpFormatError, match=r"4x4\.95\.POMDP:\d+: T\[a=0, s=15, :\] sums to "
                                               r"1\.000005; expected 1 \(tol 1e-06\)"):
        POMDP.from_file(path, tol=1e-6)
    assert POMDP.from_file(path).T[0, 15].sum() == pytest.approx(1.000005, abs=1e-12)
