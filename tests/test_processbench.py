import json

import numpy as np
import pytest

from trim_pomdp.errors import TraceFormatError
from trim_pomdp.fit.transition import TransitionModel
from trim_pomdp.traces.processbench import (
    accuracy_by_model,
    estimate_tokens,
    format_table,
    read_processbench,
)
from trim_pomdp.traces.table import hidden_state_labels, traces_to_table

REC = {"id": "math-0", "generator": "G", "problem": "2+2?",
       "steps": ["a" * 9, "bbbb", "c", "d"], "final_answer_correct": False, "label": 1}


def _write(tmp_path, records, name="math.json"):
    p = tmp_path / name
    p.write_text(json.dumps(records), encoding="utf-8")
    return p


def test_labels_states_tokens_from_first_error(tmp_path):
    p = _write(tmp_path, [REC, {**REC, "id": "math-1", "label": -1, "final_answer_correct": True,
                                "generator": "H"}])
    a, b = read_processbench(p)
    assert [s.label for s in a.steps] == ["correct", "incorrect", None, None]
    assert hidden_state_labels(a).tolist() == [0, 2, 1, 1]
    assert [s.label for s in b.steps] == ["correct"] * 4
    assert [s.tokens for s in a.steps] == [3, 1, 1, 1]  # ceil(9/4), ceil(4/4), max(1, ...)
    assert a.model == "G" and a.final_correct is False and a.problem == "2+2?"
    assert a.extra == {"source": "processbench", "subset": "math"}
    assert all(s.prm_score is None for s in a.steps)
    assert [t.id for t in read_processbench(p, generator="H")] == ["math-1"]
    assert estimate_tokens("x" * 40) == 10 and estimate_tokens("") == 1
    assert estimate_tokens("x" * 10, chars_per_token=3.0) == 4


@pytest.mark.parametrize(
    "patch, match",
    [
        ({"label": 4}, r"math\.json\[0\] \(id math-0\): field 'label' must be -1 or a step index in \[0, 3\]; got 4"),  # noqa: E501
        ({"label": "1"}, r"field 'label' must be -1 or a step index"),
        ({"steps": []}, r"field 'steps' must be a non-empty list of strings"),
        ({"steps": ["ok", 3]}, r"steps\[1\] must be a string"),
        ({"final_answer_correct": None}, r"field 'final_answer_correct' must be true or false"),
        ({"generator": 5}, r"field 'generator' is missing"),
        ({"id": ""}, r"math\.json\[0\]: field 'id' is missing"),
    ],
)
def test_bad_records(tmp_path, patch, match):
    p = _write(tmp_path, [{**REC, **patch}])
    with pytest.raises(TraceFormatError, match=match):
        read_processbench(p)


def test_lenient_skips_and_reports(tmp_path):
    from trim_pomdp.traces.records import LoadReport

    p = _write(tmp_path, [REC, {**REC, "label": 9}, {**REC, "id": "math-2"}])
    rep = LoadReport()
    tr = read_processbench(p, lenient=True, report=rep)
    assert [t.id for t in tr] == ["math-0", "math-2"]
    assert rep.n_skipped == 1 and "math.json[1] (id math-0): field 'label'" in rep.reasons[0]
    with pytest.warns(UserWarning, match="loaded 2 traces, skipped 1"):
        read_processbench(p, lenient=True)
    with pytest.raises(TraceFormatError, match=r"math\.json\[1\]"):
        read_processbench(p)


def test_invalid_utf8(tmp_path):
    p = tmp_path / "x.json"
    p.write_bytes(b'[{"id": "\xff"}]')
    with pytest.raises(TraceFormatError, match=r"x\.json: not valid UTF-8"):
        read_processbench(p)


def test_not_an_array_and_bad_json(tmp_path):
    with pytest.raises(TraceFormatError, match="expected a JSON array"):
        read_processbench(_write(tmp_path, {"a": 1}))
    bad = tmp_path / "bad.json"
    bad.write_text("[{", encoding="utf-8")
    with pytest.raises(TraceFormatError, match=r"bad\.json:1: invalid JSON"):
        read_processbench(bad)


def test_real_processbench_matches_published_statistics(processbench_dir):
    traces = [t for f in sorted(processbench_dir.glob("*.json")) for t in read_processbench(f)]
    assert len(traces) == 3400
    table = traces_to_table(traces)
    # ../shared/data/README.md: median 7 steps, 13.4% of labelled steps wrong, 65% of
    # solutions contain a wrong step, 50% correct final answers
    assert np.median(table.length) == 7
    labelled = table.label >= 0
    assert (table.label[labelled] == 0).mean() == pytest.approx(0.134, abs=5e-4)
    has_wrong = np.add.reduceat((table.label == 0).astype(int), table.offsets[:-1]) > 0
    assert has_wrong.mean() == pytest.approx(0.65, abs=5e-3)
    assert np.mean([t.final_correct for t in traces]) == pytest.approx(0.50, abs=5e-3)
    rows = {r.model: r for r in accuracy_by_model(traces)}
    assert len(rows) == 12
    # per generator share of wrong labelled steps: 8.7% (Qwen2.5-72B) .. 31.1% (Qwen2-1.5B)
    assert 1 - rows["Qwen2.5-72B-Instruct"].accuracy.p == pytest.approx(0.087, abs=5e-4)
    assert 1 - rows["Qwen2-1.5B-Instruct"].accuracy.p == pytest.approx(0.311, abs=5e-4)
    # TransitionModel uses the same estimator
    cheap = [t for t in traces if t.model == "Qwen2.5-1.5B-Instruct"]
    strong = [t for t in traces if t.model == "Qwen2.5-72B-Instruct"]
    tm = TransitionModel().fit(cheap, strong)
    assert (tm.k_w_, tm.n_w_) == (rows["Qwen2.5-1.5B-Instruct"].accuracy.k,
                                  rows["Qwen2.5-1.5B-Instruct"].accuracy.n)
    assert tm.p_s_ == rows["Qwen2.5-72B-Instruct"].accuracy.p
    assert "| Qwen2-1.5B-Instruct |" in format_table(list(rows.values()))
