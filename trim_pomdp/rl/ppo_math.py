"""The PPO objective and its gradient with respect to the network outputs.

Separated from the training loop so the maths can be checked on its own against finite
differences (``tests/test_rl_nn.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from trim_pomdp.rl.nn import log_softmax


@dataclass(frozen=True)
class PPOStats:
    loss: float
    policy_loss: float
    value_loss: float
    entropy: float
    approx_kl: float
    clip_fraction: float


def ppo_loss_and_grads(
    logits: NDArray,
    values: NDArray,
    actions: NDArray,
    old_logp: NDArray,
    advantages: NDArray,
    returns: NDArray,
    *,
    clip: float = 0.2,
    vf_coef: float = 0.5,
    ent_coef: float = 0.01,
) -> tuple[PPOStats, NDArray, NDArray]:
    r"""Clipped PPO loss (Schulman et al. 2017) and ``dL/dlogits``, ``dL/dvalues``.

    With :math:`\rho = \exp(\log\pi(a|x) - \log\pi_{old}(a|x))` and advantage :math:`A`,

    .. math::

        L = -\frac1n\sum \min(\rho A, \operatorname{clip}(\rho, 1-\epsilon, 1+\epsilon) A)
            + c_v \frac1n \sum \tfrac12 (V - G)^2 - c_e \frac1n \sum H(\pi(\cdot|x)).

    The min picks the clipped branch only when it is strictly smaller, where its gradient
    in :math:`\rho` is zero; otherwise :math:`\partial(\rho A)/\partial\log\pi = \rho A`.
    For the entropy, :math:`\partial H/\partial z_j = -p_j(\log p_j + H)`.
    """
    n = logits.shape[0]
    logp_all = log_softmax(logits)
    probs = np.exp(logp_all)
    idx = np.arange(n)
    logp = logp_all[idx, actions]
    ratio = np.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = np.clip(ratio, 1.0 - clip, 1.0 + clip) * advantages
    surrogate = np.minimum(unclipped, clipped)
    active = unclipped <= clipped

    entropy = -(probs * logp_all).sum(axis=1)
    v_err = values - returns

    policy_loss = -float(surrogate.mean())
    value_loss = 0.5 * float((v_err**2).mean())
    ent = float(entropy.mean())
    loss = policy_loss + vf_coef * value_loss - ent_coef * ent

    dlogp = -(ratio * advantages) * active / n
    onehot = np.zeros_like(logits)
    onehot[idx, actions] = 1.0
    dlogits = dlogp[:, None] * (onehot - probs)
    dH = -probs * (logp_all + entropy[:, None])
    dlogits -= ent_coef * dH / n
    dvalues = vf_coef * v_err / n

    stats = PPOStats(
        loss=loss,
        policy_loss=policy_loss,
        value_loss=value_loss,
        entropy=ent,
        approx_kl=float(((ratio - 1.0) - (logp - old_logp)).mean()),
        clip_fraction=float((np.abs(ratio - 1.0) > clip).mean()),
    )
    return stats, dlogits, dvalues


def gae(
    rewards: NDArray, values: NDArray, mask: NDArray, *, gamma: float = 1.0, lam: float = 0.95
) -> tuple[NDArray, NDArray]:
    r"""Generalised advantage estimation over padded episodes.

    ``rewards``, ``values`` and ``mask`` are (n_episodes, T); ``mask[i, t]`` is 1 while
    episode i is running at step t.  Episodes terminate (no bootstrap) after their last
    masked step:

    .. math::

        \delta_t = r_t + \gamma V_{t+1} m_{t+1} - V_t,\qquad
        A_t = \delta_t + \gamma\lambda m_{t+1} A_{t+1}.

    Returns ``(advantages, returns = advantages + values)``, zero where masked out.
    """
    n, T = rewards.shape
    adv = np.zeros((n, T))
    last = np.zeros(n)
    for t in reversed(range(T)):
        m_next = mask[:, t + 1] if t + 1 < T else np.zeros(n)
        v_next = values[:, t + 1] if t + 1 < T else np.zeros(n)
        delta = rewards[:, t] + gamma * v_next * m_next - values[:, t]
        last = delta + gamma * lam * m_next * last
        adv[:, t] = last * mask[:, t]
    return adv, (adv + values) * mask
