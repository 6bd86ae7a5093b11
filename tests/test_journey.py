"""The command-line journey of issue 13, each command given only paths (and, for ``route``,
the endpoints): fit -> solve-grid -> evaluate --bank -> route -> fit on the routed traces ->
solve-grid.  Every artefact carries what the next command needs (bins, features, a default
budget); no option beyond paths is passed anywhere.  ``route`` runs against the tests' fake
OpenAI-compatible server, started and stopped here."""

from __future__ import annotations

import json
import os
import re

import numpy as np
from fake_server import FakeServer, ScriptedStep
from proc_utils import REPO, child_env, run_python

from trim_pomdp.cli import main
from trim_pomdp.fit.observation import ObservationModel
from trim_pomdp.fit.transition import TransitionModel
from trim_pomdp.routing.bank import PolicyBank, default_budget
from trim_pomdp.simulation.scenario import default_scenario
from trim_pomdp.simulation.synth_traces import simulate_traces
from trim_pomdp.traces.records import save_traces

N_ROUTED = 45

#: what ``pip install ".[test]"`` brings beyond ``pip install ".[http]"``: in the plain-install
#: rerun these imports fail, as they would there (aiohttp and math-verify stay: the http extra)
NOT_IN_PLAIN_INSTALL = ("matplotlib", "gymnasium", "dask", "distributed", "httpx",
                        "prometheus_client", "openai", "nbclient", "nbformat", "ipykernel")
PLAIN = os.environ.get("TRIM_POMDP_TEST_PLAIN_INSTALL") == "1"


def script_problems(srv: FakeServer, path) -> tuple[set[str], set[str]]:
    """45 problems of 4 cheap steps.  Every third one goes wrong at step 2 without the PRM
    noticing (scores 0.8-0.85) and answers 41 instead of 42; every third from the second on
    has a harmless step 2 that the PRM scores 0.08.  The strong model's steps are the server's
    default (PRM score 0.9, final answer 42).  Returns (wrong ids, low-scored ids)."""
    wrong, low = set(), set()
    with path.open("w") as fh:
        for i in range(N_ROUTED):
            bad, dip = i % 3 == 0, i % 3 == 1
            (wrong if bad else low if dip else set()).add(f"q{i}")
            srv.add_solution("org/cheap", f"Problem {i}?", [
                ScriptedStep(f"set up {i}", score=0.92, tokens=40),
                ScriptedStep(f"{'slip' if bad else 'step'} {i}",
                             score=0.8 if bad else 0.08 if dip else 0.9, tokens=55),
                ScriptedStep(f"carry on {i}", score=0.85 if bad else 0.88, tokens=45),
                ScriptedStep(f"so the answer is \\boxed{{{41 if bad else 42}}} ({i})",
                             score=0.8 if bad else 0.9, tokens=30),
            ])
            fh.write(json.dumps({"id": f"q{i}", "problem": f"Problem {i}?", "answer": "42"})
                     + "\n")
    return wrong, low


def test_fit_solve_evaluate_route_fit_solve_with_paths_only(tmp_path, capsys):
    # 1. labelled traces of the demo's scenario, as a user's cheap/strong runs would be
    sc = default_scenario()
    cheap, strong = tmp_path / "cheap.jsonl", tmp_path / "strong.jsonl"
    save_traces(simulate_traces(sc, model="cheap", n_problems=1200, seed=1), cheap)
    save_traces(simulate_traces(sc, model="strong", n_problems=400, seed=2), strong)
    sc.to_json(tmp_path / "default.json")
    world = json.loads((tmp_path / "default.json").read_text())
    world["n_problems"] = 2000  # a smaller evaluation world, given as a path
    (tmp_path / "world.json").write_text(json.dumps(world))

    # fit: the bins and features it chose travel with observation.npz
    fit1 = tmp_path / "fit"
    capsys.readouterr()
    assert main(["fit", str(cheap), "--strong", str(strong), "--out", str(fit1)]) == 0
    if PLAIN:  # no plot extra: one line says so, everything else is written
        cap = capsys.readouterr()
        said = cap.out + cap.err
        assert 'pip install "trim_pomdp[plot]"' in said and "Traceback" not in said, said
        assert not list(fit1.glob("*.png"))
    om = ObservationModel.load(fit1 / "observation.npz")
    # the score bins were chosen by solved value (issue 15); the summary says how
    n1 = json.loads((fit1 / "summary.json").read_text())["score_bins_choice"]["n_score_bins"]
    assert om.features == "score+min" and om.binning == {"n_score_bins": n1, "n_min_bins": 4}

    # solve-grid: no --n-min-bins (the error of issue 13, item 1), no other option
    bank = tmp_path / "bank.npz"
    assert main(["solve-grid", "--transition", str(fit1 / "transition.npz"),
                 "--observation", str(fit1 / "observation.npz"), "--out", str(bank)]) == 0
    b1 = PolicyBank.load(bank)
    assert (b1.model.n_score_bins, b1.model.n_min_bins, b1.model.uses_min) == (n1, 4, True)
    assert len(b1) == 32 and b1.default_lambda == default_budget(b1, 0.10)
    assert b1.lambdas[0] == 0.0  # the default grid reaches the accuracy plateau
    tm = TransitionModel.load(fit1 / "transition.npz")
    assert b1.model.p_w == tm.p_w_ and b1.model.p_s == tm.p_s_
    capsys.readouterr()

    # evaluate --bank: the bank stands in for trim-pomdp, beside the baselines
    assert main(["evaluate", "--scenario", str(tmp_path / "world.json"), "--bank",
                 str(bank)]) == 0
    out = capsys.readouterr()
    rows = {ln.split()[0]: ln.split() for ln in out.out.splitlines()
            if ln.split() and ln.split()[0] in ("trim-pomdp", "trim-thr", "always-strong")}
    assert set(rows) == {"trim-pomdp", "trim-thr", "always-strong"}
    assert "2000 problems" in out.out
    assert "not rebuilt from the scenario: trim-pomdp+" in out.err
    # the fitted POMDP beats the threshold router on delta-IBC in its own world (demo: 1871
    # vs 795 on 20,000 problems)
    assert float(rows["trim-pomdp"][5]) > float(rows["trim-thr"][5])

    # 2. route real (fake) endpoints with the bank's default budget
    with FakeServer(default_score=0.9, n_steps=4) as srv:
        problems = tmp_path / "problems.jsonl"
        wrong, low = script_problems(srv, problems)
        u = srv.url
        routed = tmp_path / "routed.jsonl"
        assert main(["route", "--problems", str(problems), "--cheap", f"{u}/v1/org/cheap",
                     "--strong", f"{u}/v1/org/strong", "--prm", f"{u}/v1/org/prm",
                     "--policy", str(bank), "--out", str(routed)]) == 0
    text = capsys.readouterr().out
    lam = float(re.search(r"lambda~([0-9.e+-]+), the bank's default", text).group(1))
    assert np.isclose(lam, b1.default_lambda, rtol=1e-5)
    recs = [json.loads(x) for x in routed.read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == sorted(f"q{i}" for i in range(N_ROUTED))
    # the 0.08 drafts are regenerated (by the strong model), the drafts scored 0.88 or
    # above are kept; an answer is wrong exactly when the cheap model wrote the final 41
    decisions = {(r["id"], j): s["decision"] for r in recs for j, s in enumerate(r["steps"])}
    assert all(decisions[(q, 1)] == "regenerate" for q in low)
    assert all(decisions[(f"q{i}", j)] == "continue" for i in range(N_ROUTED) for j in (0, 3)
               if f"q{i}" not in wrong)
    for r in recs:
        cheap_41 = r["id"] in wrong and r["steps"][-1]["writer"] == "cheap"
        assert r["final_correct"] is (not cheap_41), r["id"]
    n_wrong = sum(r["final_correct"] is False for r in recs)
    assert n_wrong >= 5, n_wrong  # the PRM misses most slips: the EM has wrong answers
    assert any(s["writer"] == "strong" for r in recs for s in r["steps"])

    # 2b. refit the routing bank from the routed traces (the bank path they record): the
    # default fit's bank has the min-previous-score feature, refitted as a score-only bank
    refit = tmp_path / "refit"
    assert main(["fit", "--refit-from", str(routed), "--out", str(refit)]) == 0
    rec = json.loads((refit / "refit.json").read_text())
    assert rec["em"]["features"]["from"].startswith("score+min")
    b_refit = PolicyBank.load(refit / "bank.npz")
    assert not b_refit.model.uses_min and len(b_refit) == len(b1)
    assert b_refit.default_lambda in b_refit.lambdas
    capsys.readouterr()

    # 3. fit on the routed traces: answers only, so outcome EM (no --strong, no --p-s)
    fit2 = tmp_path / "fit2"
    assert main(["fit", str(routed), "--out", str(fit2)]) == 0
    summary = json.loads((fit2 / "summary.json").read_text())
    assert summary["outcome_em"]["n_wrong"] == n_wrong
    om2 = ObservationModel.load(fit2 / "observation.npz")
    n2 = summary["score_bins_choice"]["n_score_bins"]
    assert om2.features == "score" and om2.binning == {"n_score_bins": n2, "n_min_bins": None}

    # ... and solve-grid again, with paths only
    bank2 = tmp_path / "bank2.npz"
    assert main(["solve-grid", "--transition", str(fit2 / "transition.npz"),
                 "--observation", str(fit2 / "observation.npz"), "--out", str(bank2)]) == 0
    b2 = PolicyBank.load(bank2)
    assert (b2.model.n_score_bins, b2.model.uses_min) == (n2, False)
    assert b2.default_lambda in b2.lambdas
    capsys.readouterr()


def test_the_journey_in_a_plain_install_with_the_http_extra(tmp_path):
    """The same journey in a child process where every module that only the test extra brings
    is blocked (``sys.modules[name] = None`` makes its import fail, as in ``pip install
    ".[http]"``), so a command that reaches for matplotlib, httpx, prometheus-client or the
    rest fails here instead of passing on the test environment's extras."""
    if PLAIN:  # this is the child run itself
        return
    code = ("import sys\n"
            f"for m in {NOT_IN_PLAIN_INSTALL!r}: sys.modules[m] = None\n"
            "import pytest\n"
            "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '--basetemp', sys.argv[1],"
            " 'tests/test_journey.py::test_fit_solve_evaluate_route_fit_solve_with_paths_only']))")
    r = run_python(["-c", code, str(tmp_path / "t")], cwd=REPO,
                   env=child_env(TRIM_POMDP_TEST_PLAIN_INSTALL="1"))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "1 passed" in r.stdout, r.stdout[-2000:]


def test_route_with_a_bank_that_records_no_budget_asks_for_one(tmp_path, capsys):
    from trim_pomdp.routing.bank import solve_grid
    from trim_pomdp.routing.model import TrimModel

    obs = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.7, 0.2, 0.1]])
    model = TrimModel.from_parameters(p_w=0.85, p_s=0.95, hazard=np.full(30, 0.25),
                                      obs_matrix=obs)
    path = solve_grid(model, [1e-3, 1e-1]).save(tmp_path / "old.npz")  # no default recorded
    (tmp_path / "p.jsonl").write_text('{"id": "a", "problem": "x?", "answer": "1"}\n')
    u = "http://127.0.0.1:9/v1"
    assert main(["route", "--problems", str(tmp_path / "p.jsonl"), "--cheap", f"{u}/c",
                 "--strong", f"{u}/s", "--prm", f"{u}/p", "--policy", str(path),
                 "--out", str(tmp_path / "t.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "records no default budget" in err and "--budget" in err
