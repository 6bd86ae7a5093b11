"""PPO training of TRIM-Agg / TRIM-Seq for one budget lambda (NumPy, no torch).

One iteration: roll out ``n_envs`` whole episodes with the current stochastic policy in
:class:`~trim_pomdp.rl.env.VectorRoutingEnv`, compute undiscounted GAE advantages, then a
few epochs of clipped-PPO minibatch updates (Adam).  Every ``eval_every`` iterations the
greedy policy is scored on a fixed validation world by the training objective
``accuracy - lam * mean strong tokens``; the best checkpoint is the one returned.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.rl import nn
from trim_pomdp.rl.agents import SEQ_INPUTS, RLRouter, seq_inputs
from trim_pomdp.rl.env import AGG_FEATURES, DEFAULT_TOKEN_SCALE, VectorRoutingEnv
from trim_pomdp.rl.ppo_math import gae, ppo_loss_and_grads
from trim_pomdp.simulation.scenario import Scenario, load_scenario
from trim_pomdp.steps import MAX_STEPS


@dataclass(frozen=True, kw_only=True)
class PPOConfig:
    """PPO settings.  Defaults train TRIM-Agg on the default scenario in about a minute
    on 2 cores (``benchmarks/bench_rl.py``).

    Attributes
    ----------
    iterations : int
        Rollout/update rounds.
    n_envs : int
        Episodes per rollout.
    epochs, minibatch_size : int
        PPO passes over each rollout and samples per minibatch (episodes x mean length
        for TRIM-Seq, whose minibatches are whole episodes).
    lr, clip, gae_lambda, ent_coef, vf_coef, max_grad_norm : float
        Adam step size, PPO clip range (0.2), GAE lambda (0.95), entropy bonus, value-loss
        weight, global gradient-norm clip.
    hidden : tuple of int
        MLP hidden sizes (the paper: two layers of 128, tanh).
    rnn_hidden : int
        Size of TRIM-Seq's recurrent state.
    eval_every, n_val_problems : int
        Checkpoint selection: how often, and on how many validation problems.
    seed : int
        Seeds the weights, the action sampling and the training/validation worlds.
    time_limit_s : float or None
        Stop early (keeping the best checkpoint) after this much wall time.
    """

    iterations: int = 60
    n_envs: int = 512
    epochs: int = 4
    minibatch_size: int = 1024
    lr: float = 1e-3
    clip: float = 0.2
    gae_lambda: float = 0.95
    ent_coef: float = 0.003
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: tuple[int, ...] = (128, 128)
    rnn_hidden: int = 32
    eval_every: int = 5
    n_val_problems: int = 4000
    seed: int = 0
    time_limit_s: float | None = None
    token_scale: float = DEFAULT_TOKEN_SCALE

    def __post_init__(self) -> None:
        for name in ("iterations", "n_envs", "epochs", "minibatch_size", "eval_every",
                     "n_val_problems", "rnn_hidden"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"PPOConfig.{name} must be an integer >= 1; got {v!r}")
        for name in ("lr", "clip", "max_grad_norm", "token_scale"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"PPOConfig.{name} must be > 0; got {v!r}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"PPOConfig.gae_lambda must be in [0, 1]; got {self.gae_lambda!r}")


@dataclass
class TrainingResult:
    """A trained router and its learning curve.

    ``history`` has one row per iteration: iteration, seconds, mean training return,
    training accuracy, entropy, approx KL, and the validation objective/accuracy/cost
    fraction (NaN between evaluations).
    """

    router: RLRouter
    history: dict[str, list[float]] = field(default_factory=dict)
    best_iteration: int = 0
    best_objective: float = float("-inf")


_HIST_KEYS = ("iteration", "time_s", "train_return", "train_accuracy", "entropy", "approx_kl",
              "val_objective", "val_accuracy", "val_cost_fraction")


def _sample(rng: np.random.Generator, logits: NDArray) -> tuple[NDArray, NDArray]:
    logp_all = nn.log_softmax(logits)
    p1 = np.exp(logp_all[:, 1])
    a = (rng.random(p1.shape[0]) < p1).astype(np.int64)
    return a, logp_all[np.arange(a.shape[0]), a]


def _rollout(env: VectorRoutingEnv, router: RLRouter, rng: np.random.Generator
             ) -> dict[str, NDArray]:
    N, T = env.num_envs, MAX_STEPS
    seq = router.kind == "seq"
    d = len(SEQ_INPUTS) if seq else len(AGG_FEATURES)
    X = np.zeros((N, T, d))
    A = np.zeros((N, T), np.int64)
    LP = np.zeros((N, T))
    V = np.zeros((N, T))
    Rw = np.zeros((N, T))
    M = np.zeros((N, T))
    obs, _ = env.reset()
    h = np.zeros((N, router.rnn_hidden))
    prev = np.zeros(N)
    acts = np.zeros(N, np.int64)
    for t in range(T):
        idx = np.flatnonzero(env._active)
        if idx.size == 0:
            break
        if seq:
            score, _, tokens, final = env.raw
            x = seq_inputs(t + 1, score[idx], tokens[idx], final[idx], prev[idx],
                           router.token_scale)
            h[idx] = router._rnn_step(h[idx], x)
            trunk_in = np.concatenate([h[idx], x], axis=1)
        else:
            x = obs[idx]
            trunk_in = x
        logits, values = router.logits_values(trunk_in)
        a, lp = _sample(rng, logits)
        acts[:] = 0
        acts[idx] = a
        X[idx, t] = x
        A[idx, t] = a
        LP[idx, t] = lp
        V[idx, t] = values
        M[idx, t] = 1.0
        obs, reward, _, _, info = env.step(acts)
        Rw[idx, t] = reward[idx]
        prev[:] = acts
    return {"X": X, "A": A, "LP": LP, "V": V, "R": Rw, "M": M,
            "correct": info["correct"].astype(float)}


def _update(router: RLRouter, opt: nn.Adam, batch: dict[str, NDArray], cfg: PPOConfig,
            rng: np.random.Generator) -> tuple[float, float]:
    adv, ret = gae(batch["R"], batch["V"], batch["M"], gamma=1.0, lam=cfg.gae_lambda)
    mask = batch["M"] > 0
    a_mean, a_std = adv[mask].mean(), adv[mask].std() + 1e-8
    adv = np.where(mask, (adv - a_mean) / a_std, 0.0)
    p = router.params
    kw = {"clip": cfg.clip, "vf_coef": cfg.vf_coef, "ent_coef": cfg.ent_coef}
    ents, kls = [], []
    if router.kind == "agg":
        X, A, LP = batch["X"][mask], batch["A"][mask], batch["LP"][mask]
        ADV, RET = adv[mask], ret[mask]
        n = X.shape[0]
        for _ in range(cfg.epochs):
            order = rng.permutation(n)
            for start in range(0, n, cfg.minibatch_size):
                mb = order[start:start + cfg.minibatch_size]
                logits, values, cache = nn.actor_critic_forward(p, X[mb])
                st, dl, dv = ppo_loss_and_grads(logits, values, A[mb], LP[mb], ADV[mb],
                                                RET[mb], **kw)
                grads, _ = nn.actor_critic_backward(p, cache, dl, dv)
                opt.step(p, grads)
                ents.append(st.entropy)
                kls.append(st.approx_kl)
    else:
        Xs = batch["X"]
        N, T, d = Xs.shape
        H = router.rnn_hidden
        mean_len = max(1.0, mask.sum() / N)
        eps_per_mb = max(1, int(cfg.minibatch_size / mean_len))
        for _ in range(cfg.epochs):
            order = rng.permutation(N)
            for start in range(0, N, eps_per_mb):
                mb = order[start:start + eps_per_mb]
                xs = Xs[mb]
                hs = nn.rnn_forward(p, xs)
                trunk = np.concatenate([hs, xs], axis=2).reshape(len(mb) * T, H + d)
                logits, values, cache = nn.actor_critic_forward(p, trunk)
                m = mask[mb].reshape(-1)
                st, dl, dv = ppo_loss_and_grads(
                    logits[m], values[m], batch["A"][mb].reshape(-1)[m],
                    batch["LP"][mb].reshape(-1)[m], adv[mb].reshape(-1)[m],
                    ret[mb].reshape(-1)[m], **kw)
                dlogits = np.zeros_like(logits)
                dvalues = np.zeros_like(values)
                dlogits[m] = dl
                dvalues[m] = dv
                grads, dtrunk = nn.actor_critic_backward(p, cache, dlogits, dvalues)
                dhs = dtrunk[:, :H].reshape(len(mb), T, H)
                grads.update(nn.rnn_backward(p, xs, hs, dhs))
                opt.step(p, grads)
                ents.append(st.entropy)
                kls.append(st.approx_kl)
    return float(np.mean(ents)), float(np.mean(kls))


def train_router(scenario: Scenario | str, lam: float, *, kind: str = "agg",
                 config: PPOConfig | None = None,
                 progress: bool | Callable[[dict[str, float]], None] = False
                 ) -> TrainingResult:
    """Train a TRIM-Agg (``kind="agg"``) or TRIM-Seq (``kind="seq"``) router for one lambda.

    Parameters
    ----------
    scenario : Scenario or str
        World model to train in (scenario, JSON path or built-in name).
    lam : float
        Price of a strong token; the objective is ``P(correct) - lam * E[strong tokens]``.
    config : PPOConfig, optional
    progress : bool or callable
        ``True`` prints one line per evaluation to stderr; a callable receives each
        iteration's history row.

    Returns
    -------
    TrainingResult
        The best checkpoint on the validation world, with the learning curve.
    """
    from trim_pomdp.simulation.world import sample_world, simulate_routing

    cfg = config or PPOConfig()
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    if kind not in ("agg", "seq"):
        raise ValueError(f"kind must be 'agg' or 'seq'; got {kind!r}")
    rng = np.random.default_rng(cfg.seed)
    if kind == "agg":
        params = nn.init_actor_critic(len(AGG_FEATURES), cfg.hidden, seed=cfg.seed)
    else:
        params = nn.init_actor_critic(cfg.rnn_hidden + len(SEQ_INPUTS), cfg.hidden,
                                      seed=cfg.seed)
        params.update(nn.init_rnn(len(SEQ_INPUTS), cfg.rnn_hidden, seed=cfg.seed + 1))
    router = RLRouter(kind, params, lam=lam, token_scale=cfg.token_scale)
    # training worlds use seeds seed*10^6 + i; the validation world a disjoint seed
    env = VectorRoutingEnv(scenario, lam=lam, n_envs=cfg.n_envs,
                           seed=cfg.seed * 1_000_000, token_scale=cfg.token_scale)
    val_world = sample_world(scenario, n_problems=cfg.n_val_problems,
                             seed=cfg.seed * 1_000_000 + 999_999)
    opt = nn.Adam(lr=cfg.lr, max_grad_norm=cfg.max_grad_norm)
    hist: dict[str, list[float]] = {k: [] for k in _HIST_KEYS}
    best = (float("-inf"), 0, {k: v.copy() for k, v in params.items()})
    t0 = time.perf_counter()
    for it in range(1, cfg.iterations + 1):
        batch = _rollout(env, router, rng)
        ent, kl = _update(router, opt, batch, cfg, rng)
        row = {"iteration": it, "time_s": time.perf_counter() - t0,
               "train_return": float(batch["R"].sum(axis=1).mean()),
               "train_accuracy": float(batch["correct"].mean()), "entropy": ent,
               "approx_kl": kl, "val_objective": np.nan, "val_accuracy": np.nan,
               "val_cost_fraction": np.nan}
        last = it == cfg.iterations or (cfg.time_limit_s is not None
                                        and row["time_s"] >= cfg.time_limit_s)
        if it % cfg.eval_every == 0 or last:
            res = simulate_routing(val_world, router)
            obj = res.accuracy - lam * res.mean_strong_tokens
            row.update(val_objective=obj, val_accuracy=res.accuracy,
                       val_cost_fraction=res.cost_fraction)
            if obj > best[0]:
                best = (obj, it, {k: v.copy() for k, v in router.params.items()})
            if progress is True:
                print(f"[{router.name} lam={lam:.3g}] iter {it:4d}  {row['time_s']:6.1f}s  "
                      f"val acc {res.accuracy:.4f}  cost {res.cost_fraction:.3f}  "
                      f"objective {obj:.4f}", file=sys.stderr, flush=True)
        for k in _HIST_KEYS:
            hist[k].append(float(row[k]))
        if callable(progress):
            progress(row)
        if last:
            break
    obj, best_it, best_params = best
    meta = {"config": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in asdict(cfg).items()},
            "best_iteration": best_it, "best_val_objective": obj,
            "scenario": scenario.name}
    trained = RLRouter(kind, best_params, lam=lam, token_scale=cfg.token_scale, metadata=meta)
    return TrainingResult(router=trained, history=hist, best_iteration=best_it,
                          best_objective=obj)


def _train_task(scenario_json: str, lam: float, kind: str, cfg: dict[str, Any]
                ) -> dict[str, Any]:
    """Executor task: plain data in, plain data out (runs in another process or host)."""
    cfg = dict(cfg)
    cfg["hidden"] = tuple(cfg["hidden"])
    res = train_router(Scenario.from_json(scenario_json), lam, kind=kind,
                       config=PPOConfig(**cfg))
    r = res.router
    return {"params": r.params, "lam": r.lam, "kind": r.kind, "token_scale": r.token_scale,
            "metadata": r.metadata, "history": res.history}
