"""TRIM-Agg / TRIM-Seq: environment semantics, training on a tiny budget, persistence,
the Router interface, executors (local processes and a local Dask cluster), CLI."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from trim_pomdp.errors import PolicyFormatError, RouterStateError
from trim_pomdp.rl import nn
from trim_pomdp.rl.agents import RLRouter
from trim_pomdp.rl.env import VectorRoutingEnv
from trim_pomdp.rl.grid import RLRouterBank, train_grid
from trim_pomdp.rl.ppo import PPOConfig, train_router
from trim_pomdp.simulation.world import sample_world, simulate_routing

TINY = PPOConfig(iterations=3, n_envs=64, epochs=2, minibatch_size=128, hidden=(8, 8),
                 rnn_hidden=4, eval_every=1, n_val_problems=200, seed=3)


def _const_router(kind: str, regenerate: bool) -> RLRouter:
    """A router whose policy is a constant: bias decides, weights zero."""
    from trim_pomdp.rl.agents import SEQ_INPUTS

    n_in = 5 if kind == "agg" else 2 + len(SEQ_INPUTS)
    p = nn.init_actor_critic(n_in, (4, 4), seed=0)
    if kind == "seq":
        p.update(nn.init_rnn(len(SEQ_INPUTS), 2, seed=0))
    p["Wpi"][:] = 0.0
    p["bpi"][:] = [0.0, 1.0] if regenerate else [1.0, 0.0]
    return RLRouter(kind, p, lam=0.0)


def test_env_returns_match_the_simulator_exactly():
    # Rewards summed over an episode = correct - lam * strong tokens, as the simulator counts.
    lam = 1e-3
    env = VectorRoutingEnv("default", lam=lam, n_envs=300, seed=11)
    rng = np.random.default_rng(0)
    policy_actions = rng.integers(0, 2, size=(300, 30))
    env.reset()
    total = np.zeros(300)
    for t in range(30):
        _, r, term, _, info = env.step(policy_actions[:, t])
        total += r
        if term.all():
            break
    world = sample_world("default", n_problems=300, seed=11)

    class Scripted:
        name, needs_truth = "scripted", False

        def reset_batch(self, n):
            pass

        def act(self, t, *a, **k):
            return policy_actions[:, t - 1]

        def executed(self, a):
            pass

    res = simulate_routing(world, Scripted())
    np.testing.assert_allclose(total, res.correct - lam * res.strong_tokens)


def test_env_rejects_bad_actions_and_step_before_reset():
    env = VectorRoutingEnv("default", lam=0.0, n_envs=4)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros(4))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(n_envs,\) = \(4,\)"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="0 \\(continue\\) or 1"):
        env.step(np.array([0, 2, 0, 0]))
    with pytest.raises(ValueError, match="lam must be"):
        VectorRoutingEnv("default", lam=float("nan"))


def test_single_env_passes_gymnasium_checker():
    gym = pytest.importorskip("gymnasium")
    from gymnasium.utils.env_checker import check_env

    from trim_pomdp.rl.env import make_gym_env

    env = make_gym_env("default", lam=1e-3)
    check_env(env, skip_render_check=True)
    assert isinstance(env.action_space, gym.spaces.Discrete)


@pytest.mark.parametrize("kind", ["agg", "seq"])
def test_constant_routers_reproduce_always_cheap_and_always_strong(kind):
    world = sample_world("default", n_problems=2000, seed=5)
    from trim_pomdp.routing.baselines import AlwaysCheap, AlwaysStrong

    for regen, ref in ((False, AlwaysCheap()), (True, AlwaysStrong())):
        a = simulate_routing(world, _const_router(kind, regen))
        b = simulate_routing(world, ref)
        assert np.array_equal(a.correct, b.correct)
        assert np.array_equal(a.strong_tokens, b.strong_tokens)


@pytest.mark.parametrize("kind", ["agg", "seq"])
def test_router_step_matches_batch_policy(kind):
    # The one-at-a-time Router path and the batch path make the same decisions.
    res = train_router("default", 1e-3, kind=kind, config=TINY)
    router = res.router
    world = sample_world("default", n_problems=50, seed=9)
    batch = simulate_routing(world, router, record=True)
    rec = batch.record
    for i in range(50):
        router.reset()
        for j in range(int(batch.steps[i])):
            a = router.step(float(rec.score[i, j]), int(world.cheap_tokens[i, j]),
                            bool(world.length[i] == j + 1))
            assert a == ("regenerate" if rec.action[i, j] == 1 else "continue"), (i, j)
    with pytest.raises(RouterStateError, match="after a final step"):
        router.step(0.5, 10, False)


def test_training_improves_the_return_and_is_reproducible():
    cfg = PPOConfig(iterations=8, n_envs=256, hidden=(32, 32), eval_every=4,
                    n_val_problems=500, seed=1)
    a = train_router("default", 1e-3, config=cfg)
    b = train_router("default", 1e-3, config=cfg)
    for k in a.router.params:
        np.testing.assert_array_equal(a.router.params[k], b.router.params[k])
    ret = np.asarray(a.history["train_return"])
    # 256 episodes per rollout: each mean return has a standard error of about 0.03; the
    # random initial policy regenerates half the steps, PPO learns to spend less.
    assert ret[-3:].mean() > ret[0] + 0.05
    assert len(ret) == 8 and a.best_iteration in (4, 8)


def test_save_load_round_trip_and_errors(tmp_path):
    res = train_router("default", 3e-4, kind="seq", config=TINY)
    path = tmp_path / "r.npz"
    res.router.save(path)
    back = RLRouter.load(path)
    assert back.kind == "seq" and back.lam == 3e-4
    for k, v in res.router.params.items():
        np.testing.assert_array_equal(back.params[k], v)
    bad = tmp_path / "bad.npz"
    np.savez(bad, W0=np.zeros((5, 2)))
    with pytest.raises(PolicyFormatError,
                       match=r"bad\.npz: malformed trim_pomdp RL router file: missing __meta__$"):
        RLRouter.load(bad)
    p = dict(res.router.params)
    p["W0"] = p["W0"][:-1]
    RLRouter("seq", p, lam=1.0).save(tmp_path / "short.npz")
    with pytest.raises(PolicyFormatError, match="W0 has shape"):
        RLRouter.load(tmp_path / "short.npz")


def test_grid_with_an_executor_and_bank_round_trip(tmp_path):
    with ThreadPoolExecutor(max_workers=2) as ex:
        bank = train_grid("default", [1e-3, 1e-4], kind="agg", config=TINY, executor=ex,
                          progress=False)
    assert bank.lambdas == [1e-4, 1e-3]
    bank.save(tmp_path / "bank.npz")
    back = RLRouterBank.load(tmp_path / "bank.npz")
    assert back.lambdas == bank.lambdas and back.router(9e-4).lam == 1e-3
    png = back.plot_learning_curves(tmp_path / "lc.png")
    assert png.stat().st_size > 1000
    with pytest.raises(ValueError, match="lambdas must be finite"):
        train_grid("default", [-1.0], config=TINY)


def test_grid_on_a_local_dask_cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        bank = train_grid("default", [1e-3], kind="agg", config=TINY,
                          executor=client.get_executor(), progress=False)
    assert len(bank) == 1 and bank.routers[0].metadata["best_iteration"] >= 1


def test_cli_train(tmp_path, capsys):
    from trim_pomdp.cli import main

    rc = main(["train", "--policy", "agg", "--lambdas", "1e-3", "--out", str(tmp_path),
               "--iterations", "2", "--envs", "64", "--workers", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert RLRouterBank.load(out["bank"]).lambdas == [1e-3]
    assert (tmp_path / "learning_curves_agg.png").exists()
    assert main(["train", "--lambdas", "x", "--out", str(tmp_path)]) == 2


def test_rl_families_resolve_by_name_and_evaluate(monkeypatch):
    # `evaluate --policies trim-agg` / `demo --rl`: the registry trains a bank on the scenario
    import trim_pomdp.rl.grid as grid
    from trim_pomdp.evaluation.registry import FamilyOptions, resolve_family
    from trim_pomdp.evaluation.sweep import evaluate
    from trim_pomdp.simulation.scenario import default_scenario

    monkeypatch.setattr(grid, "PPOConfig", lambda seed=0: TINY)
    opts = FamilyOptions(scenario=default_scenario(), n_params=2, seed=0)
    fam = resolve_family("trim-agg", opts)
    assert fam.name == "TRIM-Agg" and len(fam.params) == 2
    ev = evaluate(default_scenario(), [fam, "trim-thr"], n_problems=400, seed=5)
    assert set(ev.curves) == {"TRIM-Agg", "trim-thr"}
    with pytest.raises(ValueError, match="needs FamilyOptions"):
        resolve_family("trim-seq", FamilyOptions())
