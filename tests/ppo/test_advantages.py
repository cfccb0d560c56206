"""GAE and masked whitening against plain-NumPy loops over rows and tokens."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ledex_jax.ppo.advantages import gae, masked_mean, whiten

SHAPES = [(5, 9), (3, 16)]  # a few [B, T], so seeds reuse compiled ops and the folder stays fast


def _random_batch(seed, garbage=True):
    rng = np.random.default_rng(seed)
    B, T = SHAPES[seed % len(SHAPES)]
    lengths = rng.integers(0, T + 1, B)
    lengths[0] = 0
    lengths[1] = T
    lengths[2] = 1
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)
    rewards = rng.normal(size=(B, T)).astype(np.float32)
    values = rng.normal(size=(B, T)).astype(np.float32)
    if garbage:
        rewards[mask == 0] = np.nan
        values[mask == 0] = np.inf
    return rewards, values, mask, lengths


def _reference_gae(rewards, values, lengths, gamma, lam):
    B, T = rewards.shape
    adv = np.zeros((B, T))
    ret = np.zeros((B, T))
    for b in range(B):
        last = 0.0
        for t in reversed(range(lengths[b])):
            next_value = values[b, t + 1] if t + 1 < lengths[b] else 0.0
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            last = delta + gamma * lam * last
            adv[b, t] = last
            ret[b, t] = last + values[b, t]
    return adv, ret


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("gamma, lam", [(0.99, 1.0), (1.0, 0.95), (0.9, 0.5), (0.0, 1.0)])
def test_gae_matches_loop(seed, gamma, lam):
    rewards, values, mask, lengths = _random_batch(seed)
    want_adv, want_ret = _reference_gae(rewards.astype(np.float64), values.astype(np.float64), lengths, gamma, lam)
    adv, ret = gae(rewards, values, mask, gamma, lam)
    assert adv.dtype == jnp.float32 and ret.dtype == jnp.float32 and adv.shape == rewards.shape
    np.testing.assert_allclose(np.asarray(adv), want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), want_ret, rtol=1e-5, atol=1e-5)
    jadv, jret = jax.jit(gae)(rewards, values, mask, jnp.float32(gamma), jnp.float32(lam))  # traced γ, λ
    np.testing.assert_allclose(np.asarray(jadv), want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jret), want_ret, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_gae_lambda_one_is_reward_to_go_minus_value(seed):
    rewards, values, mask, lengths = _random_batch(seed)
    gamma = 0.99
    adv, ret = gae(rewards, values, mask.astype(bool), gamma, 1.0)
    B, T = rewards.shape
    want_adv = np.zeros((B, T))
    want_ret = np.zeros((B, T))
    for b in range(B):
        for t in range(lengths[b]):
            to_go = sum(gamma ** (k - t) * float(rewards[b, k]) for k in range(t, lengths[b]))
            want_ret[b, t] = to_go
            want_adv[b, t] = to_go - values[b, t]
    np.testing.assert_allclose(np.asarray(adv), want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), want_ret, rtol=1e-5, atol=1e-5)


def test_gae_by_hand():
    rewards = np.array([[0.0, 0.0, 1.0, 0.0]], np.float32)
    values = np.array([[0.5, 0.5, 0.5, 9.0]], np.float32)
    mask = np.array([[1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    np.testing.assert_allclose(np.asarray(ret), [[1, 1, 1, 0]], atol=1e-6)
    np.testing.assert_allclose(np.asarray(adv), [[0.5, 0.5, 0.5, 0]], atol=1e-6)


def _reference_whiten(x, mask, shift_mean):
    picked = [float(x[b, t]) for b in range(x.shape[0]) for t in range(x.shape[1]) if mask[b, t]]
    n = len(picked)
    mean = sum(picked) / n
    var = sum((p - mean) ** 2 for p in picked) / (n - 1)
    out = np.zeros(x.shape)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            if mask[b, t]:
                out[b, t] = (x[b, t] - mean) / np.sqrt(var + 1e-8) + (0.0 if shift_mean else mean)
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shift_mean", [True, False])
def test_whiten_matches_loop(seed, shift_mean):
    rewards, _, mask, _ = _random_batch(seed)
    x = np.where(mask > 0, rewards * 3.0 + 2.0, np.nan).astype(np.float32)
    want = _reference_whiten(x, mask, shift_mean)
    got = whiten(x, mask, shift_mean=shift_mean)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    jitted = jax.jit(whiten, static_argnames="shift_mean")(x, mask, shift_mean=shift_mean)
    np.testing.assert_allclose(np.asarray(jitted), want, rtol=1e-5, atol=1e-5)
    picked = np.asarray(got)[mask > 0]
    if shift_mean:  # zero mean, unit (Bessel-corrected) std on the response tokens
        assert abs(picked.mean()) < 1e-5
        assert picked.std(ddof=1) == pytest.approx(1.0, abs=1e-4)


def test_whiten_degenerate_masks_are_finite():
    x = np.array([[3.0, np.nan], [np.nan, np.nan]], np.float32)
    one = whiten(x, np.array([[1, 0], [0, 0]]))
    np.testing.assert_allclose(np.asarray(one), 0.0)
    none = whiten(x, np.zeros((2, 2)))
    np.testing.assert_allclose(np.asarray(none), 0.0)
    np.testing.assert_allclose(np.asarray(whiten(x, np.array([[1, 0], [0, 0]]), shift_mean=False)), [[3, 0], [0, 0]])


def test_masked_mean():
    rewards, _, mask, _ = _random_batch(5)
    picked = [float(rewards[b, t]) for b in range(mask.shape[0]) for t in range(mask.shape[1]) if mask[b, t]]
    assert float(masked_mean(rewards, mask)) == pytest.approx(sum(picked) / len(picked), rel=1e-5, abs=1e-6)
    assert float(jax.jit(masked_mean)(rewards, mask)) == pytest.approx(sum(picked) / len(picked), rel=1e-5, abs=1e-6)
    assert float(masked_mean(rewards, np.zeros_like(mask))) == 0.0
