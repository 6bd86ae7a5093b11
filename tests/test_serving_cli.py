"""``trim-pomdp route`` end to end against the fake server (threshold policy), resume, errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from fake_server import FakeServer, ScriptedStep

from trim_pomdp.cli import main
from trim_pomdp.commands.route import _select_policy
from trim_pomdp.errors import TrimPomdpError


@pytest.fixture
def server():
    with FakeServer(default_score=0.9, n_steps=3) as srv:
        yield srv


def write_problems(path, n):
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"p{i}", "problem": f"Problem {i}?", "answer": "42"}) + "\n")


def argv(srv, probs, out, *extra):
    u = srv.url
    return ["route", "--problems", str(probs), "--cheap", f"{u}/v1/org/cheap",
            "--strong", f"{u}/v1/org/strong", "--prm", f"{u}/v1/org/prm", "--out", str(out),
            "--no-progress", "--backoff", "0.001", *extra]


def test_route_threshold_end_to_end_and_resume(server, tmp_path, capsys):
    probs, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_problems(probs, 4)
    # problem 1's second draft scores low: TRIM-Thr(0.5) regenerates it
    server.add_solution("org/cheap", "Problem 1?", [
        ScriptedStep("a", score=0.9), ScriptedStep("b", score=0.2, tokens=30),
        ScriptedStep("\\boxed{42}", score=0.9)])
    server.add_solution("org/strong", "Problem 1?", [
        ScriptedStep("A"), ScriptedStep("B", tokens=50), ScriptedStep("\\boxed{42}")])
    rc = main(argv(server, probs, out, "--threshold", "0.5", "--json"))
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["done"] == 4 and rep["skipped"] == 0 and rep["file_accuracy"] == 1.0
    assert rep["regenerations"] == 1 and rep["strong_tokens"] == 50
    assert rep["file_strong_tokens_per_query"] == 12.5
    recs = {json.loads(x)["id"]: json.loads(x) for x in out.read_text().splitlines()}
    assert [s["writer"] for s in recs["p1"]["steps"]] == ["cheap", "strong", "cheap"]
    assert all(s["label"] == "correct" for s in recs["p0"]["steps"])
    # model names with slashes are split off the URL correctly
    assert {r.model for r in server.log} == {"org/cheap", "org/strong", "org/prm"}
    # re-running resumes: nothing left to do, no new requests
    n = len(server.log)
    write_problems(probs, 5)
    assert main(argv(server, probs, out, "--threshold", "0.5")) == 0
    text = capsys.readouterr().out
    assert "1 episodes this run (1 done, 0 aborted, 0 failed, 4 already in" in text
    assert "file: 5 problems, accuracy 1.000" in text
    assert len(server.log) - n == 3 * 2  # 3 drafts + 3 PRM calls for the new problem only


def test_route_failures_exit_code(server, tmp_path, capsys):
    probs, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_problems(probs, 2)
    server.fail("pooling", times=None, error=500)
    rc = main(argv(server, probs, out, "--threshold", "0.5", "--retries", "0"))
    assert rc == 1
    err = capsys.readouterr().err
    assert "2 problems failed (see" in err and "re-run the same command" in err


def test_route_no_resume_refuses_existing_file(server, tmp_path, capsys):
    probs, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_problems(probs, 1)
    out.write_text('{"id": "p0"}\n')
    assert main(argv(server, probs, out, "--threshold", "0.5", "--no-resume")) == 2
    assert "exists and --no-resume was given" in capsys.readouterr().err
    assert server.log == []


def test_route_bad_endpoint_and_header(tmp_path, capsys):
    probs = tmp_path / "p.jsonl"
    write_problems(probs, 1)
    base = ["route", "--problems", str(probs), "--strong", "http://127.0.0.1:9/v1/s",
            "--prm", "http://127.0.0.1:9/v1/p", "--out", str(tmp_path / "o"), "--threshold", "1"]
    assert main(base + ["--cheap", "127.0.0.1:9/m"]) == 2
    assert "endpoint must look like http://HOST:PORT[/v1]/MODEL" in capsys.readouterr().err
    assert main(base + ["--cheap", "http://127.0.0.1:9/v1/c", "--header", "nocolon"]) == 2
    assert "--header must look like 'Name: value'" in capsys.readouterr().err
    assert main(base + ["--cheap", "http://127.0.0.1:9/v1/c", "--max-steps", "31"]) == 2
    assert "--max-steps must be in [1, 30]; got 31" in capsys.readouterr().err
    probs.write_text('{"id": "a"}\n')
    assert main(base + ["--cheap", "http://127.0.0.1:9/v1/c"]) == 2
    assert "p.jsonl:1: field 'problem' must be a non-empty string" in capsys.readouterr().err


def test_select_policy_nearest_lambda():
    bank = SimpleNamespace(lambdas=[0.0, 0.001, 0.01], policies=["p0", "p1", "p2"])
    assert _select_policy(bank, 0.002) == "p1"
    assert _select_policy(bank, 1.0) == "p2"
    with pytest.raises(TrimPomdpError, match="holds no policies"):
        _select_policy(SimpleNamespace(lambdas=[], policies=[]), 0.1)
    # PolicyBank.nearest (router piece) is used when the bank has it
    assert _select_policy(SimpleNamespace(nearest=lambda lam: f"near {lam}"), 0.5) == "near 0.5"


def test_route_with_pomdp_policy_bank(server, tmp_path, capsys):
    # known answers: at lambda = 1e6 a regeneration costs 1e6 per
    # strong token, so the policy never regenerates; at lambda = 0 a draft with a score that is
    # 12x likelier under S2 than under S0 is regenerated (continuing it can only fail).
    np = pytest.importorskip("numpy")
    from trim_pomdp.routing.bank import solve_grid
    from trim_pomdp.routing.model import TrimModel
    obs = np.array([[0.05, 0.15, 0.3, 0.5], [0.5, 0.3, 0.15, 0.05], [0.6, 0.25, 0.1, 0.05]])
    model = TrimModel.from_parameters(p_w=0.85, p_s=0.95, hazard=np.full(30, 0.25),
                                           obs_matrix=obs)
    bank_path = solve_grid(model, [0.0, 1e6]).save(tmp_path / "bank.npz")
    probs = tmp_path / "p.jsonl"
    write_problems(probs, 2)
    server.add_solution("org/cheap", "Problem 1?", [
        ScriptedStep("a", score=0.9), ScriptedStep("b", score=0.05), ScriptedStep("\\boxed{42}")])
    server.add_solution("org/strong", "Problem 1?", [
        ScriptedStep("A"), ScriptedStep("B", tokens=50), ScriptedStep("\\boxed{42}")])
    for lam, expect in ((1e6, ["continue"] * 3), (0.0, ["continue", "regenerate", "continue"])):
        out = tmp_path / f"t{lam:g}.jsonl"
        assert main(argv(server, probs, out, "--policy", str(bank_path), "--budget", str(lam))) == 0
        recs = {json.loads(x)["id"]: json.loads(x) for x in out.read_text().splitlines()}
        assert [s["decision"] for s in recs["p1"]["steps"]] == expect
        for r in recs.values():
            for s in r["steps"]:
                assert len(s["belief"]) == 3 and abs(sum(s["belief"]) - 1) < 1e-9
    capsys.readouterr()


@pytest.mark.parametrize("client, agent", [(None, "aiohttp"), ("httpx", "python-httpx")])
def test_route_http_client_option(server, tmp_path, capsys, client, agent):
    # the User-Agent each library sends tells which one made the requests
    probs, out = tmp_path / "p.jsonl", tmp_path / "t.jsonl"
    write_problems(probs, 2)
    extra = ["--http-client", client] if client else []
    assert main(argv(server, probs, out, "--threshold", "0.5", *extra)) == 0
    agents = {r.headers.get("user-agent", "") for r in server.log}
    assert agents and all(agent in a for a in agents), agents
    assert len(out.read_text().splitlines()) == 2


def test_route_with_rl_and_latent_banks(server, tmp_path, capsys):
    # any saved bank routes: an RL bank whose routers are constants (the largest lambda always
    # regenerates, the others never), and a TRIM-POMDP+ bank (latent classes; the Router
    # filters over its 3 x D x B hidden states)
    np = pytest.importorskip("numpy")
    from trim_pomdp.rl import nn
    from trim_pomdp.rl.agents import RLRouter
    from trim_pomdp.rl.grid import RLRouterBank
    from trim_pomdp.routing.bank import solve_grid
    from trim_pomdp.routing.latent_model import LatentTrimModel
    from trim_pomdp.routing.model import TrimModel

    routers = []
    for i, lam in enumerate([1e-4, 1e-2]):
        p = nn.init_actor_critic(5, (4, 4), seed=i)
        p["Wpi"][:] = 0.0
        p["bpi"][:] = [0.0, 1.0] if i == 1 else [1.0, 0.0]
        routers.append(RLRouter("agg", p, lam=lam))
    RLRouterBank(routers).save(tmp_path / "trim-agg.npz")
    probs = tmp_path / "p.jsonl"
    write_problems(probs, 3)
    for lam, decision in ((1e-2, "regenerate"), (1e-4, "continue")):
        out = tmp_path / f"rl{lam:g}.jsonl"
        assert main(argv(server, probs, out, "--policy", str(tmp_path / "trim-agg.npz"),
                         "--budget", str(lam), "--concurrency", "2", "--json")) == 0
        rep = json.loads(capsys.readouterr().out)
        assert rep["policy"].startswith("trim-agg(trim-agg.npz")
        recs = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(recs) == 3
        assert {s["decision"] for r in recs for s in r["steps"]} == {decision}

    base = TrimModel.from_parameters(
        p_w=0.85, p_s=0.95, hazard=np.full(30, 0.25),
        obs_matrix=np.array([[0.05, 0.15, 0.3, 0.5], [0.5, 0.3, 0.15, 0.05],
                             [0.6, 0.25, 0.1, 0.05]]))
    latent = LatentTrimModel(base, p_w=[0.7, 0.95], p_s=[0.9, 0.97])
    solve_grid(latent, [1e-3]).save(tmp_path / "plus.npz")
    out = tmp_path / "plus.jsonl"
    assert main(argv(server, probs, out, "--policy", str(tmp_path / "plus.npz"),
                     "--budget", "1e-3", "--json")) == 0
    assert json.loads(capsys.readouterr().out)["policy"].startswith("trim-pomdp+(plus.npz")
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 3
    assert all(len(s["belief"]) == 6 and abs(sum(s["belief"]) - 1) < 1e-9
               for r in recs for s in r["steps"] if s["belief"] is not None)


def test_route_fit_solve_route_closes_the_loop(server, tmp_path, capsys):
    # the loop: traces written by `route` (answers checked, no step labels) feed
    # `fit` directly (outcome EM), whose models feed `solve-grid`, whose bank feeds `route`
    probs = tmp_path / "p.jsonl"
    write_problems(probs, 40)
    for i in range(40):
        wrong = i % 3 == 0
        server.add_solution("org/cheap", f"Problem {i}?", [
            ScriptedStep(f"start {i}", score=0.8 if i % 2 else 0.6),
            ScriptedStep(f"{'bad' if wrong else 'good'} {i}", score=0.2 if wrong else 0.9),
            ScriptedStep(f"so \\boxed{{{41 if wrong else 42}}} {i}", score=0.3 if wrong else 0.8),
        ])
    traces = tmp_path / "t.jsonl"
    assert main(argv(server, probs, traces, "--threshold", "0.1")) == 0
    capsys.readouterr()
    fitted = tmp_path / "fit"
    assert main(["fit", str(traces), "--out", str(fitted), "--p-s", "0.95", "--em-bins", "5",
                 "--score-bins", "5", "--em-bootstrap", "0", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # 14 of 40 answers are wrong, each after one wrong step among three: p_w ~ 1 - 14/120
    assert summary["outcome_em"]["n_wrong"] == 14
    assert 0.8 < summary["transition"]["p_w"] < 0.95
    bank = tmp_path / "bank.npz"
    assert main(["solve-grid", "--transition", str(fitted / "transition.npz"),
                 "--observation", str(fitted / "observation.npz"),  # its 5 bins recorded
                 "--lambdas", "4", "--out", str(bank)]) == 0
    capsys.readouterr()
    again = tmp_path / "again.jsonl"
    assert main(argv(server, probs, again, "--policy", str(bank), "--budget", "1e-6")) == 0
    recs = [json.loads(x) for x in again.read_text().splitlines()]
    assert len(recs) == 40
    # at a tiny lambda the POMDP regenerates the drafts the PRM scores low
    assert any(s["decision"] == "regenerate" for r in recs for s in r["steps"])
