"""A vectorised routing environment with the Gymnasium API, over the paired simulator.

Each of ``n_envs`` sub-environments is one query routed step by step.  At step t the
agent sees the cheap model's draft of step t and chooses 0 (continue: keep the draft) or
1 (regenerate: the strong model rewrites the step).  Rewards follow TRIM:

* ``-lam * strong_tokens`` at every regenerate step (the strong model's tokens for it);
* ``+1`` when the episode ends with a correct final answer.

Undiscounted, at most 30 steps.  The dynamics are exactly the simulator's
(:mod:`trim_pomdp.simulation.world`, same Numba kernels), so a policy trained here is evaluated
on the same world model as every other router.

Observation features (``AGG_FEATURES``; scaled to O(1) for the networks)::

    [score, min_prev, tokens / token_scale, t / 30, is_final]

``score`` is the PRM score of the current draft, ``min_prev`` the minimum score of the
earlier kept steps (1.0 on the first step), ``tokens`` the draft's token count.  The
paper's TRIM-Agg uses the first four; ``is_final`` is added because our router is told
whether the draft carries the answer (regenerating a final step ends the episode).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.simulation.scenario import Scenario, load_scenario
from trim_pomdp.simulation.world import (
    World,
    _advance_kernel,
    _init_kernel,
    _observe_kernel,
    sample_world,
)
from trim_pomdp.steps import MAX_STEPS

AGG_FEATURES = ("score", "min_prev", "tokens_scaled", "step_frac", "is_final")
DEFAULT_TOKEN_SCALE = 100.0
_MIN_RULE_KEPT = 0


def agg_features(
    t: int,
    score: NDArray[np.float64],
    min_prev: NDArray[np.float64],
    tokens: NDArray[Any],
    is_final: NDArray[np.bool_],
    token_scale: float,
    out: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Feature matrix (n, 5) of :data:`AGG_FEATURES` for a batch at 1-based step ``t``."""
    n = score.shape[0]
    if out is None:
        out = np.empty((n, len(AGG_FEATURES)))
    out[:, 0] = score
    out[:, 1] = min_prev
    out[:, 2] = tokens / token_scale
    out[:, 3] = t / MAX_STEPS
    out[:, 4] = is_final
    return out


class VectorRoutingEnv:
    """``n_envs`` routing episodes in lockstep (Gymnasium ``VectorEnv``-style API).

    Parameters
    ----------
    scenario : Scenario or str
        The world model (a scenario, a JSON path or a built-in name).
    lam : float
        Price of one strong token in units of task reward.
    n_envs : int
        Number of parallel episodes.
    seed : int
        Seed of the first world; each ``reset`` without a seed draws the next one, so
        training never sees the same problems twice.

    Notes
    -----
    No auto-reset: an episode that has ended stays ended (zero reward, ``terminated``
    True) until the next ``reset``, which starts ``n_envs`` fresh problems.  This fits
    PPO on whole episodes, which is how the routers are trained.
    """

    def __init__(self, scenario: Scenario | str, *, lam: float, n_envs: int = 256,
                 seed: int = 0, token_scale: float = DEFAULT_TOKEN_SCALE) -> None:
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        if not (np.isfinite(lam) and lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0; got {lam!r}")
        if int(n_envs) < 1:
            raise ValueError(f"n_envs must be >= 1; got {n_envs!r}")
        self.scenario = scenario
        self.lam = float(lam)
        self.num_envs = int(n_envs)
        self.token_scale = float(token_scale)
        self._next_seed = int(seed)
        n = self.num_envs
        self._state = np.empty(n, np.int8)
        self._active = np.empty(n, np.bool_)
        self._min_prev = np.empty(n, np.float64)
        self._correct = np.empty(n, np.bool_)
        self._strong = np.empty(n, np.int64)
        self._cheap = np.empty(n, np.int64)
        self._steps = np.empty(n, np.int32)
        self._regens = np.empty(n, np.int32)
        self._score = np.zeros(n, np.float64)
        self._tokens = np.zeros(n, np.int64)
        self._final = np.zeros(n, np.bool_)
        self._rec = (np.full((1, 1), -1, np.int8), np.full((1, 1), -1, np.int8),
                     np.full((1, 1), np.nan, np.float32), np.full((1, 1), -1, np.int8),
                     np.full((1, 1), np.nan, np.float32))
        self.world: World | None = None
        self.t = 0
        self._spaces()

    def _spaces(self) -> None:
        try:
            from gymnasium import spaces
        except ImportError:  # the API works without gymnasium; only the space objects need it
            self.single_observation_space = self.single_action_space = None
            self.observation_space = self.action_space = None
            return
        # tokens are bounded only by the model; 10^6 tokens per step is far beyond any real step
        high = np.array([1.0, 1.0, 1e6 / self.token_scale, 1.0, 1.0], np.float64)
        self.single_observation_space = spaces.Box(0.0, high, dtype=np.float64)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = spaces.Box(0.0, np.tile(high, (self.num_envs, 1)),
                                            dtype=np.float64)
        self.action_space = spaces.MultiDiscrete(np.full(self.num_envs, 2))

    # ------------------------------------------------------------------ API
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[NDArray, dict[str, Any]]:
        """Start ``n_envs`` new problems; returns ``(obs (n, 5), info)``."""
        if seed is not None:
            self._next_seed = int(seed)
        world = sample_world(self.scenario, n_problems=self.num_envs, seed=self._next_seed)
        self._next_seed += 1
        self.world = world
        self._idx = np.arange(self.num_envs, dtype=np.int64)
        self._n_idx = self.num_envs
        _init_kernel(world.u_w, world.p_w, self._state, self._active, self._min_prev,
                     self._correct, self._strong, self._cheap, self._steps, self._regens)
        self.t = 1
        self._observe()
        return self._obs(), {"active": self._active.copy()}

    def step(self, actions: Any) -> tuple[NDArray, NDArray, NDArray, NDArray, dict[str, Any]]:
        """Apply one action per episode; returns ``(obs, reward, terminated, truncated, info)``.

        ``info["active"]`` marks the episodes still running after this step (their ``obs``
        is the next draft); ``info["was_active"]`` those this step applied to.
        """
        if self.world is None or self.t > MAX_STEPS:
            raise RuntimeError("call reset() before step(); the last episode has ended")
        a = np.asarray(actions)
        if a.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape (n_envs,) = ({self.num_envs},); "
                             f"got {a.shape}")
        acts = a.astype(np.int8)
        was_active = self._active.copy()
        bad = np.flatnonzero(was_active & (acts != 0) & (acts != 1))
        if bad.size:
            raise ValueError(f"actions must be 0 (continue) or 1 (regenerate); episode "
                             f"{bad[0]} got {a[bad[0]]!r}")
        strong_before = self._strong.copy()
        w = self.world
        # same kernel as simulate_routing: the env's dynamics are the simulator's
        self._n_idx, _ = _advance_kernel(
            self.t, self._idx, self._n_idx, acts, self._state, self._active, self._score,
            self._min_prev, _MIN_RULE_KEPT, w.length, w.u_w, w.u_s, w.p_w, w.p_s,
            w.cheap_tokens, w.strong_tokens, self._correct, self._strong, self._cheap,
            self._steps, self._regens, False, *self._rec)
        ended = was_active & ~self._active
        reward = -self.lam * (self._strong - strong_before) + (ended & self._correct)
        self.t += 1
        if self.t <= MAX_STEPS:
            self._observe()
        terminated = ~self._active
        info = {"active": self._active.copy(), "was_active": was_active,
                "correct": self._correct.copy(), "strong_tokens": self._strong.copy()}
        return self._obs(), reward, terminated, np.zeros(self.num_envs, bool), info

    # ------------------------------------------------------------------ internals
    def _observe(self) -> None:
        w = self.world
        assert w is not None
        _observe_kernel(self.t, self._idx, self._n_idx, self._state, w.length, w.z_draft, w.bias,
                        w.cheap_tokens, w.score_table, w.z_lo, 1.0 / w.dz, self._score,
                        self._tokens, self._final)

    def _obs(self) -> NDArray:
        return agg_features(min(self.t, MAX_STEPS), self._score, self._min_prev, self._tokens,
                            self._final, self.token_scale)

    # the raw per-episode observation pieces (the recurrent policy builds its own inputs)
    @property
    def raw(self) -> tuple[NDArray, NDArray, NDArray, NDArray]:
        return self._score, self._min_prev, self._tokens, self._final


def make_gym_env(scenario: Scenario | str = "default", *, lam: float, seed: int = 0,
                 token_scale: float = DEFAULT_TOKEN_SCALE) -> Any:
    """A single-episode :class:`gymnasium.Env` (needs ``pip install gymnasium``).

    Useful with Gymnasium's tooling (``check_env``, wrappers, other RL libraries); the
    trainers here use :class:`VectorRoutingEnv` directly for speed.
    """
    import gymnasium as gym

    class RoutingEnv(gym.Env):
        metadata: dict[str, Any] = {"render_modes": []}

        def __init__(self) -> None:
            self._vec = VectorRoutingEnv(scenario, lam=lam, n_envs=1, seed=seed,
                                         token_scale=token_scale)
            self.observation_space = self._vec.single_observation_space
            self.action_space = self._vec.single_action_space

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
            super().reset(seed=seed)
            obs, info = self._vec.reset(seed=seed)
            return obs[0], {}

        def step(self, action: Any):
            obs, r, term, trunc, info = self._vec.step(np.array([int(action)]))
            return obs[0], float(r[0]), bool(term[0]), bool(trunc[0]), {}

    return RoutingEnv()
