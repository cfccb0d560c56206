"""LeDex's reward formulas on floats / NumPy / JAX, and their placement in the per-token rewards
against a per-row loop."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ledex_jax.ppo.rewards import code_reward, explanation_reward, place_rewards

SHAPES = [(5, 9), (3, 16)]  # a few [B, T], so seeds reuse compiled ops and the folder stays fast


def test_code_reward_floats_and_anchors():
    for cb, ut, want in [(0.0, 0.0, -5.0), (1.0, 1.0, 5.0), (0.5, 0.5, 0.0), (0.25, 0, -3.75), (1, 0, 0.0)]:
        got = code_reward(cb, ut)
        assert type(got) is float
        assert got == pytest.approx(want)


def test_code_reward_arrays():
    rng = np.random.default_rng(0)
    cb, ut = rng.random(7), rng.random(7)
    want = np.array([5 * (a + b) - 5 for a, b in zip(cb, ut)])
    got_np = code_reward(cb, ut)
    assert isinstance(got_np, np.ndarray)
    np.testing.assert_allclose(got_np, want, rtol=1e-12)
    np.testing.assert_allclose(code_reward(list(cb), list(ut)), want, rtol=1e-12)
    got_jax = code_reward(jnp.asarray(cb, jnp.float32), jnp.asarray(ut, jnp.float32))
    assert isinstance(got_jax, jax.Array)
    np.testing.assert_allclose(np.asarray(got_jax), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(code_reward)(cb, ut)), want, rtol=1e-6, atol=1e-6)


def test_explanation_reward_anchors_and_clip():
    for s, want in [(0.4, -5.0), (0.7, 0.0), (1.0, 5.0), (0.55, -2.5)]:
        for clip in (True, False):
            got = explanation_reward(s, clip=clip)
            assert type(got) is float
            assert got == pytest.approx(want, abs=1e-12)
    assert explanation_reward(0.0) == -5.0
    assert explanation_reward(0.0, clip=False) == pytest.approx(-35 / 3)
    assert explanation_reward(-1.0, clip=False) == pytest.approx(-85 / 3)
    assert explanation_reward(-1) == -5.0
    assert explanation_reward(1.2) == 5.0
    assert explanation_reward(1.2, clip=False) == pytest.approx(25 / 3)
    assert math.isnan(explanation_reward(float("nan")))
    assert math.isnan(explanation_reward(float("nan"), clip=False))


@pytest.mark.parametrize("clip", [True, False])
def test_explanation_reward_arrays(clip):
    rng = np.random.default_rng(1)
    sim = np.concatenate([rng.uniform(-1, 1, 20), [np.nan, 0.4, 0.7, 1.0]])
    want = []
    for s in sim:
        r = (50 * s - 35) / 3
        if clip and not np.isnan(r):
            r = -5.0 if r < -5 else 5.0 if r > 5 else r
        want.append(r)
    got_np = explanation_reward(sim, clip=clip)
    assert isinstance(got_np, np.ndarray)
    np.testing.assert_allclose(got_np, want, rtol=1e-12, atol=1e-12)
    got_jax = explanation_reward(jnp.asarray(sim, jnp.float32), clip=clip)
    assert isinstance(got_jax, jax.Array)
    np.testing.assert_allclose(np.asarray(got_jax), want, rtol=1e-5, atol=1e-5)
    jitted = jax.jit(explanation_reward, static_argnames="clip")(jnp.asarray(sim, jnp.float32), clip=clip)
    np.testing.assert_allclose(np.asarray(jitted), want, rtol=1e-5, atol=1e-5)
    if clip:
        assert np.nanmax(np.abs(got_np)) <= 5.0


def _reference_place(kl, mask, ends, code, expl):
    """Row by row: -kl on response tokens, expl at ends[b] if >= 0, code at the last response token."""
    B, T = kl.shape
    out = np.zeros((B, T), np.float64)
    for b in range(B):
        last = -1
        for t in range(T):
            if mask[b, t]:
                out[b, t] = -kl[b, t]
                last = t
        if ends[b] >= 0:
            out[b, ends[b]] += expl[b]
        if last >= 0:
            out[b, last] += code[b]
    return out


def _random_case(seed):
    rng = np.random.default_rng(seed)
    B, T = SHAPES[seed % len(SHAPES)]
    lengths = rng.integers(0, T + 1, B)
    lengths[0] = 0
    lengths[1] = T
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int32)
    kl = rng.normal(size=(B, T)).astype(np.float32)
    kl[mask == 0] = np.nan  # garbage on padding must not leak
    ends = np.full(B, -1, np.int64)
    for b in range(B):
        if lengths[b] > 0 and rng.random() < 0.6:
            ends[b] = rng.integers(0, lengths[b])
    if lengths[1] > 0:
        ends[1] = lengths[1] - 1  # explanation ending on the last token: both rewards add up
    code = rng.uniform(-5, 5, B).astype(np.float32)
    code[lengths == 0] = np.nan  # a row with no response gets nothing, even NaN
    expl = rng.uniform(-5, 5, B).astype(np.float32)
    expl[ends == -1] = np.nan
    return kl, mask, ends, code, expl


@pytest.mark.parametrize("seed", range(4))
def test_place_rewards_matches_loop(seed):
    kl, mask, ends, code, expl = _random_case(seed)
    want = _reference_place(np.nan_to_num(kl), mask, ends, np.nan_to_num(code), np.nan_to_num(expl))
    got = place_rewards(kl, mask, ends, code, expl)
    assert got.dtype == jnp.float32 and got.shape == kl.shape
    assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
    jitted = jax.jit(place_rewards)(kl, mask, ends, code, expl)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(got), rtol=1e-6, atol=1e-6)
    assert np.all(np.asarray(got)[mask == 0] == 0)


def test_place_rewards_by_hand():
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    kl = np.full((3, 4), 0.1, np.float32)
    got = np.asarray(place_rewards(kl, mask.astype(bool), np.array([0, -1, -1]), np.array([2.0, -5.0, 1.0]),
                                   np.array([3.0, np.nan, np.nan])))
    want = np.array([[-0.1 + 3.0, -0.1, -0.1 + 2.0, 0], [-0.1, -0.1 - 5.0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_place_rewards_explanation_end_on_padding_adds_nothing():
    mask = np.array([[1, 1, 0, 0]])
    got = np.asarray(place_rewards(np.zeros((1, 4)), mask, np.array([3]), np.array([1.0]), np.array([4.0])))
    np.testing.assert_allclose(got, [[0, 1.0, 0, 0]])
