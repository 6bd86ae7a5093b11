"""Every saved artefact goes through the one ``.npz`` + JSON format of
:class:`trim_pomdp._io.Artefact`; files in each class's on-disk layout keep loading.

For every class that saves: a save/load round trip, and a file this test builds by hand
(``np.savez`` of the arrays, the JSON text) in the exact layout the class wrote before the
format had one implementation -- so a change of the writer that old readers (or old files)
would not survive fails here, without committed binaries.  Then the shared checks: every
reader says the file, and what was expected and found, in one typed line.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trim_pomdp.engine.finite_policy import FiniteHorizonPolicy
from trim_pomdp.engine.policy import AlphaVectorPolicy
from trim_pomdp.errors import ModelValidationError, PolicyFormatError
from trim_pomdp.fit.observation import ObservationModel
from trim_pomdp.fit.transition import TransitionModel
from trim_pomdp.rl.agents import RLRouter
from trim_pomdp.rl.env import AGG_FEATURES
from trim_pomdp.rl.grid import RLRouterBank
from trim_pomdp.routing.bank import PolicyBank
from trim_pomdp.routing.latent_model import LatentTrimModel
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.routing.policy import TrimPolicy

# ----------------------------------------------------------------------------- builders

MODEL_ARRAYS = {
    "model_hazard": np.array([0.5, 1.0]),
    "model_obs_matrix": np.array([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8]]),
    "model_token_probs": np.array([1.0]),
    "model_strong_tokens": np.array([2.0]),
    "model_token_edges": np.zeros(0),  # inner bin edges
    "model_score_edges": np.array([0.5]),
    "model_min_edges": np.zeros(0),
}
MODEL_META = {"p_w": 0.8, "p_s": 0.9, "max_steps": 2, "uses_min": False}


def trim_model() -> TrimModel:
    return TrimModel._from_saved(MODEL_META, MODEL_ARRAYS)


def trim_policy(model, lam: float, seed: int) -> TrimPolicy:
    rng = np.random.default_rng(seed)
    n_blocks = model.horizon * model.n_observed
    return TrimPolicy(model=model, lam=lam, alphas=rng.normal(size=(n_blocks, model.n_hidden)),
                      actions=rng.integers(0, 2, n_blocks), offsets=np.arange(n_blocks + 1),
                      value_b0=0.25 + lam, upper_bound=0.5 + lam)


def bank_arrays(bank: PolicyBank) -> dict[str, np.ndarray]:
    """The arrays of a PolicyBank ``.npz``, as PolicyBank.save wrote them."""
    return {**bank.model._to_arrays(),
            "lambdas": np.asarray(bank.lambdas),
            "alphas": np.concatenate([p.alphas for p in bank.policies]),
            "actions": np.concatenate([p.actions for p in bank.policies]),
            "offsets": np.stack([p.offsets for p in bank.policies]),
            "counts": np.array([p.alphas.shape[0] for p in bank.policies], dtype=np.int64),
            "value_b0": np.array([p.value_b0 for p in bank.policies]),
            "upper_bound": np.array([p.upper_bound for p in bank.policies])}


def agg_params(hidden: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_in = len(AGG_FEATURES)
    return {"W0": rng.normal(size=(n_in, hidden)), "b0": rng.normal(size=hidden),
            "Wpi": rng.normal(size=(hidden, 2)), "bpi": rng.normal(size=2),
            "Wv": rng.normal(size=(hidden, 1)), "bv": rng.normal(size=1)}


def assert_same_bank(a: PolicyBank, b: PolicyBank) -> None:
    assert type(a.model) is type(b.model)
    np.testing.assert_array_equal(a.lambdas, b.lambdas)
    for p, q in zip(a.policies, b.policies, strict=True):
        np.testing.assert_array_equal(p.alphas, q.alphas)
        np.testing.assert_array_equal(p.actions, q.actions)
        np.testing.assert_array_equal(p.offsets, q.offsets)
        assert (p.value_b0, p.upper_bound) == (q.value_b0, q.upper_bound)


# ------------------------------------------------------------------- AlphaVectorPolicy

def test_alpha_vector_policy_round_trip_and_legacy_layout(tmp_path):
    pol = AlphaVectorPolicy([[1.0, -0.0], [0.5, 2.0]], [1, 0], action_names=["a", "b"],
                            metadata={"problem": "t", "lower_bound": 1.5})
    back = AlphaVectorPolicy.load(pol.save(tmp_path / "saved"))
    assert back.alphas.tobytes() == pol.alphas.tobytes()
    assert back.action_names == ["a", "b"] and back.metadata == pol.metadata
    # the layout: alphas, actions, metadata_json (sorted keys, as it was written)
    meta = {"action_names": ["a", "b"], "format_version": 1,
            "kind": "trim_pomdp.AlphaVectorPolicy", "metadata": {"problem": "t"},
            "n_states": 2, "n_vectors": 2}
    np.savez(tmp_path / "legacy.npz", alphas=np.array([[1.0, 0.0], [0.5, 2.0]]),
             actions=np.array([1, 0]), metadata_json=np.array(json.dumps(meta, sort_keys=True)))
    old = AlphaVectorPolicy.load(tmp_path / "legacy.npz")
    np.testing.assert_array_equal(old.alphas, [[1.0, 0.0], [0.5, 2.0]])
    np.testing.assert_array_equal(old.actions, [1, 0])
    assert old.action_names == ["a", "b"] and old.metadata == {"problem": "t"}


# ------------------------------------------------------------------- FiniteHorizonPolicy

def test_finite_horizon_policy_round_trip_and_legacy_layout(tmp_path):
    alphas, actions, offsets = np.array([[1.0, 2.0], [3.0, 0.5]]), [0, 1], [0, 1, 2]
    pol = FiniteHorizonPolicy(alphas, actions, offsets, horizon=1, n_observed=2,
                              lower_bound=0.25, upper_bound=0.75, gap=0.5)  # time_s NaN
    pol.save(tmp_path / "saved")  # ".npz" appended, as np.savez does
    back = FiniteHorizonPolicy.load(tmp_path / "saved.npz")
    np.testing.assert_array_equal(back.alphas, alphas)
    assert (back.lower_bound, back.upper_bound, back.gap) == (0.25, 0.75, 0.5)
    assert math.isnan(back.time_s)
    # the layout: alphas, actions, offsets, metadata (non-finite bounds written as NaN)
    meta = ('{"format_version": 1, "kind": "trim_pomdp.FiniteHorizonPolicy", "horizon": 1, '
            '"n_observed": 2, "n_hidden": 2, "lower_bound": NaN, "upper_bound": 0.75, '
            '"gap": NaN, "time_s": 0.125}')
    np.savez(tmp_path / "legacy.npz", alphas=alphas, actions=np.array(actions),
             offsets=np.array(offsets), metadata=np.array(meta))
    old = FiniteHorizonPolicy.load(tmp_path / "legacy.npz")
    assert (old.horizon, old.n_observed, old.n_hidden) == (1, 2, 2)
    assert math.isnan(old.lower_bound) and (old.upper_bound, old.time_s) == (0.75, 0.125)
    assert old.action(0, 1, [0.0, 1.0]) == 1


# ---------------------------------------------------------------------------- PolicyBank

@pytest.mark.parametrize("latent", [False, True], ids=["trim", "latent"])
def test_policy_bank_round_trip_and_legacy_layout(tmp_path, latent):
    model = trim_model()
    if latent:
        model = LatentTrimModel(model, p_w=[0.6, 0.9], p_s=[0.9, 0.95])
    bank = PolicyBank(model, [trim_policy(model, lam, i) for i, lam in enumerate((0.1, 0.01))],
                      default_lambda=0.1, target_cost_fraction=0.2)
    assert bank.save(tmp_path / "saved") == tmp_path / "saved.npz"
    back = PolicyBank.load(tmp_path / "saved")
    assert_same_bank(back, bank)
    assert (back.default_lambda, back.target_cost_fraction) == (0.1, 0.2)
    # the layout: <stem>.npz with model_* (and latent_*) arrays, a <stem>.json sidecar
    np.savez(tmp_path / "legacy.npz", **bank_arrays(bank))
    meta = {"format_version": 1, "kind": "trim_pomdp.PolicyBank", "n_policies": 2,
            "model": model._to_meta(), "lambdas": [0.01, 0.1], "default_lambda": 0.1}
    (tmp_path / "legacy.json").write_text(json.dumps(meta, indent=2) + "\n")
    old = PolicyBank.load(tmp_path / "legacy.npz")
    assert_same_bank(old, bank)
    assert (old.default_lambda, old.target_cost_fraction) == (0.1, None)
    from trim_pomdp.banks import load_bank

    assert_same_bank(load_bank(tmp_path / "legacy.npz"), bank)


# ----------------------------------------------------------------------------- RL banks

def test_rl_router_round_trip_and_legacy_layout(tmp_path):
    router = RLRouter("agg", agg_params(), lam=1e-3, token_scale=50.0, metadata={"it": 3})
    router.save(tmp_path / "saved")
    back = RLRouter.load(tmp_path / "saved.npz")
    assert (back.kind, back.lam, back.token_scale, back.metadata) == ("agg", 1e-3, 50.0,
                                                                      {"it": 3})
    for k, v in router.params.items():
        np.testing.assert_array_equal(back.params[k], v)
    # the layout: the weights by name and a "__meta__" JSON string whose "type" is the kind
    meta = {"format_version": 1, "type": "trim_pomdp.RLRouter", "kind": "agg", "lam": 2e-3,
            "token_scale": 40.0, "metadata": {"note": "trained"}}
    np.savez(tmp_path / "legacy.npz", __meta__=np.array(json.dumps(meta)), **agg_params())
    old = RLRouter.load(tmp_path / "legacy.npz")
    assert (old.kind, old.lam, old.token_scale) == ("agg", 2e-3, 40.0)
    assert old.metadata == {"note": "trained"}
    for k, v in agg_params().items():  # the same weights as `router`: the same decisions
        np.testing.assert_array_equal(old.params[k], v)
    old.reset()
    router.reset()
    for score in (0.9, 0.1, 0.5):
        assert old.step(score, 10, False) == router.step(score, 10, False)


def test_rl_router_bank_round_trip_and_legacy_layout(tmp_path):
    routers = [RLRouter("agg", agg_params(seed=i), lam=lam) for i, lam in enumerate((1e-3, 1e-4))]
    bank = RLRouterBank(routers, [{"ret": [0.1, 0.2]}, {"ret": [0.3]}])
    bank.save(tmp_path / "saved")
    back = RLRouterBank.load(tmp_path / "saved.npz")
    assert back.lambdas == [1e-4, 1e-3] and back.histories == [{"ret": [0.3]}, {"ret": [0.1, 0.2]}]
    np.testing.assert_array_equal(back.routers[0].params["W0"], agg_params(seed=1)["W0"])
    # the layout: weights "<i>/<name>", a "__meta__" string listing the routers
    arrays = {f"{i}/{k}": v for i in range(2) for k, v in agg_params(seed=i).items()}
    meta = {"format_version": 1, "type": "trim_pomdp.RLRouterBank", "kind": "agg",
            "routers": [{"lam": 5e-4, "token_scale": 100.0, "metadata": {}, "history": {}},
                        {"lam": 5e-3, "token_scale": 100.0, "metadata": {}, "history": {}}]}
    np.savez(tmp_path / "legacy.npz", __meta__=np.array(json.dumps(meta)), **arrays)
    old = RLRouterBank.load(tmp_path / "legacy.npz")
    assert old.lambdas == [5e-4, 5e-3]
    np.testing.assert_array_equal(old.routers[1].params["Wv"], agg_params(seed=1)["Wv"])
    from trim_pomdp.banks import load_bank

    assert load_bank(tmp_path / "legacy.npz").lambdas == [5e-4, 5e-3]


# --------------------------------------------------------------------- fitted models

def test_transition_model_legacy_layout(tmp_path):
    # (the round trip after a fit: tests/test_transition.py)
    H = 3
    meta = {"kind": "TransitionModel", "format_version": 1,
            "params": {"max_steps": H, "ci": 0.95, "hazard_smoothing": 20.0,
                       "hazard_bandwidth": None, "p_s": None, "strong_cheap_ratio": None,
                       "token_shrinkage": 5.0},
            "p_w": 0.8, "p_s": 0.9, "n_w": 10, "k_w": 8, "n_s": 10, "k_s": 9,
            "n_truncated": 0, "strong_cheap_ratio": 1.5, "n_cheap_traces": 4,
            "n_strong_traces": 2, "has_cheap_tokens": False, "has_strong_tokens": False}
    path = tmp_path / "legacy"  # saved to the path as given: no ".npz" added
    with open(path, "wb") as fh:
        np.savez(fh, p_w_ci=np.array([0.7, 0.9]), p_s_ci=np.array([np.nan, np.nan]),
                 hazard=np.array([0.25, 0.5, 1.0]), hazard_at_risk=np.array([4, 3, 1]),
                 hazard_ended=np.array([1, 2, 1]), metadata_json=np.array(json.dumps(meta)))
    old = TransitionModel.load(path)
    assert (old.p_w_, old.p_s_, old.n_w_, old.max_steps) == (0.8, 0.9, 10, 3)
    np.testing.assert_array_equal(old.hazard_, [0.25, 0.5, 1.0])
    assert old.cheap_tokens_ is None
    old.save(tmp_path / "again")
    assert TransitionModel.load(tmp_path / "again").p_w_ == 0.8


def test_observation_model_legacy_layout(tmp_path):
    # (the round trip after a fit: tests/test_observation.py)
    meta = {"kind": "ObservationModel", "format_version": 1,
            "params": {"estimator": "beta", "features": "score", "bandwidth": None,
                       "hist_bins": 20, "hist_pseudocount": 0.5, "min_samples_per_state": 10},
            "components": [["beta1"], ["beta1"], ["beta1"]], "n_missing_score": 2}
    path = tmp_path / "legacy.npz"
    np.savez(path, n_samples=np.array([20, 30, 40]), atom_weight=np.zeros(3),
             s0_0_ab=np.array([2.0, 5.0]), s1_0_ab=np.array([5.0, 2.0]),
             s2_0_ab=np.array([1.0, 1.0]), metadata_json=np.array(json.dumps(meta)))
    old = ObservationModel.load(path)
    assert old.estimator == "beta" and old.n_missing_score_ == 2 and old.binning is None
    np.testing.assert_array_equal(old.n_samples_, [20, 30, 40])
    dens = old.pdf([[0.5]], 2)
    assert dens.shape == (1,) and abs(float(dens[0]) - 1.0) < 1e-12  # Beta(1, 1)
    old.save(tmp_path / "again.npz")
    assert ObservationModel.load(tmp_path / "again.npz").n_missing_score_ == 2


# -------------------------------------------------------------- the shared checks

LOADERS = {
    "AlphaVectorPolicy": (AlphaVectorPolicy.load, "metadata_json", "kind",
                          "trim_pomdp.AlphaVectorPolicy", PolicyFormatError),
    "FiniteHorizonPolicy": (FiniteHorizonPolicy.load, "metadata", "kind",
                            "trim_pomdp.FiniteHorizonPolicy", PolicyFormatError),
    "RLRouter": (RLRouter.load, "__meta__", "type", "trim_pomdp.RLRouter", PolicyFormatError),
    "RLRouterBank": (RLRouterBank.load, "__meta__", "type", "trim_pomdp.RLRouterBank",
                     PolicyFormatError),
    "TransitionModel": (TransitionModel.load, "metadata_json", "kind", "TransitionModel",
                        ModelValidationError),
    "ObservationModel": (ObservationModel.load, "metadata_json", "kind", "ObservationModel",
                         ModelValidationError),
}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_reader_checks_kind_and_version_alike(tmp_path, name):
    load, key, kind_key, kind, error = LOADERS[name]
    path = tmp_path / "f.npz"
    w = str(path).replace(".", r"\.")
    cases = [
        ({kind_key: "other", "format_version": 1},
         rf"^{w}: field '{kind_key}' is 'other'; expected '{kind}'$"),
        ({"format_version": 1}, rf"^{w}: field '{kind_key}' is missing; expected '{kind}'$"),
        ({kind_key: kind, "format_version": 2},
         rf"^{w}: format_version 2 is not supported \(this trim_pomdp reads 1\)$"),
        ({kind_key: kind, "format_version": True},
         rf"^{w}: format_version True is not supported"),
        ({kind_key: kind}, rf"^{w}: format_version None is not supported"),
        ([1, 2], rf"^{w}: '{key}' must be a JSON object; got a JSON array$"),
    ]
    for meta, match in cases:
        np.savez(path, x=np.zeros(2), **{key: np.array(json.dumps(meta))})
        with pytest.raises(error, match=match):
            load(path)
    for raw, match in [(np.array("{not json"), rf"^{w}: '{key}' is not valid JSON \("),
                       (np.array("[" * 100_000), rf"^{w}: '{key}' is nested too deeply$"),
                       (np.arange(3), rf"^{w}: '{key}' must be a JSON string; got a int64 "
                                      r"array of shape \(3,\)$")]:
        np.savez(path, x=np.zeros(2), **{key: raw})
        with pytest.raises(error, match=match):
            load(path)
    np.savez(path, x=np.zeros(2))
    with pytest.raises(error, match=rf"^{w}: malformed .*: missing (.*, )?{key}$"):
        load(path)
    path.write_bytes(b"not a zip file")
    with pytest.raises(error, match=rf"^{w}: cannot read .* \(truncated or corrupt\?\): "
                                    r"BadZipFile"):
        load(path)


def test_policy_bank_sidecar_checks(tmp_path):
    model = trim_model()
    PolicyBank(model, [trim_policy(model, 0.1, 0)]).save(tmp_path / "b.npz")
    meta = json.loads((tmp_path / "b.json").read_text())
    side = str(tmp_path / "b.json").replace(".", r"\.")
    for edit, match in [({"format_version": 2}, r"format_version 2 is not supported "
                                                 r"\(this trim_pomdp reads 1\)$"),
                        ({"kind": "x"}, r"field 'kind' is 'x'; expected 'trim_pomdp.PolicyBank'$")]:
        (tmp_path / "b.json").write_text(json.dumps({**meta, **edit}))
        with pytest.raises(PolicyFormatError, match=f"^{side}: " + match):
            PolicyBank.load(tmp_path / "b.npz")
    (tmp_path / "b.json").write_text("[1]")
    with pytest.raises(PolicyFormatError,
                       match=f"^{side}: metadata must be a JSON object; got a JSON array$"):
        PolicyBank.load(tmp_path / "b.npz")


def test_a_declared_format_round_trips_and_is_atomic(tmp_path):
    from trim_pomdp._io import Artefact

    fmt = Artefact(kind="Thing", version=3, oldest=2, what="thing file",
                   error=PolicyFormatError, arrays=("a",))
    path = fmt.save(tmp_path / "t", {"a": np.arange(3)}, {"x": 1.5})
    assert path == tmp_path / "t.npz"
    arrays, meta = fmt.load(path)
    assert meta == {"kind": "Thing", "format_version": 3, "x": 1.5}
    np.testing.assert_array_equal(arrays["a"], [0, 1, 2])
    np.savez(path, a=np.zeros(1), metadata_json=np.array('{"kind": "Thing", "format_version": 2}'))
    assert fmt.load(path)[1]["format_version"] == 2  # an older version still read
    with pytest.raises(PolicyFormatError, match=r"reads 2\.\.3\)$"):
        np.savez(path, a=np.zeros(1), metadata_json=np.array('{"kind": "Thing", '
                                                             '"format_version": 1}'))
        fmt.load(path)
    with pytest.raises(ValueError):  # NaN is refused unless the format allows it
        fmt.save(path, {"a": np.zeros(1)}, {"x": float("nan")})
    with np.load(path) as z:  # the failed save left the file alone
        assert json.loads(str(z["metadata_json"]))["format_version"] == 1
    with pytest.raises(FileNotFoundError, match="cannot read thing file: no such file"):
        fmt.load(tmp_path / "missing.npz")
