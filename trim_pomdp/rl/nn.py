"""Small neural networks in NumPy with hand-written gradients, for the RL routers.

Only what TRIM-Agg and TRIM-Seq need: a tanh MLP trunk with an actor head (logits over
the two actions) and a critic head (state value), an Elman recurrent encoder for
TRIM-Seq, and Adam.  Every backward pass is checked against central finite differences
in ``tests/test_rl_nn.py``.

Parameters are kept in a ``dict[str, ndarray]`` so that they save to ``.npz`` as they are
(no pickle) and the optimiser can treat them uniformly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Params = dict[str, NDArray[np.float64]]


def _glorot(rng: np.random.Generator, fan_in: int, fan_out: int, gain: float = 1.0) -> NDArray:
    # Orthogonal-ish scale used by PPO implementations: keeps tanh units out of saturation
    # at the start of training.
    limit = gain * np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def init_actor_critic(
    n_in: int, hidden: tuple[int, ...] = (128, 128), n_actions: int = 2, seed: int = 0
) -> Params:
    """Parameters of a tanh MLP trunk with separate actor and critic heads.

    The actor head starts with small weights (gain 0.01) so the initial policy is close
    to uniform, the usual PPO initialisation.
    """
    rng = np.random.default_rng(seed)
    p: Params = {}
    d = n_in
    for i, h in enumerate(hidden):
        p[f"W{i}"] = _glorot(rng, d, h)
        p[f"b{i}"] = np.zeros(h)
        d = h
    p["Wpi"] = _glorot(rng, d, n_actions, gain=0.01)
    p["bpi"] = np.zeros(n_actions)
    p["Wv"] = _glorot(rng, d, 1)
    p["bv"] = np.zeros(1)
    return p


def n_hidden_layers(p: Params) -> int:
    return sum(1 for k in p if k.startswith("W") and k[1:].isdigit())


def actor_critic_forward(p: Params, X: NDArray) -> tuple[NDArray, NDArray, list[NDArray]]:
    """Forward pass.  Returns ``(logits (n, A), values (n,), cache)``.

    ``h_0 = X``, ``h_{i+1} = tanh(h_i W_i + b_i)``; ``logits = h_L W_pi + b_pi``;
    ``v = h_L W_v + b_v``.
    """
    hs = [X]
    h = X
    for i in range(n_hidden_layers(p)):
        h = np.tanh(h @ p[f"W{i}"] + p[f"b{i}"])
        hs.append(h)
    logits = h @ p["Wpi"] + p["bpi"]
    values = (h @ p["Wv"] + p["bv"])[:, 0]
    return logits, values, hs


def actor_critic_backward(
    p: Params, cache: list[NDArray], dlogits: NDArray, dvalues: NDArray
) -> tuple[Params, NDArray]:
    """Gradients of a scalar loss given ``dL/dlogits`` (n, A) and ``dL/dvalues`` (n,).

    Returns ``(grads, dL/dX)``; ``dL/dX`` lets a recurrent encoder below the trunk
    continue the chain rule.
    """
    hs = cache
    hL = hs[-1]
    g: Params = {
        "Wpi": hL.T @ dlogits,
        "bpi": dlogits.sum(axis=0),
        "Wv": hL.T @ dvalues[:, None],
        "bv": np.array([dvalues.sum()]),
    }
    dh = dlogits @ p["Wpi"].T + dvalues[:, None] @ p["Wv"].T
    for i in reversed(range(n_hidden_layers(p))):
        da = dh * (1.0 - hs[i + 1] ** 2)  # tanh' = 1 - tanh^2
        g[f"W{i}"] = hs[i].T @ da
        g[f"b{i}"] = da.sum(axis=0)
        dh = da @ p[f"W{i}"].T
    return g, dh


def log_softmax(logits: NDArray) -> NDArray:
    m = logits.max(axis=-1, keepdims=True)
    z = logits - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# --------------------------------------------------------------------------- recurrent


def init_rnn(n_in: int, n_hidden: int = 64, seed: int = 0) -> Params:
    """Elman encoder ``h_t = tanh(x_t W_x + h_{t-1} W_h + b)``, ``h_0 = 0``."""
    rng = np.random.default_rng(seed)
    return {
        "rWx": _glorot(rng, n_in, n_hidden),
        # recurrent weights scaled below 1 so early training neither explodes nor vanishes
        "rWh": 0.5 * np.linalg.qr(rng.normal(size=(n_hidden, n_hidden)))[0],
        "rb": np.zeros(n_hidden),
    }


def rnn_forward(p: Params, X: NDArray) -> NDArray:
    """Run the encoder over padded sequences ``X`` (n, T, d); returns states (n, T, H).

    Padding after an episode ends is harmless: later states are never read by the loss
    (masked) and the recurrence is causal.
    """
    n, T, _ = X.shape
    H = p["rb"].shape[0]
    hs = np.empty((n, T, H))
    h = np.zeros((n, H))
    xw = X @ p["rWx"] + p["rb"]
    for t in range(T):
        h = np.tanh(xw[:, t] + h @ p["rWh"])
        hs[:, t] = h
    return hs


def rnn_backward(p: Params, X: NDArray, hs: NDArray, dhs: NDArray) -> Params:
    """Back-propagation through time given ``dL/dh_t`` for every t (n, T, H)."""
    n, T, _ = X.shape
    g = {k: np.zeros_like(v) for k, v in p.items() if k.startswith("r")}
    dh_next = np.zeros((n, hs.shape[2]))
    for t in reversed(range(T)):
        dh = dhs[:, t] + dh_next
        da = dh * (1.0 - hs[:, t] ** 2)
        h_prev = hs[:, t - 1] if t > 0 else np.zeros_like(hs[:, 0])
        g["rWx"] += X[:, t].T @ da
        g["rWh"] += h_prev.T @ da
        g["rb"] += da.sum(axis=0)
        dh_next = da @ p["rWh"].T
    return g


# --------------------------------------------------------------------------- optimiser


@dataclass
class Adam:
    """Adam (Kingma & Ba 2015) with global gradient-norm clipping."""

    lr: float = 3e-4
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    max_grad_norm: float | None = 0.5

    def __post_init__(self) -> None:
        self._m: Params = {}
        self._v: Params = {}
        self._t = 0

    def step(self, params: Params, grads: Params) -> float:
        """Update ``params`` in place; returns the gradient norm before clipping."""
        norm = float(np.sqrt(sum(float((g * g).sum()) for g in grads.values())))
        scale = 1.0
        if self.max_grad_norm is not None and norm > self.max_grad_norm:
            scale = self.max_grad_norm / (norm + 1e-12)
        self._t += 1
        c1 = 1.0 - self.beta1**self._t
        c2 = 1.0 - self.beta2**self._t
        for k, g in grads.items():
            g = g * scale
            m = self._m.setdefault(k, np.zeros_like(g))
            v = self._v.setdefault(k, np.zeros_like(g))
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            params[k] -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)
        return norm
