"""Exact finite-horizon POMDP values on tiny problems, for tests (slow, obviously correct).

Three independent routes to the optimal H-step value from a belief ``b0``

    V_H(b) = max_a [ b . R_a + discount * sum_o P(o | b, a) V_{H-1}(b'_{a,o}) ],
    V_0(b) = b . R_final   (R_final = 0 by default),

1. :func:`belief_tree_value`: the recursion above, expanded exhaustively over every action
   and every observation with positive probability (cost (A*O)^H).
2. :func:`policy_tree_alphas`: every depth-H policy tree (a root action, then one subtree
   per observation), each turned into its alpha vector
   ``alpha(s) = R[a, s] + discount * sum_{s', o} T[a, s, s'] Z[a, s', o] alpha_o(s')``;
   ``V_H(b) = max over trees of alpha . b``.  No pruning at all (A * |trees_{H-1}|^O trees).
3. :func:`exact_value_iteration`: the same cross-sums with exact pruning after each stage
   (pointwise dominance, then Lark's LP filter), i.e. textbook exact value iteration
   (Monahan / incremental pruning), which reaches longer horizons.

All arrays follow the project's convention ``T[a, s, s']``, ``Z[a, s', o]``, ``R[a, s]``.
Time-indexed models are accepted too: ``T (H, A, S, S)``, ``Z (H, A, S, O)``, ``R (H, A, S)``
where index ``t`` is the decision epoch counted from the start (epoch ``t`` has ``H - t``
steps to go), so the finite-horizon engines can reuse these helpers.

Import from tests as ``from brute_force import ...`` (pytest puts ``tests/`` on sys.path).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ArrayModel",
    "tiger",
    "random_pomdp",
    "belief_tree_value",
    "policy_tree_alphas",
    "exact_value_iteration",
    "exact_value",
    "evaluate_policy_exact",
]


# ---------------------------------------------------------------------------- models
@dataclass
class ArrayModel:
    """Minimal stand-in for ``trim_pomdp.POMDP`` (same attribute names), no validation."""

    T: np.ndarray
    Z: np.ndarray
    R: np.ndarray
    discount: float
    b0: np.ndarray
    state_names: list[str] | None = None
    action_names: list[str] | None = None
    observation_names: list[str] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_states(self) -> int:
        return self.T.shape[-1]

    @property
    def n_actions(self) -> int:
        return self.T.shape[-3]

    @property
    def n_observations(self) -> int:
        return self.Z.shape[-1]


def tiger(discount: float = 0.95) -> ArrayModel:
    """Kaelbling-Littman-Cassandra tiger, exactly as ``tiger.95.POMDP``.

    States (tiger-left, tiger-right); actions (listen, open-left, open-right); observations
    (tiger-left, tiger-right).  Listening costs 1 and is right 85% of the time; opening the
    tiger's door costs 100, the other door pays 10; opening resets the problem uniformly.
    """
    T = np.empty((3, 2, 2))
    T[0] = np.eye(2)
    T[1] = T[2] = 0.5
    Z = np.empty((3, 2, 2))
    Z[0] = [[0.85, 0.15], [0.15, 0.85]]
    Z[1] = Z[2] = 0.5
    R = np.array([[-1.0, -1.0], [-100.0, 10.0], [10.0, -100.0]])
    return ArrayModel(
        T=T,
        Z=Z,
        R=R,
        discount=discount,
        b0=np.array([0.5, 0.5]),
        state_names=["tiger-left", "tiger-right"],
        action_names=["listen", "open-left", "open-right"],
        observation_names=["tiger-left", "tiger-right"],
    )


def random_pomdp(
    rng: np.random.Generator,
    n_states: int,
    n_actions: int,
    n_obs: int,
    *,
    discount: float = 0.9,
    sparsity: float = 0.0,
) -> ArrayModel:
    """Random stochastic arrays; ``sparsity`` is the chance that an entry is zeroed (each
    row keeps at least one positive entry), so zero-probability observations can occur."""

    def rows(shape: tuple[int, ...]) -> np.ndarray:
        x = rng.random(shape) + 1e-3
        if sparsity > 0:
            x = np.where(rng.random(shape) < sparsity, 0.0, x)
            empty = x.sum(axis=-1) == 0
            idx = rng.integers(0, shape[-1], size=empty.shape)
            x[empty, idx[empty]] = 1.0
        return x / x.sum(axis=-1, keepdims=True)

    b0 = rng.random(n_states) + 0.05
    return ArrayModel(
        T=rows((n_actions, n_states, n_states)),
        Z=rows((n_actions, n_states, n_obs)),
        R=rng.normal(size=(n_actions, n_states)),
        discount=discount,
        b0=b0 / b0.sum(),
    )


# ---------------------------------------------------------------------------- helpers
def _epoch(arr: np.ndarray, t: int, base_ndim: int) -> np.ndarray:
    """Slice of a possibly time-indexed array at epoch t."""
    return arr[t] if arr.ndim == base_ndim + 1 else arr


def _check_horizon(T, Z, R, horizon: int) -> None:
    for name, arr, nd in (("T", T, 3), ("Z", Z, 3), ("R", R, 2)):
        if arr.ndim == nd + 1 and arr.shape[0] != horizon:
            raise ValueError(f"time-indexed {name} has {arr.shape[0]} epochs; horizon={horizon}")


def _terminal(R_final, n_states: int) -> np.ndarray:
    return np.zeros(n_states) if R_final is None else np.asarray(R_final, dtype=np.float64)


# ---------------------------------------------------------------------------- 1. belief tree
def belief_tree_value(
    T: np.ndarray,
    Z: np.ndarray,
    R: np.ndarray,
    discount: float,
    b0: np.ndarray,
    horizon: int,
    *,
    R_final: np.ndarray | None = None,
) -> float:
    """Optimal ``horizon``-step value at ``b0`` by exhaustive expectimax over the belief tree."""
    T, Z, R = (np.asarray(x, dtype=np.float64) for x in (T, Z, R))
    _check_horizon(T, Z, R, horizon)
    rf = _terminal(R_final, np.asarray(b0).shape[0])

    def v(b: np.ndarray, t: int) -> float:
        if t == horizon:
            return float(b @ rf)
        Tt, Zt, Rt = _epoch(T, t, 3), _epoch(Z, t, 3), _epoch(R, t, 2)
        best = -np.inf
        for a in range(Tt.shape[0]):
            pred = b @ Tt[a]
            total = float(b @ Rt[a])
            for o in range(Zt.shape[2]):
                unnorm = pred * Zt[a, :, o]
                p = unnorm.sum()
                if p > 0:
                    total += discount * p * v(unnorm / p, t + 1)
            best = max(best, total)
        return best

    return v(np.asarray(b0, dtype=np.float64), 0)


# ---------------------------------------------------------------------------- 2. policy trees
def _backup_sets(Tt, Zt, Rt, discount, next_alphas, prune: Callable | None, limit: int):
    """All alpha vectors ``R_a + discount * sum_o proj_{a,o}[k_o]`` over every choice of
    one next-stage vector ``k_o`` per observation (cross-sum), optionally pruned after each
    observation (exact: pruning dominated partial sums never loses a maximiser)."""
    n_actions, n_states, n_obs = Zt.shape
    out_alphas, out_actions = [], []
    for a in range(n_actions):
        # proj[o][k](s) = sum_{s'} T[a,s,s'] Z[a,s',o] alpha_k(s')
        projs = [(Tt[a] * Zt[a, :, o][None, :]) @ next_alphas.T for o in range(n_obs)]
        acc = Rt[a][None, :].copy()
        for o in range(n_obs):
            pr = discount * projs[o].T  # (K, S)
            if acc.shape[0] * pr.shape[0] > limit:
                raise ValueError(
                    f"cross-sum would have {acc.shape[0] * pr.shape[0]} vectors (> {limit})"
                )
            acc = (acc[:, None, :] + pr[None, :, :]).reshape(-1, n_states)
            if prune is not None:
                acc = prune(acc)
        out_alphas.append(acc)
        out_actions.append(np.full(acc.shape[0], a, dtype=np.int64))
    alphas = np.vstack(out_alphas)
    actions = np.concatenate(out_actions)
    return alphas, actions


def policy_tree_alphas(
    T: np.ndarray,
    Z: np.ndarray,
    R: np.ndarray,
    discount: float,
    horizon: int,
    *,
    R_final: np.ndarray | None = None,
    limit: int = 2_000_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Alpha vectors of EVERY depth-``horizon`` policy tree and their root actions.

    The tree count is ``A * trees_{H-1}^O``; raises ``ValueError`` above ``limit``.
    Returns ``(alphas (N, S), actions (N,))``; ``max(alphas @ b)`` is the optimal value.
    """
    T, Z, R = (np.asarray(x, dtype=np.float64) for x in (T, Z, R))
    _check_horizon(T, Z, R, horizon)
    alphas = _terminal(R_final, T.shape[-1])[None, :]
    actions = np.zeros(1, dtype=np.int64)
    for t in range(horizon - 1, -1, -1):
        alphas, actions = _backup_sets(
            _epoch(T, t, 3), _epoch(Z, t, 3), _epoch(R, t, 2), discount, alphas, None, limit
        )
    return alphas, actions


# ---------------------------------------------------------------------------- 3. exact VI
def _prune_pointwise(V: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Drop duplicates and vectors pointwise dominated by another one."""
    if V.shape[0] > 1:
        _, first = np.unique(np.round(V, 12), axis=0, return_index=True)
        V = V[np.sort(first)]
    keep = np.ones(V.shape[0], dtype=bool)
    for i in range(V.shape[0]):
        others = V[keep & (np.arange(V.shape[0]) != i)]
        if others.size and np.any(np.all(others >= V[i] - tol, axis=1)):
            keep[i] = False
    return V[keep]


def _prune_lp(V: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Keep only vectors that are strictly best (by more than ``tol``) somewhere on the
    simplex (Lark's filter: maximise d s.t. b.(v - w) >= d for every other kept w)."""
    from scipy.optimize import linprog

    V = _prune_pointwise(V)
    n, s = V.shape
    if n <= 1:
        return V
    keep = []
    for i in range(n):
        others = np.delete(V, i, axis=0)
        # variables (b_1..b_S, d); maximise d <=> minimise -d
        c = np.zeros(s + 1)
        c[-1] = -1.0
        A_ub = np.hstack([others - V[i][None, :], np.ones((others.shape[0], 1))])
        b_ub = np.zeros(others.shape[0])
        A_eq = np.hstack([np.ones((1, s)), np.zeros((1, 1))])
        res = linprog(
            c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[1.0],
            bounds=[(0, 1)] * s + [(None, None)], method="highs",
        )  # fmt: skip
        if res.status == 0 and -res.fun > tol:
            keep.append(i)
    if not keep:  # all tied everywhere (within tol): any one of them is the envelope
        keep = [0]
    return V[keep]


def exact_value_iteration(
    T: np.ndarray,
    Z: np.ndarray,
    R: np.ndarray,
    discount: float,
    horizon: int,
    *,
    R_final: np.ndarray | None = None,
    limit: int = 2_000_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``horizon``-step value function as a pruned set of alpha vectors.

    Returns ``(alphas (K, S), actions (K,))`` with ``V_H(b) = max_k alphas[k] . b``
    (pruning tolerance 1e-9) and ``actions[k]`` the optimal first action where vector k is
    the maximiser.  Suitable as an :class:`~trim_pomdp.policy.AlphaVectorPolicy`.
    """
    T, Z, R = (np.asarray(x, dtype=np.float64) for x in (T, Z, R))
    _check_horizon(T, Z, R, horizon)
    alphas = _terminal(R_final, T.shape[-1])[None, :]
    actions = np.zeros(1, dtype=np.int64)
    for t in range(horizon - 1, -1, -1):
        alphas, actions = _backup_sets(
            _epoch(T, t, 3), _epoch(Z, t, 3), _epoch(R, t, 2), discount, alphas,
            _prune_pointwise, limit,
        )  # fmt: skip
        # Final LP prune across actions, keeping each survivor's action.
        kept = _prune_lp(alphas)
        idx = [int(np.argmin(np.abs(alphas - k[None, :]).sum(axis=1))) for k in kept]
        alphas, actions = alphas[idx], actions[idx]
    return alphas, actions


def exact_value(
    T: np.ndarray,
    Z: np.ndarray,
    R: np.ndarray,
    discount: float,
    b0: np.ndarray,
    horizon: int,
    *,
    R_final: np.ndarray | None = None,
) -> float:
    """``V_H(b0)`` from :func:`exact_value_iteration`."""
    alphas, _ = exact_value_iteration(T, Z, R, discount, horizon, R_final=R_final)
    return float(np.max(alphas @ np.asarray(b0, dtype=np.float64)))


# ---------------------------------------------------------------------------- policy evaluation
def evaluate_policy_exact(
    T: np.ndarray,
    Z: np.ndarray,
    R: np.ndarray,
    discount: float,
    b0: np.ndarray,
    horizon: int,
    policy: Callable[[np.ndarray], int],
) -> float:
    """Exact expected ``sum_{t<H} discount^t R[a_t, s_t]`` of a belief-feedback policy
    ``a_t = policy(b_t)`` (beliefs updated by Bayes' rule), by enumerating every observation
    sequence of positive probability (cost O^H policy calls)."""
    T, Z, R = (np.asarray(x, dtype=np.float64) for x in (T, Z, R))
    _check_horizon(T, Z, R, horizon)

    def v(b: np.ndarray, t: int) -> float:
        if t == horizon:
            return 0.0
        Tt, Zt, Rt = _epoch(T, t, 3), _epoch(Z, t, 3), _epoch(R, t, 2)
        a = int(policy(b))
        total = float(b @ Rt[a])
        pred = b @ Tt[a]
        for o in range(Zt.shape[2]):
            unnorm = pred * Zt[a, :, o]
            p = unnorm.sum()
            if p > 0:
                total += discount * p * v(unnorm / p, t + 1)
        return total

    return v(np.asarray(b0, dtype=np.float64), 0)
