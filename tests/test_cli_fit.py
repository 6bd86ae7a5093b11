import json

import numpy as np
import pytest

from trim_pomdp.cli import main
from trim_pomdp.observation import ObservationModel
from trim_pomdp.synthetic import generate_traces
from trim_pomdp.traces import load_traces, save_traces
from trim_pomdp.transition import TransitionModel


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    cheap = generate_traces(n_traces=600, p_w=0.8, seed=1)
    strong = generate_traces(n_traces=200, p_w=0.8, p_s=0.95, model="strong", token_mu=4.6,
                             seed=2)
    save_traces(cheap, d / "cheap.jsonl")
    save_traces(strong, d / "strong.jsonl")
    return d, cheap, strong


def test_fit_writes_models_summary_plots(files, tmp_path, capsys):
    d, cheap, strong = files
    out = tmp_path / "out"
    rc = main(["fit", str(d / "cheap.jsonl"), "--strong", str(d / "strong.jsonl"), "--out",
               str(out), "--observation", "beta", "--score-bins", "5", "--min-bins", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    ref = TransitionModel().fit(cheap, strong)
    assert f"p_w = {ref.p_w_:.4f}" in text and f"p_s = {ref.p_s_:.4f}" in text
    assert "held-out log-likelihood per step" in text and "AUROC" in text
    for name in ("transition.npz", "observation.npz", "observation_matrix.npy", "summary.json",
                 "reliability.png", "state_histograms.png"):
        assert (out / name).exists(), name
    tm = TransitionModel.load(out / "transition.npz")
    assert tm.p_w_ == ref.p_w_ and tm.n_w_ == ref.n_w_
    om = ObservationModel.load(out / "observation.npz")
    Z = np.load(out / "observation_matrix.npy")
    assert Z.shape == (3, 10)
    assert np.array_equal(Z, om.discretize(5, 2))
    ref_om = ObservationModel(estimator="beta", features="score+min").fit(cheap)
    assert np.allclose(Z, ref_om.discretize(5, 2), atol=1e-12)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["transition"]["n_w"] == ref.n_w_
    assert set(summary["observation_comparison"]) == {"kde", "beta", "hist"}


def test_fit_json_and_p_s(files, tmp_path, capsys):
    d, cheap, _ = files
    rc = main(["fit", str(d / "cheap.jsonl"), "--p-s", "0.9", "--out", str(tmp_path),
               "--json", "--no-plots", "--features", "score"])
    assert rc == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["transition"]["p_s"] == 0.9 and obj["observation"]["features"] == "score"
    assert not (tmp_path / "reliability.png").exists()


def test_fit_errors(files, tmp_path, capsys):
    d, _, _ = files
    assert main(["fit", str(d / "cheap.jsonl"), "--out", str(tmp_path)]) == 2
    assert "give --strong STRONG or --p-s P" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "missing.jsonl"), "--p-s", "0.9", "--out",
                 str(tmp_path)]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    lines = (d / "cheap.jsonl").read_text().splitlines()[:3]
    rec = json.loads(lines[1])
    rec["steps"][0]["prm_score"] = 1.5
    bad.write_text("\n".join([lines[0], json.dumps(rec), lines[2]]) + "\n")
    assert main(["fit", str(bad), "--p-s", "0.9", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2: steps[0]: field 'prm_score' must be in [0, 1]; got 1.5" in err
    # lenient: skipped and reported, the rest is fitted (too few for the observation model)
    rc = main(["fit", str(bad), "--p-s", "0.9", "--out", str(tmp_path), "--lenient",
               "--no-plots"])
    out = capsys.readouterr()
    assert "loaded 2 traces, skipped 1" in out.out
    assert rc == 2 and "state S" in out.err and "need at least 10" in out.err


def test_traces_from_processbench(tmp_path, capsys):
    recs = [{"id": f"gsm8k-{i}", "generator": "G" if i % 2 else "H", "problem": "p",
             "steps": ["one step", "two steps here"], "final_answer_correct": bool(i % 2),
             "label": -1 if i % 2 else 1} for i in range(6)]
    src = tmp_path / "gsm8k.json"
    src.write_text(json.dumps(recs))
    out = tmp_path / "pb.jsonl"
    assert main(["traces-from-processbench", str(src), "--out", str(out), "--table"]) == 0
    text = capsys.readouterr().out
    assert "wrote 6 traces (12 steps)" in text
    assert "| G | 3 | 6 | 6 | 1.000 |" in text and "| H | 3 | 6 | 3 | 0.500 |" in text
    tr = load_traces(out, first_error_only=True)
    assert [s.label for s in tr[0].steps] == ["correct", "incorrect"]
    assert tr[0].steps[1].tokens == 4  # ceil(14 / 4)
    assert main(["traces-from-processbench", str(src), "--generator", "nobody", "--table"]) == 2
    assert "no records from generator 'nobody'" in capsys.readouterr().err
    assert main(["traces-from-processbench", str(src)]) == 2
    # the fit command reads ProcessBench directly too (no PRM scores: observation skipped)
    rc = main(["fit", str(src), "--format", "processbench", "--generator", "H",
               "--strong", str(src), "--strong-generator", "G", "--out", str(tmp_path / "o")])
    text = capsys.readouterr().out
    assert rc == 0 and "p_w = 0.5000" in text and "p_s = 1.0000" in text
    assert "observation model and calibration skipped" in text
