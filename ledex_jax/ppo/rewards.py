"""LeDex's scalar rewards (paper §2.3) and where they land in the per-token reward sequence.

The formulas work on Python floats, NumPy arrays and JAX arrays alike, so the scorers (plain
Python) and the jitted PPO step share one definition. `place_rewards` builds TRL's
`compute_rewards` layout: -β·KL on every response token, the sequence scores added on top.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

EXPLANATION_REWARD_RANGE = (-5.0, 5.0)


def _lift(x):
    """Python numbers → float, sequences → float64 NumPy array, arrays unchanged."""
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        return x
    if isinstance(x, (int, float)):
        return float(x)
    return np.asarray(x, dtype=np.float64)


def code_reward(codebleu, test_pass_rate):
    """R(r) = 5·(S_cb + S_ut) − 5, in [−5, 5] for scores in [0, 1]."""
    return 5.0 * (_lift(codebleu) + _lift(test_pass_rate)) - 5.0


def explanation_reward(similarity, clip=True):
    """R(e) = (50·S_ex − 35)/3: cosine 0.4 → −5, 0.7 → 0, 1.0 → +5.

    clip (our choice) bounds it to [−5, 5]: unclipped, a cosine below 0.4 goes below −5, down to
    about −28 at cosine −1, and would swamp the code reward. NaN (no explanation) stays NaN.
    """
    r = (50.0 * _lift(similarity) - 35.0) / 3.0
    if not clip:
        return r
    lo, hi = EXPLANATION_REWARD_RANGE
    if isinstance(r, float):
        return r if r != r else min(max(r, lo), hi)
    return (jnp if isinstance(r, jax.Array) else np).clip(r, lo, hi)


def place_rewards(kl, response_mask, explanation_end, code_reward, explanation_reward):
    """Per-token rewards [B, T] float32: −kl on response tokens (kl already scaled by β), plus
    explanation_reward[b] at token explanation_end[b] (−1: none) and code_reward[b] at the last
    response token. response_mask is 1 on response tokens, right-padded with 0; padding stays 0,
    a row without response tokens gets nothing, and an explanation_end off the response tokens
    adds nothing. NaN rewards in rows that do not receive them do not leak."""
    mask = jnp.asarray(response_mask) > 0
    t = jnp.arange(mask.shape[1])[None, :]
    rewards = jnp.where(mask, -jnp.asarray(kl, jnp.float32), 0.0)
    last = jnp.max(jnp.where(mask, t, -1), axis=1, keepdims=True)
    at_last = mask & (t == last)
    rewards = rewards + jnp.where(at_last, jnp.asarray(code_reward, jnp.float32)[:, None], 0.0)
    end = jnp.asarray(explanation_end, jnp.int32)[:, None]
    at_end = mask & (end >= 0) & (t == end)
    return rewards + jnp.where(at_end, jnp.asarray(explanation_reward, jnp.float32)[:, None], 0.0)
