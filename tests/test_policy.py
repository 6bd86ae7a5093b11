"""AlphaVectorPolicy: evaluation, batched forms, .npz/JSON and SARSOP XML round trips, errors."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from brute_force import (
    ArrayModel,
    belief_tree_value,
    evaluate_policy_exact,
    exact_value,
    exact_value_iteration,
    policy_tree_alphas,
    random_pomdp,
    tiger,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trim_pomdp.engine.policy import FORMAT_VERSION, AlphaVectorPolicy
from trim_pomdp.errors import PolicyFormatError

# ---------------------------------------------------------------------------- evaluation


def test_value_and_action_known():
    pol = AlphaVectorPolicy([[1.0, 0.0], [0.0, 1.0], [0.6, 0.6]], [0, 1, 2])
    assert pol.value([0.3, 0.7]) == pytest.approx(0.7)
    assert pol.action([0.3, 0.7]) == 1
    assert pol.action([0.5, 0.5]) == 2  # 0.6 beats 0.5
    assert pol.value([0.5, 0.5]) == pytest.approx(0.6)
    assert pol.action([0.9, 0.1]) == 0
    assert pol.best_vector([0.9, 0.1]) == 0
    assert (pol.n_vectors, pol.n_states, len(pol)) == (3, 2, 3)


def test_ties_go_to_lowest_index():
    pol = AlphaVectorPolicy([[1.0, 0.0], [1.0, 0.0]], [5, 3])
    assert pol.action([1.0, 0.0]) == 5
    assert pol.actions_for([[1.0, 0.0]]).tolist() == [5]


def test_batched_equals_single():
    rng = np.random.default_rng(0)
    alphas = rng.normal(size=(7, 4))
    pol = AlphaVectorPolicy(alphas, rng.integers(0, 3, size=7))
    B = rng.dirichlet(np.ones(4), size=50)
    # Same numbers up to BLAS rounding (matrix-matrix vs matrix-vector products).
    np.testing.assert_allclose(pol.values(B), [pol.value(b) for b in B], rtol=1e-14, atol=1e-15)
    assert np.array_equal(pol.actions_for(B), np.array([pol.action(b) for b in B]))
    assert pol.actions_for(B).dtype == np.int64
    assert pol.values(np.zeros((0, 4))).shape == (0,)
    assert pol.actions_for(np.zeros((0, 4))).shape == (0,)


def test_arrays_are_read_only_copies():
    alphas = np.array([[1.0, 2.0]])
    pol = AlphaVectorPolicy(alphas, [0])
    alphas[0, 0] = 99.0
    assert pol.alphas[0, 0] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        pol.alphas[0, 0] = 3.0
    with pytest.raises(ValueError, match="read-only"):
        pol.actions[0] = 1


def test_exact_alpha_vectors_give_brute_force_value():
    # The exact finite-horizon value function, as a policy, evaluates to the brute-force
    # expectimax value at random beliefs.
    rng = np.random.default_rng(3)
    m = random_pomdp(rng, 3, 2, 2, discount=0.9)
    alphas, actions = exact_value_iteration(m.T, m.Z, m.R, m.discount, 3)
    pol = AlphaVectorPolicy(alphas, actions)
    for b in rng.dirichlet(np.ones(3), size=5):
        assert pol.value(b) == pytest.approx(
            belief_tree_value(m.T, m.Z, m.R, m.discount, b, 3), abs=1e-9
        )


def test_tiger_horizon_one_policy():
    # Horizon 1: the alpha vectors are the reward rows; listen (-1) beats opening (-45)
    # at the uniform belief, and opening the other door wins once confident.
    m = tiger()
    pol = AlphaVectorPolicy(m.R, [0, 1, 2], action_names=m.action_names)
    assert pol.action(m.b0) == 0
    assert pol.value(m.b0) == -1.0
    assert pol.action([0.99, 0.01]) == 2  # tiger left -> open right
    assert pol.action_names == ["listen", "open-left", "open-right"]


# ---------------------------------------------------------------------------- input errors


@pytest.mark.parametrize(
    ("alphas", "actions", "exc", "match"),
    [
        ([1.0, 2.0], [0], ValueError, r"alphas must be a 2-D array .* got shape \(2,\)"),
        (np.zeros((0, 2)), [], ValueError, "at least one vector"),
        ([[1.0, np.nan]], [0], ValueError, r"alphas must be finite; alphas\[0, 1\] = nan"),
        (
            [[1.0, 2.0]],
            [0, 1],
            ValueError,
            r"actions must have shape \(n_vectors,\) = \(1,\); got \(2,\)",
        ),
        ([[1.0, 2.0]], [-1], ValueError, r"actions must be >= 0; actions\[0\] = -1"),
        ([[1.0, 2.0]], [0.5], ValueError, "integer action indices"),
        ([["a", "b"]], [0], TypeError, "real numeric"),
    ],
)
def test_constructor_errors(alphas, actions, exc, match):
    with pytest.raises(exc, match=match):
        AlphaVectorPolicy(alphas, actions)


def test_action_names_must_cover_actions():
    with pytest.raises(ValueError, match=r"actions\[1\] = 2 but only 2 action names given"):
        AlphaVectorPolicy([[0.0], [1.0]], [0, 2], action_names=["a", "b"])
    with pytest.raises(TypeError, match="not a single str"):
        AlphaVectorPolicy([[0.0]], [0], action_names="ab")


def test_belief_shape_errors():
    pol = AlphaVectorPolicy([[1.0, 0.0]], [0])
    with pytest.raises(ValueError, match=r"b must have shape \(n_states,\) = \(2,\); got \(3,\)"):
        pol.value([0.2, 0.3, 0.5])
    with pytest.raises(
        ValueError, match=r"B must have shape \(n_beliefs, n_states\) = \(N, 2\); got \(2,\)"
    ):
        pol.values([0.5, 0.5])


def test_metadata_must_be_json():
    with pytest.raises(TypeError, match="JSON-serialisable"):
        AlphaVectorPolicy([[0.0]], [0], metadata={"x": object()})


# ---------------------------------------------------------------------------- check_model


def test_check_model():
    m = tiger()
    good = AlphaVectorPolicy(m.R, [0, 1, 2], action_names=m.action_names)
    assert good.check_model(m) is good
    with pytest.raises(
        PolicyFormatError, match="alpha vectors have length 3 but the model has 2 states"
    ):
        AlphaVectorPolicy(np.zeros((1, 3)), [0]).check_model(m)
    with pytest.raises(
        PolicyFormatError,
        match=r"alpha vector 1 has action 3 but the model has 3 actions \(valid indices 0..2\)",
    ):
        AlphaVectorPolicy(np.zeros((2, 2)), [0, 3]).check_model(m)
    with pytest.raises(PolicyFormatError, match="action names"):
        AlphaVectorPolicy(m.R, [0, 1, 2], action_names=["l", "ol", "or"]).check_model(m)


# ---------------------------------------------------------------------------- .npz + JSON

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def policies(draw):
    k = draw(st.integers(1, 6))
    s = draw(st.integers(1, 5))
    alphas = draw(hnp.arrays(np.float64, (k, s), elements=finite))
    actions = draw(hnp.arrays(np.int64, (k,), elements=st.integers(0, 4)))
    names = draw(st.one_of(st.none(), st.just([f"act {i} é" for i in range(5)])))
    return AlphaVectorPolicy(alphas, actions, action_names=names)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pol=policies())
def test_save_load_round_trip_exact(tmp_path, pol):
    path = pol.save(tmp_path / "p.npz")
    back = AlphaVectorPolicy.load(path)
    assert back.alphas.tobytes() == pol.alphas.tobytes()  # bit-exact, incl. -0.0
    assert np.array_equal(back.actions, pol.actions)
    assert back.action_names == pol.action_names


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pol=policies())
def test_sarsop_round_trip_exact(tmp_path, pol):
    path = pol.to_sarsop_policy(tmp_path / "p.policy", model='x<&>"y.pomdp')
    back = AlphaVectorPolicy.from_sarsop_policy(path)
    assert back.alphas.tobytes() == pol.alphas.tobytes()
    assert np.array_equal(back.actions, pol.actions)
    assert back.metadata["model"] == 'x<&>"y.pomdp'


def test_save_appends_suffix_and_keeps_metadata(tmp_path):
    pol = AlphaVectorPolicy([[1.0, 2.0]], [0], metadata={"lower_bound": 19.37, "problem": "t"})
    path = pol.save(tmp_path / "policy")
    assert path.name == "policy.npz" and path.exists()
    back = AlphaVectorPolicy.load(path)
    assert back.metadata == {"lower_bound": 19.37, "problem": "t"}
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["metadata_json"]))
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["kind"] == "trim_pomdp.AlphaVectorPolicy"


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _meta(**over):
    meta = {
        "format_version": 1,
        "kind": "trim_pomdp.AlphaVectorPolicy",
        "n_vectors": 1,
        "n_states": 2,
        "action_names": None,
        "metadata": {},
    }
    meta.update(over)
    return np.array(json.dumps(meta))


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"alphas": np.zeros((1, 2))}, "missing actions, metadata_json"),
        (
            {
                "alphas": np.zeros((1, 2)),
                "actions": np.zeros(1, np.int64),
                "metadata_json": np.array("{not json"),
            },
            r"bad\.npz: 'metadata_json' is not valid JSON \(Expecting property name",
        ),
        (
            {
                "alphas": np.zeros((1, 2)),
                "actions": np.zeros(1, np.int64),
                "metadata_json": _meta(format_version=2),
            },
            "format_version 2 is not supported",
        ),
        (
            {
                "alphas": np.zeros((1, 2)),
                "actions": np.zeros(1, np.int64),
                "metadata_json": _meta(kind="other"),
            },
            r"bad\.npz: field 'kind' is 'other'; expected 'trim_pomdp\.AlphaVectorPolicy'$",
        ),
        (
            {
                "alphas": np.zeros((1, 2)),
                "actions": np.zeros(1, np.int64),
                "metadata_json": _meta(format_version=None),
            },
            r"bad\.npz: format_version None is not supported \(this trim_pomdp reads 1\)$",
        ),
        (
            {
                "alphas": np.zeros((1, 3)),
                "actions": np.zeros(1, np.int64),
                "metadata_json": _meta(),
            },
            r"metadata says \(n_vectors, n_states\) = \(1, 2\) but alphas has shape \(1, 3\)",
        ),
        (
            {
                # float32 is a policy of a single-precision solve; half precision is not
                "alphas": np.zeros((1, 2), np.float16),
                "actions": np.zeros(1, np.int64),
                "metadata_json": _meta(),
            },
            r"alphas must be a float64 \(or float32\) 2-D array; got float16",
        ),
        (
            {
                "alphas": np.array([[np.inf, 0.0]]),
                "actions": np.zeros(1, np.int64),
                "metadata_json": _meta(),
            },
            "alphas must be finite",
        ),
        (
            {"alphas": np.zeros((1, 2)), "actions": np.array([-2]), "metadata_json": _meta()},
            "actions must be >= 0",
        ),
        (
            {"alphas": np.zeros((1, 2)), "actions": np.array([0.0]), "metadata_json": _meta()},
            "actions must be an integer array",
        ),
    ],
)
def test_load_errors(tmp_path, arrays, match):
    path = _write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(PolicyFormatError, match=match):
        AlphaVectorPolicy.load(path)


def test_load_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(
        path,
        alphas=np.array([[1.0]]),
        actions=np.array([0], dtype=object),
        metadata_json=_meta(n_states=1),
    )
    with pytest.raises(PolicyFormatError, match=r"evil\.npz: cannot read policy file \(truncated "
                       r"or corrupt\?\): ValueError: Object arrays cannot be loaded"):
        AlphaVectorPolicy.load(path)


def test_load_not_an_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(PolicyFormatError, match=r"junk\.npz: cannot read policy file \(truncated "
                       r"or corrupt\?\): BadZipFile"):
        AlphaVectorPolicy.load(path)
    with zipfile.ZipFile(tmp_path / "trunc.npz", "w") as zf:
        zf.writestr("alphas.npy", b"\x93NUMPY garbage")
    with pytest.raises(PolicyFormatError):
        AlphaVectorPolicy.load(tmp_path / "trunc.npz")


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r"nope\.npz: cannot read policy file: no such file"):
        AlphaVectorPolicy.load(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="policy file not found"):
        AlphaVectorPolicy.from_sarsop_policy(tmp_path / "nope.policy")


# ---------------------------------------------------------------------------- SARSOP XML

# As written by SARSOP's pomdpsol for tiger.95 (values abbreviated), incl. a sparse vector.
SARSOP_TEXT = """<?xml version="1.0" encoding="ISO-8859-1"?>

<Policy version="0.1" type="value" model="tiger.95.POMDP" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xsi:noNamespaceSchemaLocation="policyx.xsd">
<AlphaVector vectorLength="2" numObsValue="1" numVectors="3">
<Vector action="0" obsValue="0">-81.5975 3.01448 </Vector>
<Vector action="1" obsValue="0">19.3711 19.3711 </Vector>
<SparseVector action="2" obsValue="0"><Entry>1 7.5</Entry></SparseVector>
</AlphaVector> </Policy>
"""


def test_read_sarsop_file(tmp_path):
    path = tmp_path / "tiger.policy"
    path.write_text(SARSOP_TEXT, encoding="iso-8859-1")
    pol = AlphaVectorPolicy.from_sarsop_policy(
        path, action_names=["listen", "open-left", "open-right"]
    )
    np.testing.assert_array_equal(pol.alphas, [[-81.5975, 3.01448], [19.3711, 19.3711], [0.0, 7.5]])
    assert pol.actions.tolist() == [0, 1, 2]
    assert pol.metadata == {"source": "sarsop", "model": "tiger.95.POMDP"}
    assert pol.action([0.5, 0.5]) == 1


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("<Policy><AlphaVector", "malformed XML"),
        ("<Foo/>", "root element is <Foo>; expected <Policy>"),
        ('<Policy type="value"></Policy>', "no <AlphaVector> element"),
        ('<Policy type="action"/>', "only 'value' is supported"),
        (
            '<Policy><AlphaVector vectorLength="2" numObsValue="1" numVectors="2">'
            '<Vector action="0" obsValue="0">1 2</Vector></AlphaVector></Policy>',
            "numVectors=2 but 1 vectors found",
        ),
        (
            '<Policy><AlphaVector vectorLength="3" numObsValue="1" numVectors="1">'
            '<Vector action="0" obsValue="0">1 2</Vector></AlphaVector></Policy>',
            "vector 0: has 2 entries; vectorLength is 3",
        ),
        (
            '<Policy><AlphaVector vectorLength="2" numObsValue="2" numVectors="1">'
            '<Vector action="0" obsValue="1">1 2</Vector></AlphaVector></Policy>',
            "only flat POMDP policies",
        ),
        (
            '<Policy><AlphaVector vectorLength="2" numObsValue="1" numVectors="1">'
            '<Vector action="0" obsValue="0">1 x</Vector></AlphaVector></Policy>',
            "vector 0: bad number",
        ),
        (
            '<Policy><AlphaVector vectorLength="2" numObsValue="1" numVectors="1">'
            '<Vector action="zero" obsValue="0">1 2</Vector></AlphaVector></Policy>',
            "attribute action='zero' is not an integer",
        ),
        (
            '<Policy><AlphaVector vectorLength="2" numObsValue="1" numVectors="1">'
            '<Vector obsValue="0">1 2</Vector></AlphaVector></Policy>',
            "lacks attribute action",
        ),
        (
            '<Policy><AlphaVector vectorLength="2" numObsValue="1" numVectors="1">'
            '<Vector action="0" obsValue="0">1 nan</Vector></AlphaVector></Policy>',
            "non-finite value",
        ),
        (
            '<Policy><AlphaVector vectorLength="2" numObsValue="1" numVectors="1">'
            '<SparseVector action="0" obsValue="0"><Entry>5 1.0</Entry></SparseVector>'
            "</AlphaVector></Policy>",
            r"sparse index 5 outside 0..1",
        ),
        (
            '<Policy><AlphaVector vectorLength="2" numObsValue="1" numVectors="0">'
            "</AlphaVector></Policy>",
            "the policy has no vectors",
        ),
        (
            '<!DOCTYPE lol [<!ENTITY a "aaaa">]><Policy/>',
            "DTD/entity declarations are not allowed",
        ),
    ],
)
def test_sarsop_errors(tmp_path, text, match):
    path = tmp_path / "bad.policy"
    path.write_text(text)
    with pytest.raises(PolicyFormatError, match=match):
        AlphaVectorPolicy.from_sarsop_policy(path)


def test_sarsop_unknown_action_caught_by_check_model(tmp_path):
    # An action index the model does not have is only detectable against the model.
    path = tmp_path / "p.policy"
    path.write_text(
        '<Policy><AlphaVector vectorLength="2" numObsValue="1" numVectors="1">'
        '<Vector action="7" obsValue="0">1 2</Vector></AlphaVector></Policy>'
    )
    pol = AlphaVectorPolicy.from_sarsop_policy(path)
    with pytest.raises(
        PolicyFormatError, match="alpha vector 0 has action 7 but the model has 3 actions"
    ):
        pol.check_model(tiger())


def test_array_model_stand_in_has_pomdp_attributes():
    m = tiger()
    assert isinstance(m, ArrayModel)
    assert (m.n_states, m.n_actions, m.n_observations) == (2, 3, 2)


# ---------------------------------------------------------------------------- brute-force helper
# tests/brute_force.py is reused by other pieces' tests: its three routes must agree.


def test_brute_force_tiger_hand_values():
    m = tiger()
    # H=1: listen (-1) beats opening (-45).  H=2: listen twice (-1.95) beats anything else.
    assert belief_tree_value(m.T, m.Z, m.R, 0.95, m.b0, 1) == -1.0
    assert belief_tree_value(m.T, m.Z, m.R, 0.95, m.b0, 2) == pytest.approx(-1.95, abs=1e-12)
    assert exact_value(m.T, m.Z, m.R, 0.95, m.b0, 2) == pytest.approx(-1.95, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_brute_force_routes_agree(seed):
    rng = np.random.default_rng(seed)
    m = random_pomdp(rng, 3, 2, 2, discount=0.95, sparsity=0.3 * (seed % 2))
    for H in (1, 2, 3):
        v_tree = belief_tree_value(m.T, m.Z, m.R, m.discount, m.b0, H)
        al, _ = policy_tree_alphas(m.T, m.Z, m.R, m.discount, H)
        assert al.shape[0] == {1: 2, 2: 2 * 2**2, 3: 2 * 8**2}[H]  # A * trees^O
        assert np.max(al @ m.b0) == pytest.approx(v_tree, abs=1e-10)
        assert exact_value(m.T, m.Z, m.R, m.discount, m.b0, H) == pytest.approx(v_tree, abs=1e-10)


def test_brute_force_time_indexed_and_terminal_reward():
    rng = np.random.default_rng(5)
    H = 3
    ms = [random_pomdp(rng, 2, 2, 2) for _ in range(H)]
    T = np.stack([m.T for m in ms])
    Z = np.stack([m.Z for m in ms])
    R = np.stack([m.R for m in ms])
    rf = np.array([1.0, -2.0])
    b0 = np.array([0.3, 0.7])
    v = belief_tree_value(T, Z, R, 1.0, b0, H, R_final=rf)
    assert exact_value(T, Z, R, 1.0, b0, H, R_final=rf) == pytest.approx(v, abs=1e-10)
    al, _ = policy_tree_alphas(T, Z, R, 1.0, H, R_final=rf)
    assert np.max(al @ b0) == pytest.approx(v, abs=1e-10)
    # the optimal policy's own exact evaluation (non-stationary here, so done by hand at H=1)
    assert belief_tree_value(T[-1:], Z[-1:], R[-1:], 1.0, b0, 1, R_final=rf) == pytest.approx(
        max(b0 @ R[-1, a] + b0 @ T[-1, a] @ rf for a in range(2)), abs=1e-12
    )
    with pytest.raises(ValueError, match="time-indexed T has 3 epochs; horizon=2"):
        belief_tree_value(T, Z, R, 1.0, b0, 2)


def test_exact_policy_evaluation_of_optimal_first_step():
    # For H=1 the exact evaluation of the greedy policy equals the optimal 1-step value.
    rng = np.random.default_rng(9)
    m = random_pomdp(rng, 3, 3, 2)
    alphas, actions = exact_value_iteration(m.T, m.Z, m.R, m.discount, 1)
    pol = AlphaVectorPolicy(alphas, actions)
    assert evaluate_policy_exact(m.T, m.Z, m.R, m.discount, m.b0, 1, pol.action) == pytest.approx(
        belief_tree_value(m.T, m.Z, m.R, m.discount, m.b0, 1), abs=1e-12
    )
