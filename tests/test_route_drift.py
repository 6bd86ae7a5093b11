"""``trim-pomdp route --drift-reference``: the monitor is fed by the serving loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fake_server import FakeServer

from trim_pomdp.cli import main
from trim_pomdp.traces import Step, Trace, save_traces


@pytest.fixture
def server():
    with FakeServer(default_score=0.97, n_steps=3) as srv:
        yield srv


def _argv(srv, probs, out, *extra):
    u = srv.url
    return ["route", "--problems", str(probs), "--cheap", f"{u}/v1/org/cheap",
            "--strong", f"{u}/v1/org/strong", "--prm", f"{u}/v1/org/prm", "--out", str(out),
            "--no-progress", "--backoff", "0.001", *extra]


def test_route_feeds_the_drift_monitor(server, tmp_path, capsys):
    from trim_pomdp.trim import TrimModel, solve_grid

    obs = np.array([[0.05, 0.15, 0.3, 0.5], [0.5, 0.3, 0.15, 0.05], [0.6, 0.25, 0.1, 0.05]])
    model = TrimModel.from_parameters(p_w=0.85, p_s=0.95, hazard=np.full(30, 0.25),
                                      obs_matrix=obs)
    bank = solve_grid(model, [1e6]).save(tmp_path / "bank.npz")
    rng = np.random.default_rng(0)
    ref = [Trace(id=f"r{i}", model="cheap", final_correct=None,
                 steps=[Step(prm_score=float(rng.uniform()), tokens=20) for _ in range(3)])
           for i in range(80)]
    save_traces(ref, tmp_path / "ref.jsonl")
    probs = tmp_path / "p.jsonl"
    with probs.open("w") as fh:
        for i in range(6):
            fh.write(json.dumps({"id": f"p{i}", "problem": f"Q{i}?", "answer": "42"}) + "\n")
    out = tmp_path / "t.jsonl"
    rc = main(_argv(server, probs, out, "--policy", str(bank), "--budget", "1e6",
                    "--drift-reference", str(tmp_path / "ref.jsonl"), "--json"))
    assert rc == 0
    cap = capsys.readouterr()
    rep = json.loads(cap.out)
    d = rep["drift"]
    assert d["n_episodes"] == 6 and d["n_steps"] == 18
    assert d["calibration"]["n_reference"] == 80
    # every live score is 0.97, far above the uniform reference: the location CUSUM grows
    assert d["cusum"]["location_up"] > 0
    if d["alarm"]:
        assert "PRM drift detected" in cap.err
    # the reference must be usable, and the option needs a POMDP bank (bad input: exit 2)
    (tmp_path / "few.jsonl").write_text("")
    assert main(_argv(server, probs, tmp_path / "t2.jsonl", "--policy", str(bank), "--budget",
                      "1e6", "--drift-reference", str(tmp_path / "few.jsonl"))) == 2
    assert "--drift-reference" in capsys.readouterr().err
    assert main(_argv(server, probs, tmp_path / "t3.jsonl", "--threshold", "0.5",
                      "--drift-reference", str(tmp_path / "ref.jsonl"))) == 2
    assert "--drift-reference needs --policy" in capsys.readouterr().err
