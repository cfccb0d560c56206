"""Generalised advantage estimation and masked whitening, as TRL v0.8.6's `compute_advantages` and
`masked_whiten` (what the LeDex paper ran), over right-padded response masks.

TRL whitens the advantages inside `compute_advantages`; here `whiten` is a separate step so the
caller chooses (and can whiten rewards, TRL's `whiten_rewards`). Degenerate masks (0 or 1 tokens),
where TRL raises or returns NaN, give finite results instead, since a jitted step cannot raise.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(x, mask):
    """Mean of x over mask (0 for an empty mask)."""
    m = jnp.asarray(mask) > 0
    n = jnp.sum(m).astype(jnp.float32)
    return jnp.sum(jnp.where(m, x, 0.0)).astype(jnp.float32) / jnp.maximum(n, 1.0)


def gae(rewards, values, response_mask, gamma, lam):
    """(advantages, returns), each [B, T] float32 and 0 on padding. The value after the last
    response token is 0; returns = advantages + values. gamma and lam may be traced."""
    m = jnp.asarray(response_mask) > 0
    r = jnp.where(m, rewards, 0.0).astype(jnp.float32)
    v = jnp.where(m, values, 0.0).astype(jnp.float32)
    next_v = jnp.concatenate([v[:, 1:], jnp.zeros_like(v[:, :1])], axis=1)
    delta = r + gamma * next_v - v
    decay = gamma * lam

    def step(carry, d_t):
        carry = d_t + decay * carry
        return carry, carry

    _, adv_t = jax.lax.scan(step, jnp.zeros(r.shape[0], jnp.float32), delta.T, reverse=True)
    adv = jnp.where(m, adv_t.T, 0.0).astype(jnp.float32)
    return adv, jnp.where(m, adv + v, 0.0).astype(jnp.float32)


def whiten(x, mask, shift_mean=True):
    """(x − mean) / sqrt(var + 1e-8) over mask, var Bessel-corrected as TRL's masked_var; with
    shift_mean=False the mean is added back. 0 on padding."""
    m = jnp.asarray(mask) > 0
    x = jnp.asarray(x, jnp.float32)
    n = jnp.sum(m).astype(jnp.float32)
    mean = jnp.sum(jnp.where(m, x, 0.0)) / jnp.maximum(n, 1.0)
    var = jnp.sum(jnp.where(m, jnp.square(x - mean), 0.0)) / jnp.maximum(n - 1.0, 1.0)
    out = (x - mean) * jax.lax.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return jnp.where(m, out, 0.0)
