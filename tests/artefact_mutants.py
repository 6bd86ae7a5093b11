"""Mutated banks and trace files for the property tests (``tests/test_fuzz_artefacts.py``) and
the long run (``benchmarks/fuzz_artefacts.py``): hypothesis strategies, and checks asserting
that loading gives a typed error or a valid result -- never another exception, never NaN.
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from trim_pomdp.banks import load_bank
from trim_pomdp.errors import PolicyFormatError, TraceFormatError
from trim_pomdp.routing.bank import PolicyBank, solve_grid
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.traces.records import MAX_TOKENS, load_traces
from trim_pomdp.traces.table import traces_to_table

#: outcome counts of every check run in this process ("typed error" / "valid")
OUTCOMES: Counter[str] = Counter()

_BASE: dict[str, Any] = {}


def base_bank() -> tuple[bytes, dict[str, Any], dict[str, np.ndarray]]:
    """A small solved bank: (npz bytes, sidecar, arrays), built once per process."""
    if not _BASE:
        model = TrimModel.from_parameters(
            p_w=0.8, p_s=0.95, hazard=[0.2, 0.5, 1.0], obs_matrix=np.full((3, 3), 1 / 3),
            token_probs=[0.5, 0.5], strong_tokens=[20.0, 60.0], token_edges=[30.0])
        bank = solve_grid(model, [1e-3, 1e-2])
        with tempfile.TemporaryDirectory() as d:
            bank.save(Path(d) / "b.npz")
            _BASE["npz"] = (Path(d) / "b.npz").read_bytes()
            _BASE["meta"] = json.loads((Path(d) / "b.json").read_text())
            with np.load(Path(d) / "b.npz") as z:
                _BASE["arrays"] = {k: z[k] for k in z.files}
    return _BASE["npz"], _BASE["meta"], _BASE["arrays"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=5) | st.just(10**5000 // 10**4000),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=6)

ARRAY_OPS = ("nan", "inf", "neginf", "string", "2d", "drop", "float32", "int8", "uint64",
             "huge", "negate", "empty", "append", "bool", "scalar")


@st.composite
def bank_mutation(draw: Any) -> tuple[str, Any]:
    kind = draw(st.sampled_from(("bytes", "truncate", "array", "array", "sidecar", "sidecar")))
    npz, meta, arrays = base_bank()
    if kind == "bytes":
        flips = draw(st.lists(st.tuples(st.integers(0, len(npz) - 1), st.integers(1, 255)),
                              min_size=1, max_size=4))
        return kind, flips
    if kind == "truncate":
        return kind, draw(st.integers(0, len(npz) - 1))
    if kind == "array":
        ops = draw(st.lists(st.tuples(st.sampled_from(sorted(arrays)), st.sampled_from(ARRAY_OPS),
                                      st.integers(0, 10**6)), min_size=1, max_size=3))
        return kind, ops
    paths = [(k,) for k in meta] + [("model", k) for k in meta["model"]] + [("lambdas", 0)]
    edits = draw(st.lists(st.tuples(st.sampled_from(paths), st.booleans(), json_values),
                          min_size=1, max_size=3))
    return kind, edits


def _apply_array_op(a: np.ndarray, op: str, seed: int) -> np.ndarray | None:
    # the mutant itself may need lossy casts (nan -> int8): not what is under test
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _array_op(a, op, seed)


def _array_op(a: np.ndarray, op: str, seed: int) -> np.ndarray | None:
    if op == "drop":
        return None
    b = np.array(a)
    i = seed % b.size if b.size else 0
    if op in ("nan", "inf", "neginf", "huge"):
        b = b.astype(np.float64)
        if b.size:
            b.flat[i] = {"nan": np.nan, "inf": np.inf, "neginf": -np.inf, "huge": 1e308}[op]
        return b
    if op == "string":
        return b.astype(str)
    if op == "2d":
        return b.reshape(1, -1)
    if op == "float32":
        return b.astype(np.float32)
    if op == "int8":
        return b.astype(np.int8) if b.dtype.kind != "U" else b
    if op == "uint64":
        return (b.astype(np.float64) % 2**62).astype(np.uint64) + np.uint64(2**63)
    if op == "negate":
        return -b if b.dtype.kind in "fi" else b
    if op == "empty":
        return b.reshape(-1)[:0]
    if op == "append":
        return np.concatenate([b.reshape(-1), b.reshape(-1)[:1]])
    if op == "bool":
        return b.astype(bool)
    return np.asarray(b.reshape(-1)[0] if b.size else 0)  # scalar


def _set(meta: dict[str, Any], path: tuple, delete: bool, value: Any) -> None:
    obj: Any = meta
    for k in path[:-1]:
        if not isinstance(obj, dict) or k not in obj:
            return
        obj = obj[k]
    last = path[-1]
    if isinstance(obj, dict):
        if delete:
            obj.pop(last, None)
        else:
            obj[last] = value
    elif isinstance(obj, list) and isinstance(last, int) and last < len(obj):
        obj[last] = value


def write_mutated_bank(folder: Path, mutation: tuple[str, Any]) -> Path:
    npz, meta, arrays = base_bank()
    kind, arg = mutation
    meta = json.loads(json.dumps(meta))
    data = npz
    if kind == "bytes":
        b = bytearray(npz)
        for pos, x in arg:
            b[pos] ^= x
        data = bytes(b)
    elif kind == "truncate":
        data = npz[:arg]
    elif kind == "array":
        arrs = dict(arrays)
        for name, op, seed in arg:
            if name in arrs:
                new = _apply_array_op(arrs[name], op, seed)
                if new is None:
                    arrs.pop(name)
                else:
                    arrs[name] = new
        np.savez(folder / "m.npz", **arrs)
        data = (folder / "m.npz").read_bytes()
    else:
        for path, delete, value in arg:
            _set(meta, path, delete, value)
    (folder / "m.npz").write_bytes(data)
    (folder / "m.json").write_text(json.dumps(meta))  # NaN as the non-standard NaN token
    return folder / "m.npz"


def check_bank(path: Path) -> str:
    """Load a (mutated) bank: a PolicyFormatError, or a bank whose numbers are all finite."""
    try:
        bank = load_bank(path)
    except PolicyFormatError as exc:
        msg = str(exc)  # names the .npz or its sidecar
        assert msg.startswith((str(path), str(path.with_suffix(".json")))), msg
        assert "\n" not in msg, msg
        OUTCOMES["bank: typed error"] += 1
        return "error"
    assert isinstance(bank, PolicyBank)
    assert np.all(np.isfinite(bank.lambdas)) and np.all(bank.lambdas >= 0)
    m = bank.model
    for p in bank:
        assert np.all(np.isfinite(p.alphas)) and math.isfinite(p.value_b0)
        assert math.isfinite(p.upper_bound)
        for t in range(1, m.horizon):
            for x in range(1, m.n_observed - 1):
                assert p.action(t, x, m.b0) in (0, 1)
                assert math.isfinite(p.value(t, x, m.b0))
    for lam in (0.0, 1e-3, 1.0):
        assert bank.nearest(lam) in bank.policies
    OUTCOMES["bank: valid"] += 1
    return "valid"


# ------------------------------------------------------------------------------------ traces

GOOD_TRACES = [
    {"id": "a", "model": "m", "steps": [{"prm_score": 0.9, "tokens": 12, "label": "correct"},
                                        {"prm_score": 0.2, "tokens": 40, "label": "incorrect"}],
     "final_correct": False},
    {"id": "b", "model": "m", "steps": [{"prm_score": 1, "tokens": 0, "label": None,
                                         "text": "x"}], "final_correct": True, "k": [1]},
    {"id": "c", "model": "m2", "problem": "p", "steps": [{}]},
]

TRACE_PATHS = ("id", "model", "steps", "final_correct", "problem", ("steps", 0, "prm_score"),
               ("steps", 0, "tokens"), ("steps", 0, "label"), ("steps", 0, "text"),
               ("steps", 0), ("steps", 1, "tokens"))

HOSTILE_LINES = ("[" * 100_000, '{"a":' * 50_000, '{"id": "z", "model": "m", "steps": [{"tokens": '
                 + "7" * 5000 + "}]}", "1" * 5000, '"\\ud800"', "NaN", "\x00", "{}",
                 json.dumps(GOOD_TRACES[0]))


@st.composite
def trace_mutation(draw: Any) -> bytes:
    recs = json.loads(json.dumps(GOOD_TRACES))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(recs) - 1))
        path = draw(st.sampled_from(TRACE_PATHS))
        path = (path,) if isinstance(path, str) else path
        obj: Any = recs[i]
        for k in path[:-1]:
            if isinstance(obj, dict) and k in obj:
                obj = obj[k]
            elif isinstance(obj, list) and isinstance(k, int) and k < len(obj):
                obj = obj[k]
            else:
                obj = None
                break
        if obj is not None:
            value = draw(json_values | st.integers(-(2**80), 2**80) | st.just(10**30))
            if isinstance(obj, dict):
                obj[path[-1]] = value
            elif isinstance(obj, list) and isinstance(path[-1], int) and path[-1] < len(obj):
                obj[path[-1]] = value
    lines = [json.dumps(r).encode() for r in recs]
    if draw(st.booleans()):
        hostile = draw(st.sampled_from(HOSTILE_LINES)).encode()
        lines.insert(draw(st.integers(0, len(lines))), hostile)
    data = b"\n".join(lines) + b"\n"
    flips = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)),
                          max_size=3))
    b = bytearray(data)
    for pos, x in flips:
        b[pos] ^= x
    return bytes(b)


def check_traces(path: Path) -> str:
    """Strict load: TraceFormatError naming FILE:LINE (or the file), or valid traces;
    lenient load: never raises on a line, and loaded + skipped = non-blank lines."""
    outcome = "valid"
    try:
        traces = load_traces(path)
    except TraceFormatError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc), str(exc)
        outcome = "error"
        OUTCOMES["traces: typed error"] += 1
    else:
        _check_valid(traces)
        OUTCOMES["traces: valid"] += 1
    non_blank = sum(1 for line in path.read_bytes().split(b"\n") if line.strip())
    try:
        traces, rep = load_traces(path, lenient=True, return_report=True)
    except TraceFormatError as exc:
        assert "no traces found" in str(exc), str(exc)
        return outcome
    _check_valid(traces)
    assert rep.n_loaded == len(traces)
    # a line that is not valid UTF-8 may still look blank after decoding errors: bound only
    assert rep.n_loaded + rep.n_skipped <= non_blank + 1
    return outcome


def _check_valid(traces: list[Any]) -> None:
    keys = set()
    for t in traces:
        assert isinstance(t.id, str) and t.id and isinstance(t.model, str) and t.model
        assert (t.id, t.model) not in keys
        keys.add((t.id, t.model))
        for s in t.steps:
            assert s.prm_score is None or (isinstance(s.prm_score, float)
                                           and 0.0 <= s.prm_score <= 1.0)
            assert s.tokens is None or (type(s.tokens) is int and 0 <= s.tokens <= MAX_TOKENS)
    if traces:
        table = traces_to_table(traces)
        assert np.all((table.tokens >= -1) & (table.tokens <= MAX_TOKENS))
        sc = table.score[~np.isnan(table.score)]
        assert np.all((sc >= 0) & (sc <= 1))
