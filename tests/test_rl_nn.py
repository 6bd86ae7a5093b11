"""Hand-written gradients of the RL networks and the PPO loss against finite differences."""

import numpy as np
import pytest

from trim_pomdp.rl import nn
from trim_pomdp.rl.ppo_math import gae, ppo_loss_and_grads


def _numgrad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = f()
        x[i] = old - eps
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def _ppo_batch(rng, n=7):
    actions = rng.integers(0, 2, size=n)
    old_logp = np.log(rng.uniform(0.2, 0.8, size=n))
    adv = rng.normal(size=n)
    ret = rng.normal(size=n)
    return actions, old_logp, adv, ret


def test_actor_critic_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    p = nn.init_actor_critic(5, hidden=(6, 4), seed=1)
    p["Wpi"] *= 100  # a non-trivial policy so the clip and entropy terms are exercised
    X = rng.normal(size=(7, 5))
    actions, old_logp, adv, ret = _ppo_batch(rng)

    def loss():
        logits, values, _ = nn.actor_critic_forward(p, X)
        return ppo_loss_and_grads(logits, values, actions, old_logp, adv, ret)[0].loss

    logits, values, cache = nn.actor_critic_forward(p, X)
    _, dlogits, dvalues = ppo_loss_and_grads(logits, values, actions, old_logp, adv, ret)
    grads, _ = nn.actor_critic_backward(p, cache, dlogits, dvalues)
    for k in p:
        np.testing.assert_allclose(grads[k], _numgrad(loss, p[k]), rtol=1e-5, atol=1e-8, err_msg=k)


def test_input_gradient_and_rnn_bptt_match_finite_differences():
    rng = np.random.default_rng(1)
    n, T, d, H = 3, 5, 4, 6
    p = nn.init_actor_critic(H, hidden=(5,), seed=2)
    p.update(nn.init_rnn(d, H, seed=3))
    X = rng.normal(size=(n, T, d))
    w_logits = rng.normal(size=(n * T, 2))
    w_values = rng.normal(size=n * T)

    def loss():
        hs = nn.rnn_forward(p, X)
        logits, values, _ = nn.actor_critic_forward(p, hs.reshape(n * T, H))
        return float((logits * w_logits).sum() + (values * w_values).sum())

    hs = nn.rnn_forward(p, X)
    logits, values, cache = nn.actor_critic_forward(p, hs.reshape(n * T, H))
    grads, dx = nn.actor_critic_backward(p, cache, w_logits, w_values)
    grads.update(nn.rnn_backward(p, X, hs, dx.reshape(n, T, H)))
    for k in p:
        np.testing.assert_allclose(grads[k], _numgrad(loss, p[k]), rtol=1e-5, atol=1e-8, err_msg=k)


def test_ppo_clip_zeroes_gradient_outside_trust_region():
    logits = np.array([[0.0, 0.0]])
    # new prob of action 1 is 0.5, old was 0.25 -> ratio 2 > 1.2 with positive advantage:
    # the clipped branch is active and the policy gradient vanishes (only entropy remains).
    _, dlogits, _ = ppo_loss_and_grads(
        logits, np.zeros(1), np.array([1]), np.log([0.25]), np.array([1.0]), np.zeros(1),
        ent_coef=0.0,
    )
    assert np.all(dlogits == 0.0)


def test_gae_known_values():
    # one episode of 3 steps then padding; gamma = 1, lambda = 0.5
    r = np.array([[0.0, 0.0, 1.0, 0.0]])
    v = np.array([[0.5, 0.5, 0.5, 0.0]])
    m = np.array([[1.0, 1.0, 1.0, 0.0]])
    adv, ret = gae(r, v, m, gamma=1.0, lam=0.5)
    # deltas: 0, 0, 0.5 -> A2 = 0.5, A1 = 0 + 0.5*0.5 = 0.25, A0 = 0.125
    np.testing.assert_allclose(adv[0], [0.125, 0.25, 0.5, 0.0])
    np.testing.assert_allclose(ret[0], [0.625, 0.75, 1.0, 0.0])
    # lambda = 1: the returns are the Monte Carlo returns
    _, ret1 = gae(r, v, m, gamma=1.0, lam=1.0)
    np.testing.assert_allclose(ret1[0], [1.0, 1.0, 1.0, 0.0])


def test_adam_minimises_a_quadratic():
    p = {"w": np.array([3.0, -2.0])}
    opt = nn.Adam(lr=0.1, max_grad_norm=None)
    for _ in range(500):
        opt.step(p, {"w": 2 * p["w"]})
    assert np.abs(p["w"]).max() < 1e-2


@pytest.mark.parametrize("norm", [0.5])
def test_adam_clips_global_norm(norm):
    p = {"w": np.zeros(2)}
    opt = nn.Adam(lr=1.0, max_grad_norm=norm)
    assert opt.step(p, {"w": np.array([3.0, 4.0])}) == pytest.approx(5.0)
