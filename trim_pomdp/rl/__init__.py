"""Reinforcement-learned routers TRIM-Agg and TRIM-Seq (NumPy PPO; no torch).

>>> from trim_pomdp.rl import train_grid, PPOConfig          # doctest: +SKIP
>>> bank = train_grid("default", [3e-4, 1e-3], kind="agg")    # doctest: +SKIP
>>> router = bank.router(1e-3); router.reset()                # doctest: +SKIP
>>> router.step(prm_score=0.42, tokens=60, is_final=False)    # doctest: +SKIP
"""

from __future__ import annotations

from trim_pomdp._lazy import lazy_exports

_EXPORTS = {
    "PPOConfig": "trim_pomdp.rl.ppo",
    "TrainingResult": "trim_pomdp.rl.ppo",
    "train_router": "trim_pomdp.rl.ppo",
    "RLRouter": "trim_pomdp.rl.agents",
    "RLRouterBank": "trim_pomdp.rl.grid",
    "train_grid": "trim_pomdp.rl.grid",
    "VectorRoutingEnv": "trim_pomdp.rl.env",
    "make_gym_env": "trim_pomdp.rl.env",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
