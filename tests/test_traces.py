import json

import numpy as np
import pytest

from trim_pomdp.errors import TraceFormatError
from trim_pomdp.traces.records import (
    LoadReport,
    Step,
    Trace,
    load_traces,
    save_traces,
    trace_from_dict,
)
from trim_pomdp.traces.table import hidden_state_labels, traces_to_table


def _tr(labels, scores=None, tid="t", model="m"):
    scores = scores or [None] * len(labels)
    steps = [Step(label=lab, prm_score=s) for lab, s in zip(labels, scores, strict=True)]
    return Trace(tid, model, steps)


def _write(tmp_path, lines, name="t.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


GOOD = {"id": "a", "model": "m", "steps": [{"prm_score": 0.5, "tokens": 3, "label": "correct"}],
        "final_correct": True}


def _rec(**step_overrides):
    d = json.loads(json.dumps(GOOD))
    d["steps"][0].update(step_overrides)
    return json.dumps(d)


# --------------------------------------------------------------------------- hidden states

@pytest.mark.parametrize(
    "labels, expected",
    [
        (["correct", "correct", "incorrect", None, None], [0, 0, 2, 1, 1]),
        (["correct", "incorrect", "correct", "incorrect"], [0, 2, 1, 1]),  # full labelling
        (["incorrect"], [2]),
        (["correct"] * 4, [0, 0, 0, 0]),
        (["correct", None, "correct", "incorrect"], [0, -1, -1, -1]),
        ([None, "incorrect", "correct"], [-1, -1, 1]),
        ([None, None], [-1, -1]),
    ],
)
def test_hidden_state_labels_known(labels, expected):
    got = hidden_state_labels(_tr(labels))
    assert got.dtype == np.int8
    assert got.tolist() == expected


def test_table_states_match_per_trace_reference():
    rng = np.random.default_rng(3)
    choices = ["correct", "incorrect", None]
    traces = [
        _tr([choices[k] for k in rng.choice(3, size=rng.integers(1, 9), p=[0.6, 0.2, 0.2])],
            tid=str(i))
        for i in range(300)
    ]
    table = traces_to_table(traces)
    ref = np.concatenate([hidden_state_labels(t) for t in traces])
    assert np.array_equal(table.state, ref)
    assert table.n_traces == 300 and table.n_steps == ref.size
    assert np.array_equal(table.step[table.offsets[:-1]], np.ones(300))


def test_min_prev_and_missing_scores():
    t1 = _tr(["correct"] * 4, [0.9, 0.5, 0.7, 0.2])
    t2 = _tr(["correct"] * 3, [0.8, None, 0.9])
    table = traces_to_table([t1, t2])
    assert table.min_prev[:4].tolist() == [1.0, 0.9, 0.5, 0.5]
    assert table.min_prev[4] == 1.0 and table.min_prev[5] == 0.8 and np.isnan(table.min_prev[6])
    assert np.isnan(table.score[5])


# --------------------------------------------------------------------------- round trip

def test_save_load_round_trip_exact(tmp_path):
    traces = [
        Trace("x1", "cheap", [Step(text="ünïcode ∑", prm_score=0.123456789012345678, tokens=7,
                                   label="correct", extra={"writer": "strong", "belief": [0.1, 0.9]}),  # noqa: E501
                              Step(label=None)],
              final_correct=None, problem="p?", extra={"source": "unit"}),
        Trace("x2", "strong", [Step(prm_score=1, tokens=0, label="incorrect")], final_correct=False),  # noqa: E501
    ]
    p = tmp_path / "t.jsonl"
    assert save_traces(traces, p) == 2
    back = load_traces(p)
    assert back == [traces[0], Trace("x2", "strong", [Step(prm_score=1.0, tokens=0,
                                                           label="incorrect")], final_correct=False)]  # noqa: E501
    assert isinstance(back[1].steps[0].prm_score, float)
    # and the file is the documented format
    first = json.loads(p.read_text(encoding="utf-8").splitlines()[0])
    assert first["steps"][0]["writer"] == "strong" and first["source"] == "unit"
    assert set(first) >= {"id", "problem", "model", "steps", "final_correct"}


def test_blank_lines_ignored_and_line_numbers_count_them(tmp_path):
    p = _write(tmp_path, [json.dumps(GOOD), "", _rec(prm_score=2.0)])
    with pytest.raises(
        TraceFormatError, match=r"t\.jsonl:3: steps\[0\]: field 'prm_score' must be in \[0, 1\]; got 2\.0"  # noqa: E501
    ):
        load_traces(p)


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    "line, match",
    [
        (_rec(prm_score=float("nan")), r":1: steps\[0\]: field 'prm_score' must be in \[0, 1\]; got nan"),  # noqa: E501
        (_rec(prm_score=-0.1), r"field 'prm_score' must be in \[0, 1\]"),
        (_rec(prm_score="0.5"), r"field 'prm_score' must be a number in \[0, 1\] or null; got '0.5'"),  # noqa: E501
        (_rec(prm_score=True), r"field 'prm_score' must be a number"),
        (_rec(tokens=-1), r"field 'tokens' must be a non-negative integer or null; got -1"),
        (_rec(tokens=2.5), r"field 'tokens' must be a non-negative integer"),
        (_rec(label="yes"), r"field 'label' must be \"correct\", \"incorrect\" or null; got 'yes'"),
        (_rec(text=3), r"field 'text' must be a string or null"),
        (json.dumps({**GOOD, "model": None}), r":1: field 'model' is missing"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "id"}), r":1: field 'id' is missing"),
        (json.dumps({**GOOD, "steps": []}), r"field 'steps' is empty"),
        (json.dumps({**GOOD, "steps": "abc"}), r"field 'steps' is missing or not a list"),
        (json.dumps({**GOOD, "steps": [3]}), r"steps\[0\] must be a JSON object"),
        (json.dumps({**GOOD, "final_correct": "yes"}), r"field 'final_correct' must be true, false or null"),  # noqa: E501
        ('{"id": "a", "model": ', r":1: invalid JSON"),
        ("[1, 2]", r"a trace must be a JSON object; got list"),
    ],
)
def test_bad_records_name_file_line_field(tmp_path, line, match):
    p = _write(tmp_path, [line])
    with pytest.raises(TraceFormatError, match=match) as ei:
        load_traces(p)
    assert str(p) in str(ei.value)


def test_invalid_utf8_names_the_line(tmp_path):
    p = tmp_path / "bin.jsonl"
    good = json.dumps(GOOD).encode()
    other = json.dumps({**GOOD, "id": "b"}).encode()
    p.write_bytes(good + b"\n" + b'{"id": "\xff\xfe"}\n' + other)
    with pytest.raises(TraceFormatError, match=r"bin\.jsonl:2: not valid UTF-8 \(byte 9"):
        load_traces(p)
    traces, rep = load_traces(p, lenient=True, return_report=True)
    assert len(traces) == 2 and rep.n_skipped == 1


def test_empty_file(tmp_path):
    p = _write(tmp_path, [""])
    with pytest.raises(TraceFormatError, match="no traces found"):
        load_traces(p)


def test_first_error_only_rejects_correct_after_incorrect(tmp_path):
    rec = {"id": "a", "model": "m", "steps": [{"label": "correct"}, {"label": "incorrect"},
                                              {"label": None}, {"label": "correct"}]}
    p = _write(tmp_path, [json.dumps(rec)])
    assert len(load_traces(p)) == 1  # fully labelled data may do this
    with pytest.raises(
        TraceFormatError, match=r":1: steps\[3\]: .*contradicts first-error labelling"
    ):
        load_traces(p, first_error_only=True)


def test_lenient_reports_skipped_records(tmp_path):
    p = _write(tmp_path, [json.dumps(GOOD), _rec(prm_score=7), "not json",
                          json.dumps({**GOOD, "id": "b"})])
    traces, rep = load_traces(p, lenient=True, return_report=True)
    assert len(traces) == 2
    assert isinstance(rep, LoadReport)
    assert rep.n_loaded == 2 and rep.n_skipped == 2
    assert ":2: steps[0]: field 'prm_score'" in rep.reasons[0]
    assert ":3: invalid JSON" in rep.reasons[1]
    assert "skipped 2" in rep.summary()
    # without asking for the report, nothing is dropped silently: a warning says so
    with pytest.warns(UserWarning, match="loaded 2 traces, skipped 2"):
        load_traces(p, lenient=True)


def test_step_and_trace_constructors_validate():
    with pytest.raises(TraceFormatError, match="field 'prm_score' must be in"):
        Step(prm_score=float("nan"))
    with pytest.raises(TraceFormatError, match="field 'label'"):
        Step(label="right")
    with pytest.raises(TraceFormatError, match="field 'steps' must be a non-empty list"):
        Trace("a", "m", [])
    with pytest.raises(TraceFormatError, match="field 'model'"):
        Trace("a", "", [Step()])


def test_numeric_id_is_refused():
    # the format says id is a string; 17 and "17" would otherwise be the same trace
    with pytest.raises(TraceFormatError, match=r"x:1: field 'id' .* got 17 \(quote it\)"):
        trace_from_dict({"id": 17, "model": "m", "steps": [{}]}, "x:1")
    assert trace_from_dict({"id": "17", "model": "m", "steps": [{}]}).id == "17"


# --------------------------------------------------------------------------- properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_text = st.one_of(st.none(), st.text(max_size=8))
_step = st.builds(
    Step,
    text=_text,
    prm_score=st.one_of(st.none(), st.floats(0.0, 1.0, allow_nan=False)),
    tokens=st.one_of(st.none(), st.integers(0, 10**6)),
    label=st.sampled_from(["correct", "incorrect", None]),
)
_trace = st.builds(
    Trace,
    id=st.text(min_size=1, max_size=6),
    model=st.text(min_size=1, max_size=6),
    steps=st.lists(_step, min_size=1, max_size=6),
    final_correct=st.one_of(st.none(), st.booleans()),
    problem=_text,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_trace, min_size=1, max_size=5, unique_by=lambda t: (t.id, t.model)))
def test_round_trip_property(tmp_path_factory, traces):
    p = tmp_path_factory.mktemp("rt") / "t.jsonl"
    save_traces(traces, p)
    assert load_traces(p) == traces
    table = traces_to_table(traces)
    ref = np.concatenate([hidden_state_labels(t) for t in traces])
    assert np.array_equal(table.state, ref)
