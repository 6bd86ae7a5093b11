"""The closed loop (issue 15, item 2): refit from routed traces, `fit --refit-from`, the
Adapter and `route --adapt` against the fake OpenAI-compatible server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fake_server import FakeServer, ScriptedStep

from trim_pomdp.cli import main
from trim_pomdp.fit.adapt import Adapter, episode_cost
from trim_pomdp.fit.refit import (
    bank_key,
    lineage_key,
    load_routed,
    refit_bank,
    refit_observation,
    router_tag,
)
from trim_pomdp.routing.bank import PolicyBank, solve_grid
from trim_pomdp.routing.model import TrimModel
from trim_pomdp.routing.router import Router
from trim_pomdp.traces.records import Step, Trace, save_traces, trace_to_dict

P_W, P_S, HAZ = 0.85, 0.95, 0.2
TRUE = np.array([[0.02, 0.03, 0.05, 0.05, 0.08, 0.1, 0.12, 0.15, 0.18, 0.22],
                 [0.2, 0.17, 0.14, 0.12, 0.1, 0.08, 0.07, 0.05, 0.04, 0.03],
                 [0.2, 0.17, 0.14, 0.12, 0.1, 0.08, 0.07, 0.05, 0.04, 0.03]])
# what the router believes before the refit: the PRM was much less sure of correct steps
OLD = np.array([[0.1] * 10,
                [0.3, 0.2, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05],
                [0.3, 0.2, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]])


def _model(obs, edges=None):
    return TrimModel.from_parameters(p_w=P_W, p_s=P_S, hazard=np.full(30, HAZ),
                                     obs_matrix=obs, score_edges=edges)


def sample_routed(true_obs, edges, policy, n, seed, *, route=True):
    """Episodes of the TRIM generative model (the model ``OutcomeEM`` and ``TrimModel``
    assume), routed by ``policy``, in the serving format: a draft is correct w.p. p_w after
    a correct prefix (state S0, else S2 = first wrong), every draft after a wrong step is
    S1; its score is uniform inside a bin drawn from ``true_obs[state]``; a regenerated
    step is correct w.p. p_s after a correct prefix.  ``route=False``: every draft kept."""
    rng = np.random.default_rng(seed)
    lo = np.concatenate([[0.0], edges])
    hi = np.concatenate([edges, [1.0]])
    r = Router(policy)
    out = []
    for i in range(n):
        r.reset()
        ok = True
        steps = []
        for t in range(1, 31):
            final = t == 30 or rng.random() < HAZ
            if ok:
                draft_ok = rng.random() < P_W
                st = 0 if draft_ok else 2
            else:
                draft_ok, st = False, 1
            b = rng.choice(10, p=true_obs[st])
            score = float(lo[b] + (hi[b] - lo[b]) * rng.random())
            d = r.step(score, 20, final) if route else "continue"
            if d == "regenerate":
                ok = ok and rng.random() < P_S
                steps.append(Step(text=f"s{t}", prm_score=None, tokens=25, extra={
                    "writer": "strong", "decision": d, "draft_prm_score": score,
                    "cheap_tokens": 20, "strong_tokens": 25}))
            else:
                if not route and not final:
                    r.executed("continue")
                ok = ok and draft_ok
                steps.append(Step(text=f"c{t}", prm_score=score, tokens=20, extra={
                    "writer": "cheap", "decision": d, "cheap_tokens": 20, "strong_tokens": 0}))
            if final:
                break
        out.append(Trace(id=f"e{i}", model="routed:cheap+strong", steps=steps,
                         final_correct=ok))
    return out


@pytest.mark.parametrize("edges", [None, [0.3, 0.5, 0.6, 0.7, 0.76, 0.82, 0.88, 0.93, 0.97]],
                         ids=["equal-width", "uneven"])
def test_refit_recovers_a_known_observation_model(edges):
    e = np.arange(1, 10) / 10 if edges is None else np.asarray(edges)
    old = _model(OLD, None if edges is None else e)
    bank = solve_grid(old, [3e-2])
    traces = sample_routed(TRUE, e, bank[0], 4000, seed=1)
    n_regen = sum(s.extra["writer"] == "strong" for t in traces for s in t.steps)
    n_steps = sum(len(t.steps) for t in traces)
    # the decisions matter: about a third of the drafts were regenerated
    assert 0.2 * n_steps < n_regen < 0.6 * n_steps
    res = refit_observation(old, traces)
    new = res.new_obs_matrix
    # 4,000 episodes, ~20,000 scored drafts: the EM's estimate is within a few standard
    # errors of the truth (measured on seeds 1, 2: largest bin error 0.009-0.013, TV
    # 0.012-0.024), the old rows are 0.16-0.3 away in TV
    for s in range(3):
        tv_new = 0.5 * np.abs(new[s] - TRUE[s]).sum()
        tv_old = 0.5 * np.abs(OLD[s] - TRUE[s]).sum()
        assert tv_new < 0.05 and tv_old > 0.15, (s, tv_new, tv_old)
    np.testing.assert_allclose(new, TRUE, atol=0.03)
    # EM maximises the likelihood: the data fit the new model better than the old one
    assert res.loglik_after > res.loglik_before + 100
    assert res.em["converged"]
    pb = res.per_bin()
    np.testing.assert_allclose(np.array(pb["S0"]["delta"]), new[0] - OLD[0])
    # the refit model keeps the bins and the transition
    np.testing.assert_array_equal(res.model.score_edges, old.score_edges)
    assert lineage_key(res.model) == lineage_key(old)
    assert bank_key(solve_grid(res.model, [1e-3])) != bank_key(solve_grid(old, [1e-3]))
    if edges is not None:
        # the same bins drawn, so the same bin indices and decisions as with equal-width
        # bins: the refit maps scores to their bins, so it is exactly the equal-width one
        eq = _model(OLD)
        same = refit_observation(eq, sample_routed(TRUE, np.arange(1, 10) / 10,
                                                   solve_grid(eq, [3e-2])[0], 4000, seed=1))
        np.testing.assert_allclose(new, same.new_obs_matrix, rtol=0, atol=1e-12)


def test_refit_bank_rechooses_the_default_budget():
    old = _model(OLD)
    bank = solve_grid(old, np.geomspace(1e-5, 1e-2, 8))
    bank.default_lambda, bank.target_cost_fraction = float(bank.lambdas[3]), 0.10
    traces = sample_routed(TRUE, np.arange(1, 10) / 10, bank[3], 1500, seed=2)
    new, _ = refit_bank(bank, traces)
    from trim_pomdp.routing.bank import default_budget

    assert new.target_cost_fraction == 0.10
    assert new.default_lambda == default_budget(new, 0.10)
    np.testing.assert_array_equal(new.lambdas, bank.lambdas)


def test_pit_routed_matches_the_live_monitor():
    """Replaying routed traces with their executed actions gives exactly the per-episode
    statistics a monitor attached to the router saw live."""
    from trim_pomdp.routing.drift import DriftMonitor, episode_features, pit_routed

    old = _model(OLD)
    bank = solve_grid(old, [2e-4])
    traces = sample_routed(TRUE, np.arange(1, 10) / 10, bank[0], 60, seed=3)
    fed = []

    class Rec(DriftMonitor):
        def add_episode(self, a, b, n):
            fed.append((a, b, n))
            return False

    r = Router(bank[0], drift=Rec([0, 0], [1, 1], 1e9))
    for tr in traces:
        r.reset()
        for j, st in enumerate(tr.steps):
            strong = st.extra["writer"] == "strong"
            d = r.step(st.extra["draft_prm_score"] if strong else st.prm_score, 20,
                       j == len(tr.steps) - 1)
            assert d == st.extra["decision"]
    np.testing.assert_allclose(pit_routed(bank[0], traces), episode_features(np.array(fed)),
                               rtol=0, atol=1e-12)


def test_load_routed_errors(tmp_path):
    old = _model(OLD)
    bank = solve_grid(old, [1e-3])
    traces = sample_routed(TRUE, np.arange(1, 10) / 10, bank[0], 5, seed=4)
    tag = router_tag(bank, 1e-3, path="/x/bank.npz")
    recs = [dict(trace_to_dict(t), router=tag) for t in traces]
    p = tmp_path / "r.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert len(load_routed(p, old).traces) == 5
    # a kept draft without its score: file and line
    bad = json.loads(json.dumps(recs))
    bad[2]["steps"][0]["prm_score"] = None
    bad[2]["steps"][0]["writer"] = "cheap"
    p.write_text("".join(json.dumps(r) + "\n" for r in bad))
    from trim_pomdp.errors import ModelValidationError, TraceFormatError

    with pytest.raises(TraceFormatError, match=r"r\.jsonl:3: steps\[0\]: a routed step "
                                               "without prm_score"):
        load_routed(p, old)
    # another lineage (other p_w): names both banks
    other = TrimModel.from_parameters(p_w=0.7, p_s=P_S, hazard=np.full(30, HAZ),
                                      obs_matrix=OLD)
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(ModelValidationError, match=f"lineage {tag['lineage']}.*/x/bank.npz.*"
                                                   f"lineage {lineage_key(other)}"):
        load_routed(p, other, bank_label="--bank B")


def test_adapter_every_n_swaps_between_episodes():
    old = _model(OLD)
    bank = solve_grid(old, [2e-4, 1e-3])
    swaps = []
    ad = Adapter(bank, lam=2e-4, every=300, min_episodes=100, max_episodes=300,
                 on_swap=swaps.append)
    traces = sample_routed(TRUE, np.arange(1, 10) / 10, bank[0], 700, seed=5)
    r, v = ad.prepare(None, None)
    seen = []
    for i, tr in enumerate(traces):
        r, v = ad.prepare(r, v)
        seen.append(v)
        rec = ad.episode_done(tr, version=v)
        assert (rec is not None) == (i + 1 in (300, 600))
    assert [s["episode"] for s in swaps] == [300, 600] and all(s["swapped"] for s in swaps)
    assert seen == [0] * 300 + [1] * 300 + [2] * 100
    assert ad.version == 2 and r.model is not old
    assert ad.summary()["n_swaps"] == 2
    s, drafts = episode_cost(traces[0])
    assert len(drafts) == len(traces[0].steps)


def test_adapter_failed_refit_keeps_the_bank():
    old = _model(OLD)
    bank = solve_grid(old, [1e-3])
    ad = Adapter(bank, lam=1e-3, every=60, min_episodes=50, max_episodes=100,
                 refit_kw={"max_iter": 1})
    traces = sample_routed(TRUE, np.arange(1, 10) / 10, bank[0], 60, seed=6)
    for tr in traces:
        rec = ad.episode_done(tr)
    assert rec is not None and not rec["swapped"] and "did not converge" in rec["reason"]
    assert ad.version == 0 and ad.bank is bank


def _min_model(obs, q=(0.3, 0.7)):
    """``obs`` (3, 10) with a min-previous-score axis of 2 bins (edge 0.5), the min bin
    independent of the score: ``O[s, (i, m)] = obs[s, i] q[m]``."""
    joint = (np.asarray(obs)[:, :, None] * np.asarray(q)[None, None, :]).reshape(3, -1)
    return TrimModel.from_parameters(p_w=P_W, p_s=P_S, hazard=np.full(30, HAZ),
                                     obs_matrix=joint, score_edges=np.arange(1, 10) / 10,
                                     min_edges=[0.5])


def test_a_min_feature_bank_is_refitted_as_its_score_marginal():
    old = _min_model(OLD)
    marg = old.score_marginal()
    assert not marg.uses_min
    np.testing.assert_allclose(marg.obs_matrix, OLD, atol=1e-12)
    np.testing.assert_array_equal(marg.score_edges, old.score_edges)
    assert (marg.p_w, marg.p_s) == (old.p_w, old.p_s)
    traces = sample_routed(TRUE, np.arange(1, 10) / 10, solve_grid(old, [3e-2])[0], 4000,
                           seed=1)
    res = refit_observation(old, traces)
    # exactly the score-only refit of the marginal on the same traces ...
    ref = refit_observation(marg, traces)
    np.testing.assert_array_equal(res.new_obs_matrix, ref.new_obs_matrix)
    assert res.loglik_after == ref.loglik_after and res.loglik_before == ref.loglik_before
    # ... which recovers the PRM (4,000 episodes; as the score-only recovery test above)
    np.testing.assert_allclose(res.new_obs_matrix, TRUE, atol=0.03)
    assert not res.model.uses_min and res.model.n_score_bins == 10
    # what changed is recorded: the old joint matrix, the old marginal as the comparison
    assert res.old_obs_matrix.shape == (3, 20)
    np.testing.assert_allclose(res.old_on_new_bins, OLD, atol=1e-12)
    assert res.em["features"]["from"] == "score+min (10 x 2 bins)"
    assert res.em["features"]["to"] == "score (10 bins)"
    assert lineage_key(res.model) == lineage_key(marg) != lineage_key(old)


def test_adapter_refits_a_min_feature_bank_and_rejects_what_it_cannot():
    bank = solve_grid(_min_model(OLD), [2e-4, 1e-3])
    swaps = []
    ad = Adapter(bank, lam=2e-4, every=300, min_episodes=100, max_episodes=300,
                 on_swap=swaps.append)
    r, v = ad.prepare(None, None)
    for tr in sample_routed(TRUE, np.arange(1, 10) / 10, bank[0], 300, seed=5):
        r, v = ad.prepare(r, v)
        ad.episode_done(tr, version=v)
    assert len(swaps) == 1 and swaps[0]["swapped"], swaps
    assert swaps[0]["em"]["features"]["to"].startswith("score (")
    assert ad.version == 1 and not ad.bank.model.uses_min
    np.testing.assert_array_equal(ad.bank.lambdas, bank.lambdas)
    with pytest.raises(ValueError, match="needs a drift monitor"):
        Adapter(solve_grid(_model(OLD), [1e-3]))


def test_pacer_set_bank_needs_the_same_grid():
    from trim_pomdp.routing.pacing import BudgetPacer

    b = solve_grid(_model(OLD), [1e-4, 1e-3])
    pacer = BudgetPacer(b, 0.1)
    with pytest.raises(ValueError, match="same lambda grid"):
        pacer.set_bank(solve_grid(_model(TRUE), [1e-4, 2e-3]))
    b2 = solve_grid(_model(TRUE), [1e-4, 1e-3])
    pacer.set_bank(b2)
    assert pacer.policy.model is b2.model


# ----------------------------------------------------------------------------------- CLI

def _argv(srv, probs, out, *extra):
    u = srv.url
    return ["route", "--problems", str(probs), "--cheap", f"{u}/v1/org/cheap",
            "--strong", f"{u}/v1/org/strong", "--prm", f"{u}/v1/org/prm", "--out", str(out),
            "--no-progress", "--backoff", "0.001", *extra]


def _drifted_world(srv, probs, n, seed=0):
    """Problems whose cheap steps the fake PRM scores lower than the bank's model expects:
    correct solutions in [0.5, 0.75) (the model: mostly >= 0.75), wrong ones in [0, 0.3)."""
    rng = np.random.default_rng(seed)
    with probs.open("w") as fh:
        for i in range(n):
            right = rng.random() < 0.6
            fh.write(json.dumps({"id": f"p{i}", "problem": f"Question {i}?",
                                 "answer": "42" if right else "7"}) + "\n")
            steps = []
            for k in range(3):
                text = f"[cheap] q{i} step {k}" + (" \\boxed{42}" if k == 2 else "")
                srv.scores[text] = float(rng.uniform(0.5, 0.75) if right
                                         else rng.uniform(0.0, 0.3))
                steps.append(ScriptedStep(text, tokens=20))
            srv.add_solution("org/cheap", f"Question {i}?", steps)


def _bank4(tmp_path, lambdas=(0.004, 0.02)):
    obs = np.array([[0.05, 0.1, 0.25, 0.6], [0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05]])
    model = TrimModel.from_parameters(p_w=0.8, p_s=0.95, hazard=np.full(30, 1 / 3),
                                      obs_matrix=obs, max_steps=30)
    bank = solve_grid(model, list(lambdas))
    bank.default_lambda, bank.target_cost_fraction = float(bank.lambdas[0]), 0.10
    path = bank.save(tmp_path / "bank.npz")
    # held-out "training" traffic: every draft kept, scores from the model itself
    ref = sample_reference(obs, 150)
    save_traces(ref, tmp_path / "ref.jsonl")
    return bank, path


def sample_reference(obs, n, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ok = True
        steps = []
        for _ in range(3):
            st = (0 if rng.random() < 0.8 else 2) if ok else 1
            ok = ok and st == 0
            b = rng.choice(4, p=obs[st])
            steps.append(Step(prm_score=float((b + rng.random()) / 4), tokens=20))
        out.append(Trace(id=f"r{i}", model="cheap", steps=steps, final_correct=ok))
    return out


def _replay(rec, bank):
    """Decisions a router of ``bank`` at the record's lambda takes on its scores."""
    r = Router(bank.nearest(rec["router"]["lambda"]))
    out = []
    routed = [s for s in rec["steps"] if s.get("decision") is not None]
    for j, s in enumerate(routed):
        score = s["draft_prm_score"] if s["writer"] == "strong" else s["prm_score"]
        out.append(r.step(score, s["cheap_tokens"], s["is_final"] or j == len(routed) - 1))
        if not r.done and s["writer"] == "strong":
            r.executed("regenerate")
        elif not r.done:
            r.executed("continue")
    return out, [s["decision"] for s in routed]


def test_route_adapt_swaps_between_episodes_on_a_drifted_world(tmp_path, capsys):
    with FakeServer(default_score=0.6, n_steps=3) as srv:
        probs = tmp_path / "p.jsonl"
        _drifted_world(srv, probs, 170)
        bank, path = _bank4(tmp_path)
        out = tmp_path / "routed.jsonl"
        rc = main(_argv(srv, probs, out, "--policy", str(path), "--adapt",
                        "--drift-reference", str(tmp_path / "ref.jsonl"),
                        "--adapt-min-episodes", "50", "--adapt-max-episodes", "100",
                        "--concurrency", "4", "--json"))
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rep = json.loads(cap.out)
    ad = rep["adapt"]
    assert ad["trigger"] == "alarm" and ad["alarms_at"] and ad["alarms_at"][0] <= 50
    assert ad["n_swaps"] >= 1 and ad["n_failed_refits"] == 0
    lines = [json.loads(x) for x in (tmp_path / "routed.jsonl.adapt.jsonl").read_text()
             .splitlines()]
    assert len(lines) == len(ad["swaps"])
    first = lines[0]
    assert first["episode"] == 50 and first["swapped"] and first["em"]["converged"]
    assert first["loglik_after"] > first["loglik_before"]
    assert set(first["per_bin"]) == {"S0", "S1", "S2"}
    assert first["old_default_lambda"] == pytest.approx(bank.default_lambda)
    assert cap.err.count("adapt: episode") == len(lines)
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 170
    versions = [r["router"]["version"] for r in recs]
    # episodes routed by version 0: the 50 before the swap plus at most the 3 other
    # workers' episodes already in flight
    assert 50 <= versions.count(0) <= 53
    assert max(versions) == ad["version"] >= 1
    # every episode was routed by one bank version from its first step to its last: its
    # decisions are exactly those of that version's bank (saved at the swap) on its scores
    banks = {}
    for r in recs:
        bp = r["router"]["bank_path"]
        if bp not in banks:
            banks[bp] = PolicyBank.load(bp)
            assert bank_key(banks[bp]) == r["router"]["bank"]
        got, want = _replay(r, banks[bp])
        assert got == want, r["id"]
    # the refit learned the drift: the correct steps' most likely score bin now lies in
    # [0.5, 0.75), where the drifted PRM puts them (the model said >= 0.75); the refit may
    # have re-chosen the bins, so the bin is located by its edges
    final = banks[recs[versions.index(max(versions))]["router"]["bank_path"]]
    edges = np.concatenate([[0.0], final.model.score_edges, [1.0]])
    k = int(np.argmax(final.model.obs_matrix[0]))
    assert edges[k] < 0.75 and edges[k + 1] > 0.5, (k, edges)


def test_fit_refit_from_journey_and_bad_input(tmp_path, capsys):
    with FakeServer(default_score=0.6, n_steps=3) as srv:
        probs = tmp_path / "p.jsonl"
        _drifted_world(srv, probs, 120, seed=3)
        bank, path = _bank4(tmp_path)
        out = tmp_path / "routed.jsonl"
        assert main(_argv(srv, probs, out, "--policy", str(path), "--concurrency", "4")) == 0
        capsys.readouterr()
        # paths only: the bank is the one the traces record
        rc = main(["fit", "--refit-from", str(out), "--out", str(tmp_path / "refit"),
                   "--json"])
        cap = capsys.readouterr()
        assert rc == 0, cap.err
        rec = json.loads(cap.out)
        saved = json.loads((tmp_path / "refit" / "refit.json").read_text())
        assert saved == rec
        assert rec["converged"] and rec["n_traces"] == 120 and rec["em_iterations"] >= 2
        assert rec["loglik_after"] > rec["loglik_before"]
        assert rec["old_bank"]["path"] == str(path)
        assert rec["old_bank"]["default_lambda"] == pytest.approx(bank.default_lambda)
        new = PolicyBank.load(tmp_path / "refit" / "bank.npz")
        # the bins were re-chosen from the 360 scored steps (at most one bin per 20 tried):
        # the lineage (transition and features, bins included) follows them
        choice = rec["em"]["bin_choice"]
        assert choice["from_bins"] == 4 and 4 <= choice["n_bins"] <= 360 // 20
        assert new.model.n_score_bins == choice["n_bins"]
        assert (rec["old_bank"]["lineage"] == rec["new_bank"]["lineage"]) == (
            choice["n_bins"] == 4)
        # --refit-bins keep: the bank's own bins and lineage
        assert main(["fit", "--refit-from", str(out), "--refit-bins", "keep", "--out",
                     str(tmp_path / "keep"), "--json"]) == 0
        kept = json.loads(capsys.readouterr().out)
        assert kept["old_bank"]["lineage"] == kept["new_bank"]["lineage"]
        assert "bin_choice" not in kept["em"]
        assert main(["fit", "--refit-from", str(out), "--refit-bins", "1", "--out",
                     str(tmp_path / "bad_bins")]) == 2
        assert "--refit-bins must be 'auto', 'keep' or an integer >= 2; got '1'" in (
            capsys.readouterr().err)
        assert rec["new_bank"]["default_lambda"] == new.default_lambda
        np.testing.assert_allclose(np.load(tmp_path / "refit" / "observation_matrix.npy"),
                                   new.model.obs_matrix)
        np.testing.assert_allclose(np.array(rec["per_bin"]["S0"]["new"]),
                                   new.model.obs_matrix[0])
        # the refitted bank routes the next run (a refit folder is a valid --bank too)
        assert main(_argv(srv, probs, tmp_path / "r2.jsonl", "--policy",
                          str(tmp_path / "refit" / "bank.npz"), "--concurrency", "4")) == 0
        assert main(["fit", "--refit-from", str(tmp_path / "r2.jsonl"), "--bank",
                     str(tmp_path / "refit"), "--out", str(tmp_path / "refit2")]) == 0
        capsys.readouterr()

    # EM that does not converge: documented fallback, exit 3, no bank written
    rc = main(["fit", "--refit-from", str(out), "--em-max-iter", "1",
               "--out", str(tmp_path / "nc")])
    err = capsys.readouterr().err
    assert rc == 3 and "kept the old bank" in err and len(err.strip().splitlines()) == 1
    nc = json.loads((tmp_path / "nc" / "refit.json").read_text())
    assert nc["converged"] is False and nc["fallback"] == "kept the old bank"
    assert not (tmp_path / "nc" / "bank.npz").exists()

    # a routed step without its score: file:line, exit 2
    recs = out.read_text().splitlines()
    r = json.loads(recs[4])
    r["steps"][1]["prm_score"] = None
    r["steps"][1]["writer"] = "cheap"
    r["steps"][1].pop("draft_prm_score", None)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(recs[:4] + [json.dumps(r)] + recs[5:]) + "\n")
    assert main(["fit", "--refit-from", str(bad), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5: steps[1]: a routed step without prm_score" in err
    assert len(err.strip().splitlines()) == 1

    # traces of another bank (another fit: other p_w): names both
    other = TrimModel.from_parameters(p_w=0.7, p_s=0.95, hazard=np.full(30, 1 / 3),
                                      obs_matrix=np.full((3, 4), 0.25))
    op = solve_grid(other, [0.01]).save(tmp_path / "other.npz")
    assert main(["fit", "--refit-from", str(out), "--bank", str(op),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{out}:1:" in err and str(path) in err and f"--bank {op}" in err
    assert lineage_key(bank.model) in err and lineage_key(other) in err

    # argument errors
    assert main(["fit", str(out), "--refit-from", str(out), "--out", str(tmp_path / "x")]) == 2
    assert "not both" in capsys.readouterr().err


def test_route_adapt_argument_errors(tmp_path, capsys):
    with FakeServer(default_score=0.9, n_steps=2) as srv:
        probs = tmp_path / "p.jsonl"
        probs.write_text(json.dumps({"id": "a", "problem": "Q?", "answer": "42"}) + "\n")
        _, path = _bank4(tmp_path)
        cases = [
            (["--policy", str(path), "--adapt"], "--adapt needs --drift-reference"),
            (["--policy", str(path), "--adapt-every", "5"], "--adapt-every needs --adapt"),
            (["--threshold", "0.5", "--adapt", "--adapt-every", "60"], "need --policy"),
            (["--policy", str(path), "--target-cost", "1.5"], "--target-cost must be"),
            (["--policy", str(path), "--adapt", "--adapt-every", "60",
              "--adapt-min-episodes", "10"], "min_episodes must be >= 50"),
        ]
        for i, (extra, msg) in enumerate(cases):
            assert main(_argv(srv, probs, tmp_path / f"o{i}.jsonl", *extra)) == 2, extra
            err = capsys.readouterr().err
            assert msg in err and len(err.strip().splitlines()) == 1, err


def test_route_target_cost_paces_without_refits(tmp_path, capsys):
    with FakeServer(default_score=0.6, n_steps=3) as srv:
        probs = tmp_path / "p.jsonl"
        _drifted_world(srv, probs, 40, seed=5)
        _, path = _bank4(tmp_path, lambdas=(1e-4, 0.004, 0.02, 0.1))
        out = tmp_path / "t.jsonl"
        assert main(_argv(srv, probs, out, "--policy", str(path), "--target-cost", "0.2",
                          "--drift-reference", str(tmp_path / "ref.jsonl"),
                          "--concurrency", "2", "--json")) == 0
    rep = json.loads(capsys.readouterr().out)
    ad = rep["adapt"]
    assert ad["trigger"] == "none" and ad["n_swaps"] == 0
    assert ad["pacing"]["n_episodes"] == 40 and ad["pacing"]["target"] == 0.2
    assert rep["drift"]["n_episodes"] == 40
    lams = {json.loads(x)["router"]["lambda"] for x in out.read_text().splitlines()}
    assert lams <= {1e-4, 0.004, 0.02, 0.1}
    assert not (tmp_path / "t.jsonl.adapt.jsonl").exists()
