"""Issues 18/19: a corpus of bad banks, bad trace files and failed saves, generated here (no
shipped binaries), each pinned to its typed error, its one-line CLI message and exit status
(2 for bad input, 1 for a failed write), and the previous good file surviving a full disk."""

from __future__ import annotations

import errno
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from trim_pomdp import _io
from trim_pomdp.banks import load_bank
from trim_pomdp.cli import main
from trim_pomdp.engine.finite import FiniteHorizonPolicy
from trim_pomdp.engine.policy import AlphaVectorPolicy
from trim_pomdp.errors import (
    ModelValidationError,
    OutputPathError,
    OutputWriteError,
    PolicyFormatError,
    TraceFormatError,
)
from trim_pomdp.fit.transition import TransitionModel
from trim_pomdp.routing.bank import PolicyBank, solve_grid
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.routing.policy import TrimPolicy
from trim_pomdp.traces.records import load_traces, save_traces
from trim_pomdp.traces.synthetic import generate_traces

LAMS = [1e-3, 1e-2]


def small_model(min_edges=None) -> TrimModel:
    n_obs = 4 * (1 if min_edges is None else len(min_edges) + 1)
    return TrimModel.from_parameters(
        p_w=0.8, p_s=0.95, hazard=[0.1, 0.3, 0.5, 1.0], obs_matrix=np.full((3, n_obs), 1 / n_obs),
        score_edges=[0.25, 0.5, 0.75], min_edges=min_edges, token_probs=[0.5, 0.5],
        strong_tokens=[20.0, 60.0], token_edges=[30.0])


@pytest.fixture(scope="module")
def bank_files(tmp_path_factory):
    """A solved bank saved once: (npz bytes, sidecar dict)."""
    d = tmp_path_factory.mktemp("bank")
    bank = solve_grid(small_model(), LAMS)
    bank.save(d / "bank.npz")
    return (d / "bank.npz").read_bytes(), json.loads((d / "bank.json").read_text())


def write_bank(tmp_path: Path, npz: bytes, meta, name: str = "b") -> Path:
    p = tmp_path / f"{name}.npz"
    p.write_bytes(npz)
    (tmp_path / f"{name}.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return p


def npz_with(npz: bytes, tmp_path: Path, **changes) -> bytes:
    """The bank's arrays with some replaced (None: removed), re-saved."""
    src = tmp_path / "_src.npz"
    src.write_bytes(npz)
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v(arrays[k]) if callable(v) else v
    out = tmp_path / "_out.npz"
    np.savez(out, **arrays)
    return out.read_bytes()


def _nan_at_0(a):
    a = a.astype(float).copy()
    a.flat[0] = np.nan
    return a


BANK_ARRAY_CASES = {
    "all-nan alphas": (dict(alphas=lambda a: np.full_like(a, np.nan)),
                       r"array 'alphas' must be finite; got nan at index \(0, 0\)"),
    "all-inf alphas": (dict(alphas=lambda a: np.full_like(a, np.inf)),
                       r"array 'alphas' must be finite; got inf"),
    "one nan alpha": (dict(alphas=lambda a: np.where(np.arange(a.size).reshape(a.shape) == 7,
                                                     np.nan, a)),
                      r"array 'alphas' must be finite; got nan at index \(2, 1\)"),
    "string alphas": (dict(alphas=lambda a: a.astype(str)),
                      r"array 'alphas' must hold real numbers; got string values"),
    "nan lambda": (dict(lambdas=_nan_at_0), r"array 'lambdas' must be finite; got nan at index 0"),
    "2-d lambdas": (dict(lambdas=lambda a: a[None, :]),
                    r"array 'lambdas' must have shape \(n,\); got \(1, 2\)"),
    "nan value_b0": (dict(value_b0=_nan_at_0), r"array 'value_b0' must be finite"),
    "inf upper_bound": (dict(upper_bound=lambda a: a + np.inf), r"array 'upper_bound' must be"),
    "huge alpha": (dict(alphas=lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0,
                                                  1e300, a)),
                   r"array 'alphas' must be <= 1000000000000000\.0; got 1e\+300"),
    "nan model hazard": (dict(model_hazard=_nan_at_0), r"array 'model_hazard' must be finite"),
    "action out of range": (dict(actions=lambda a: a + 5),
                            r"array 'actions' must lie in \[0, 1\]; got [56]"),
    "huge uint64 offsets": (dict(offsets=lambda a: a.astype(np.uint64) + np.uint64(2**63)),
                            r"array 'offsets' must lie in \[0, 9223372036854775807\]"),
    "float actions": (dict(actions=lambda a: a.astype(float)),
                      r"array 'actions' must hold integers; got float64"),
    "missing counts": (dict(counts=None), r"malformed PolicyBank arrays: missing counts"),
    "one lambda fewer": (dict(lambdas=lambda a: a[:1]),
                         r"holds 1 policies \(lambdas\) but the sidecar b\.json says "
                         r"n_policies=2"),
    "other lambdas": (dict(lambdas=lambda a: a * 2), r"lambdas .* differ from the sidecar's"),
    "object array": (dict(alphas=lambda a: np.array([object()] * 3, dtype=object)),
                     r"cannot read PolicyBank arrays \(truncated or corrupt\?\): ValueError: "
                     r"Object arrays cannot be loaded"),
}


@pytest.mark.parametrize("case", sorted(BANK_ARRAY_CASES))
def test_bank_array_corpus(case, bank_files, tmp_path):
    npz, meta = bank_files
    changes, msg = BANK_ARRAY_CASES[case]
    if case == "object array":  # np.savez needs pickling for it: write it by hand
        src = tmp_path / "obj.npz"
        src.write_bytes(npz)
        with zipfile.ZipFile(src, "a") as zf, zf.open("alphas_obj.npy", "w") as fh:
            np.lib.format.write_array(fh, np.array([object()], dtype=object), allow_pickle=True)
        data = src.read_bytes()
    else:
        data = npz_with(npz, tmp_path, **changes)
    p = write_bank(tmp_path, data, meta)
    with pytest.raises(PolicyFormatError, match=msg):
        PolicyBank.load(p)
    with pytest.raises(PolicyFormatError, match=msg):
        load_bank(p)


SIDECAR_CASES = {
    "model is a list": (lambda m: {**m, "model": [1, 2]},
                        r"b\.json: field 'model' must be a JSON object; got \[1, 2\]"),
    "p_w null": (lambda m: {**m, "model": {**m["model"], "p_w": None}},
                 r"b\.json: model: field 'p_w' must be a number; got None"),
    "p_w NaN": (lambda m: {**m, "model": {**m["model"], "p_w": float("nan")}},
                r"field 'p_w' must be finite; got nan"),
    "p_w a string": (lambda m: {**m, "model": {**m["model"], "p_w": "0.8"}},
                     r"field 'p_w' must be a number; got '0.8'"),
    "max_steps bool": (lambda m: {**m, "model": {**m["model"], "max_steps": True}},
                       r"field 'max_steps' must be an integer; got True"),
    "uses_min a string": (lambda m: {**m, "model": {**m["model"], "uses_min": "no"}},
                          r"field 'uses_min' must be true or false"),
    "n_policies wrong": (lambda m: {**m, "n_policies": 3}, r"says n_policies=3"),
    "lambdas not a list": (lambda m: {**m, "lambdas": {"a": 1}},
                           r"field 'lambdas' must be a list of numbers"),
    "lambda NaN": (lambda m: {**m, "lambdas": [float("nan"), 0.01]},
                   r"lambdas\[0\]: field 'lambdas' must be finite"),
    "lambda huge int": (lambda m: {**m, "lambdas": [10**400, 0.01]},
                        r"field 'lambdas' is too large; got an integer of about 401 digits"),
    "latent a number": (lambda m: {**m, "model": {**m["model"], "latent": 1}},
                        r"field 'latent' must be true or false; got 1"),
}


@pytest.mark.parametrize("case", sorted(SIDECAR_CASES))
def test_bank_sidecar_corpus(case, bank_files, tmp_path):
    npz, meta = bank_files
    edit, msg = SIDECAR_CASES[case]
    p = write_bank(tmp_path, npz, json.dumps(edit(json.loads(json.dumps(meta)))))
    with pytest.raises(PolicyFormatError, match=msg):
        PolicyBank.load(p)


def test_sidecar_text_corpus(bank_files, tmp_path):
    npz, meta = bank_files
    for text, msg in [("{not json", "not valid JSON"),
                      ('{"kind": "trim_pomdp.PolicyBank", "x": ' + "[" * 100_000,
                       "JSON nested too deeply"),
                      ('{"kind": "trim_pomdp.PolicyBank", "format_version": ' + "1" * 5000 + "}",
                       "not valid JSON .Exceeds the limit .4300 digits"),
                      ("\xff", "not valid JSON"),
                      ("[1]", r"b\.json: metadata must be a JSON object; got a JSON array$")]:
        p = write_bank(tmp_path, npz, text)
        with pytest.raises(PolicyFormatError, match=msg):
            PolicyBank.load(p)


def test_min_score_feature_disagreement(tmp_path):
    m = small_model(min_edges=[0.5])
    rng = np.random.default_rng(0)
    nb = m.horizon * m.n_observed
    offsets = np.arange(nb + 1)
    pol = TrimPolicy(model=m, lam=0.1, alphas=rng.normal(size=(nb, 3)),
                     actions=rng.integers(0, 2, nb), offsets=offsets, value_b0=0.5,
                     upper_bound=0.6)
    PolicyBank(m, [pol]).save(tmp_path / "m.npz")
    assert PolicyBank.load(tmp_path / "m.npz").model.uses_min
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["model"]["uses_min"] = False
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(PolicyFormatError, match=r"model\.uses_min is false but m\.npz has 1 "
                       r"min-score bin edges \(sidecar and \.npz disagree"):
        PolicyBank.load(tmp_path / "m.npz")


def corrupt_variants(npz: bytes) -> dict[str, bytes]:
    n = len(npz)
    out = {f"truncated at {k}": npz[:k] for k in (0, 1, 10, 100, n // 3, n // 2, n - 30, n - 1)}
    for k in (5, 40, 200, n // 2, n - 100, n - 10):
        b = bytearray(npz)
        b[k] ^= 0xFF
        out[f"byte {k} flipped"] = bytes(b)
    out["not a zip"] = b"hello world" * 10
    return out


def test_truncated_or_flipped_npz_is_one_typed_error(bank_files, tmp_path, capsys):
    npz, meta = bank_files
    variants = corrupt_variants(npz)
    assert len(variants) == 15
    original = load_bank(write_bank(tmp_path, npz, meta, "orig"))
    n_errors = 0
    for name, data in variants.items():
        p = write_bank(tmp_path, data, meta)
        try:
            back = load_bank(p)
        except PolicyFormatError as exc:
            assert str(exc).startswith(str(p) + ": ") and "\n" not in str(exc), name
            n_errors += 1
        else:  # a flip in a byte no reader looks at (zip timestamps): the same bank
            assert name.startswith("byte"), name
            for a, b in zip(original, back, strict=True):
                np.testing.assert_array_equal(a.alphas, b.alphas)
            continue
        rc = main(["evaluate", "--bank", str(p), "--n-problems", "50", "--policies", "trim-thr"])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1, (name, err)
        assert err.startswith("trim-pomdp evaluate: error: --bank"), err
    assert n_errors >= 13
    # without a sidecar the loader tries an RL bank: still one typed error
    (tmp_path / "b.json").unlink()
    p = tmp_path / "b.npz"
    for data in variants.values():
        p.write_bytes(data)
        with pytest.raises(PolicyFormatError, match="not a saved router bank"):
            load_bank(p)


def test_route_policy_bad_bank_is_one_line_exit_2(bank_files, tmp_path, capsys):
    npz, meta = bank_files
    probs = tmp_path / "p.jsonl"
    probs.write_text('{"id": "a", "problem": "1+1?"}\n')
    p = write_bank(tmp_path, npz_with(npz, tmp_path, alphas=lambda a: a * np.nan), meta)
    argv = ["route", "--problems", str(probs), "--cheap", "http://127.0.0.1:9/v1/c",
            "--strong", "http://127.0.0.1:9/v1/s", "--prm", "http://127.0.0.1:9/v1/p",
            "--out", str(tmp_path / "o.jsonl"), "--policy", str(p), "--budget", "0.01"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "trim-pomdp route: error:" in err and "array 'alphas' must be finite" in err
    p.write_bytes(npz[: len(npz) // 2])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "truncated or corrupt" in err


def test_model_npz_corpus(tmp_path):
    tm = TransitionModel(p_s=0.9).fit(generate_traces(n_traces=200, p_w=0.8, seed=1))
    tm.save(tmp_path / "t.npz")
    good = (tmp_path / "t.npz").read_bytes()
    assert TransitionModel.load(tmp_path / "t.npz").p_w_ == tm.p_w_
    for name, data in corrupt_variants(good).items():
        (tmp_path / "x.npz").write_bytes(data)
        try:
            back = TransitionModel.load(tmp_path / "x.npz")
        except ModelValidationError as exc:
            assert str(exc).startswith(str(tmp_path / "x.npz") + ": "), name
        else:  # a flipped byte no reader looks at: the same model
            assert name.startswith("byte") and back.p_w_ == tm.p_w_, name
            np.testing.assert_array_equal(back.hazard_, tm.hazard_)
    cases = [
        (dict(hazard=lambda a: a * np.nan), r"array 'hazard' must be finite"),
        (dict(hazard_at_risk=lambda a: a.astype(float)), r"'hazard_at_risk' must hold integers"),
        (dict(hazard_ended=lambda a: a - 5), r"'hazard_ended' must lie in \[0, "),
        (dict(metadata_json=np.arange(3)), r"'metadata_json' must be a JSON string"),
        (dict(metadata_json=np.array("[1]")), r"'metadata_json' must be a JSON object"),
    ]
    for changes, msg in cases:
        (tmp_path / "y.npz").write_bytes(npz_with(good, tmp_path, **changes))
        with pytest.raises(ModelValidationError, match=msg):
            TransitionModel.load(tmp_path / "y.npz")
    with np.load(tmp_path / "t.npz") as z:
        meta = json.loads(str(z["metadata_json"]))
    for field, value, msg in [("p_w", float("nan"), "field 'p_w' must be finite"),
                              ("p_w", None, "field 'p_w' must be a number"),
                              ("n_w", 1.5, "field 'n_w' must be an integer"),
                              ("has_cheap_tokens", "yes", "must be true or false"),
                              ("params", [1], "field 'params' must be a JSON object")]:
        bad = {**meta, field: value}
        (tmp_path / "z.npz").write_bytes(
            npz_with(good, tmp_path, metadata_json=np.array(json.dumps(bad))))
        with pytest.raises(ModelValidationError, match=msg):
            TransitionModel.load(tmp_path / "z.npz")


# --------------------------------------------------------------------------------- traces

GOOD = {"id": "a", "model": "m", "steps": [{"prm_score": 0.5, "tokens": 3, "label": "correct"}],
        "final_correct": True}

TRACE_CASES = {
    "deep nesting": ("[" * 100_000, r":2: invalid JSON \(nested too deeply"),
    "deep objects": ('{"a":' * 100_000, r":2: invalid JSON \(nested too deeply"),
    "5000-digit int": ('{"id": "b", "model": "m", "steps": [{"tokens": ' + "9" * 5000 + "}]}",
                       r":2: invalid JSON \(Exceeds the limit \(4300 digits\)"),
    "tokens 10**30": (json.dumps({**GOOD, "id": "b", "steps": [{"tokens": 10**30}]}),
                      r":2: steps\[0\]: field 'tokens' must be at most 2\*\*53"),
    "tokens -1": (json.dumps({**GOOD, "id": "b", "steps": [{"tokens": -1}]}),
                  r":2: steps\[0\]: field 'tokens' must be a non-negative integer"),
    "tokens 2.5": (json.dumps({**GOOD, "id": "b", "steps": [{"tokens": 2.5}]}),
                   r":2: steps\[0\]: field 'tokens' must be a non-negative integer or null; "
                   r"got 2\.5"),
    "id 5": (json.dumps({**GOOD, "id": 5}), r":2: field 'id' .*got 5 \(quote it\)"),
    "id empty": (json.dumps({**GOOD, "id": ""}), r":2: field 'id' is missing"),
    "duplicate id": (json.dumps(GOOD),
                     r":2: duplicate trace id 'a' of model 'm' \(first at line 1\)"),
    "nan score": ('{"id": "b", "model": "m", "steps": [{"prm_score": NaN}]}',
                  r":2: steps\[0\]: field 'prm_score' must be in \[0, 1\]; got nan"),
    "inf score": ('{"id": "b", "model": "m", "steps": [{"prm_score": 1e999}]}',
                  r":2: steps\[0\]: field 'prm_score' must be in \[0, 1\]; got inf"),
    "bad utf-8": (b'{"id": "\xff"}', r":2: not valid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(TRACE_CASES))
def test_trace_corpus(case, tmp_path):
    line, msg = TRACE_CASES[case]
    p = tmp_path / "t.jsonl"
    raw = line if isinstance(line, bytes) else line.encode()
    p.write_bytes(json.dumps(GOOD).encode() + b"\n" + raw + b"\n" +
                  json.dumps({**GOOD, "id": "c"}).encode() + b"\n")
    with pytest.raises(TraceFormatError, match=r"t\.jsonl" + msg) as exc:
        load_traces(p)
    assert "\n" not in str(exc.value)
    traces, rep = load_traces(p, lenient=True, return_report=True)
    assert [t.id for t in traces] == ["a", "c"]  # the duplicate: the first one is kept
    assert rep.n_skipped == 1 and rep.n_loaded == 2
    assert ":2: " in rep.reasons[0]


def test_fit_cli_on_bad_traces(tmp_path, capsys):
    good = generate_traces(n_traces=300, p_w=0.8, seed=3)
    save_traces(good, tmp_path / "good.jsonl")
    lines = (tmp_path / "good.jsonl").read_bytes().splitlines()
    bad_lines = [v if isinstance(v, bytes) else v.encode() for v, _ in TRACE_CASES.values()]
    data = b"\n".join(lines[:5] + bad_lines + lines[5:]) + b"\n"
    (tmp_path / "bad.jsonl").write_bytes(data)
    for case, (line, _) in TRACE_CASES.items():
        one = b"\n".join(lines[:1] + [line if isinstance(line, bytes) else line.encode()]) + b"\n"
        if case == "duplicate id":
            one = lines[0] + b"\n" + lines[0] + b"\n"
        (tmp_path / "one.jsonl").write_bytes(one)
        rc = main(["fit", str(tmp_path / "one.jsonl"), "--p-s", "0.9", "--out",
                   str(tmp_path / "o1"), "--no-plots"])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1, (case, err)
        assert "one.jsonl:2: " in err, (case, err)
    rc = main(["fit", str(tmp_path / "bad.jsonl"), "--p-s", "0.9", "--out", str(tmp_path / "o2"),
               "--no-plots", "--lenient", "--observation", "beta", "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    # every bad line skipped and counted; the "duplicate id" line is GOOD, whose id "a" is
    # not among the synthetic ids: it loads, so one more trace and one fewer skip
    assert f"loaded 301 traces, skipped {len(bad_lines) - 1}" in cap.err
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert summary["transition"]["n_cheap_traces"] == 301


# --------------------------------------------------------------------------------- saving

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def savers(tmp_path):
    """(name, path, save-callable) for every artefact writer."""
    from trim_pomdp.rl import nn
    from trim_pomdp.rl.agents import RLRouter
    from trim_pomdp.rl.grid import RLRouterBank

    bank = solve_grid(small_model(), LAMS)
    tm = TransitionModel(p_s=0.9).fit(generate_traces(n_traces=100, p_w=0.8, seed=1))
    fin = bank[0]
    fhp = FiniteHorizonPolicy(fin.alphas, fin.actions, fin.offsets, horizon=5, n_observed=6)
    router = RLRouter("agg", nn.init_actor_critic(5, (4, 4), seed=0), lam=0.1)
    traces = generate_traces(n_traces=5, p_w=0.8, seed=1)
    return [
        ("bank", tmp_path / "bank.npz", lambda p: bank.save(p)),
        ("alpha policy", tmp_path / "pol.npz",
         lambda p: AlphaVectorPolicy(np.eye(2), [0, 1]).save(p)),
        ("finite policy", tmp_path / "fin.npz", lambda p: fhp.save(p)),
        ("transition", tmp_path / "tm.npz", lambda p: tm.save(p)),
        ("rl router", tmp_path / "r.npz", lambda p: router.save(p)),
        ("rl bank", tmp_path / "rb.npz", lambda p: RLRouterBank([router]).save(p)),
        ("traces", tmp_path / "t.jsonl", lambda p: save_traces(traces, p)),
        ("json", tmp_path / "s.json", lambda p: _io.write_json_atomic(p, {"x": -np.inf})),
    ]


def _failing_fdopen(fd, *a, real_fdopen=os.fdopen, **k):
    """``os.fdopen`` whose files write half of the first chunk, then hit a full disk."""
    fh = real_fdopen(fd, *a, **k)
    real_write = fh.write

    def write(chunk):
        real_write(chunk[: len(chunk) // 2])
        _enospc()
    fh.write = write
    return fh


def test_every_save_is_atomic_on_enospc(tmp_path, monkeypatch):
    for name, path, save in savers(tmp_path):
        save(path)
        siblings = [path] + ([path.with_suffix(".json")] if name == "bank" else [])
        before = {p: p.read_bytes() for p in siblings}
        # the disk fills up at the fsync ...
        with monkeypatch.context() as m:
            m.setattr(os, "fsync", _enospc)
            with pytest.raises(OutputWriteError, match=r"cannot write .*: no space left on "
                               r"device; the previous file \(if any\) is unchanged"):
                save(path)
        # ... or in the middle of the data (a write that fails after some bytes)
        with monkeypatch.context() as m:
            m.setattr(os, "fdopen", _failing_fdopen)
            with pytest.raises(OutputWriteError, match="no space left on device"):
                save(path)
        for p, data in before.items():
            assert p.read_bytes() == data, name  # the previous good file is intact
        assert sorted(f.name for f in tmp_path.iterdir() if f.name.startswith(".")) == [], name


def test_a_failed_serialisation_leaves_nothing(tmp_path):
    _io.write_text_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(ZeroDivisionError):
        _io.atomic_write(tmp_path / "a.txt", lambda fh: 1 / 0)
    assert (tmp_path / "a.txt").read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["a.txt"]


def test_cli_disk_full_keeps_previous_bank(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bank.npz"
    argv = ["solve-grid", "--scenario", "default", "--lambda-values", "0.001", "--out", str(out),
            "--n-token-bins", "2", "--n-score-bins", "4"]
    assert main(argv) == 0
    before = out.read_bytes(), out.with_suffix(".json").read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(os, "fsync", _enospc)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("trim-pomdp solve-grid: error: cannot write ") and "no space" in err
    assert (out.read_bytes(), out.with_suffix(".json").read_bytes()) == before
    monkeypatch.undo()
    assert len(load_bank(out)) == 1


def test_output_folder_checked_before_the_solve(tmp_path, capsys, monkeypatch):
    import trim_pomdp.engine.solver as solver
    import trim_pomdp.routing.bank as trim

    def no_solve(*a, **k):
        raise AssertionError("solved although the output cannot be written")
    monkeypatch.setattr(solver, "solve_info", no_solve)
    monkeypatch.setattr(trim, "solve_grid", no_solve)
    problem = tmp_path / "t.pomdp"
    problem.write_text("discount: 0.9\nvalues: reward\nstates: 1\nactions: 1\nobservations: 1\n"
                       "T: 0 : 0 : 0 1.0\nO: 0 : 0 : 0 1.0\nR: 0 : 0 : * : * 1.0\n")
    missing = tmp_path / "no" / "such" / "p.npz"
    for argv, msg in [
        (["solve", str(problem), "--out", str(missing)], "--out .*p.npz: folder .*such does not "
         "exist"),
        (["solve", str(problem), "--sarsop-policy", str(tmp_path)], "--sarsop-policy .*: is a "
         "folder"),
        (["solve-grid", "--scenario", "default", "--out", str(tmp_path / "f" / "x.npz" / "y"),
          "--lambda-values", "0.01"], None),
    ]:
        if msg is None:  # solve-grid creates its folder; a file in the way is refused
            (tmp_path / "f").mkdir()
            (tmp_path / "f" / "x.npz").write_text("a file, not a folder")
            msg = "cannot create folder|is not a folder"
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        import re
        assert re.search(msg, err), err
    with pytest.raises(OutputPathError, match="is a folder"):
        _io.check_output_path(tmp_path)


def test_fit_summary_is_strict_json_with_inf(tmp_path):
    import argparse

    from trim_pomdp.commands import fit

    summary = {"loglik": float("-inf"), "ratio": np.float32("nan"), "ok": np.int64(3),
               "rows": [np.inf, 1.5], "nested": {"ci": (float("nan"), 0.5)}}
    args = argparse.Namespace(json=False)
    assert fit._write_summary(summary, tmp_path, args, lambda m: None, 0.0) == 0
    text = (tmp_path / "summary.json").read_text()
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert back == {"loglik": None, "ratio": None, "ok": 3, "rows": [None, 1.5],
                    "nested": {"ci": [None, 0.5]}}
