"""PPO's token losses and diagnostics, as TRL v0.8.6's `PPOTrainer.loss` / `_kl_penalty` /
`entropy_from_logits`. Losses are (sum, count, clipped count) over the mask rather than TRL's
masked means, so accumulating micro-batches and dividing once at the end is exact (Tunix style).
Masked-out tokens go through jnp.where, so garbage (NaN, inf) on padding cannot leak.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

KL_KINDS = ("kl", "abs", "mse", "full")


def _mask(mask):
    return jnp.asarray(mask) > 0


def _clean(x, m):
    """x as float32 with masked-out entries 0 (also keeps NaN out of gradients)."""
    return jnp.where(m, jnp.asarray(x, jnp.float32), 0.0)


def _masked_sum(x, m):
    return jnp.sum(jnp.where(m, x, 0.0)).astype(jnp.float32)


def policy_loss(logprobs, old_logprobs, advantages, mask, cliprange):
    """(loss sum, token count, clipped count) of the clipped surrogate
    max(−A·ratio, −A·clip(ratio, 1−c, 1+c)), ratio = exp(logprobs − old_logprobs)."""
    m = _mask(mask)
    advantages = _clean(advantages, m)
    ratio = jnp.exp(_clean(logprobs, m) - _clean(old_logprobs, m))
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - cliprange, 1.0 + cliprange)
    return (_masked_sum(jnp.maximum(unclipped, clipped), m), jnp.sum(m).astype(jnp.float32),
            jnp.sum(m & (clipped > unclipped)).astype(jnp.float32))


def value_loss(values, old_values, returns, mask, cliprange_value):
    """(loss sum, token count, clipped count) of 0.5·max((v − R)², (clip(v, old ± c) − R)²);
    clipped counts tokens where the clipped term is larger (TRL's vf_clipfrac)."""
    m = _mask(mask)
    values, old_values, returns = _clean(values, m), _clean(old_values, m), _clean(returns, m)
    v_clipped = jnp.clip(values, old_values - cliprange_value, old_values + cliprange_value)
    unclipped = jnp.square(values - returns)
    clipped = jnp.square(v_clipped - returns)
    return (0.5 * _masked_sum(jnp.maximum(unclipped, clipped), m), jnp.sum(m).astype(jnp.float32),
            jnp.sum(m & (clipped > unclipped)).astype(jnp.float32))


def ratio_sum(logprobs, old_logprobs, mask):
    """(sum of exp(logprobs − old_logprobs) over mask, count), for TRL's ratio_threshold check
    (a minibatch whose mean ratio exceeds it is skipped)."""
    m = _mask(mask)
    ratio = jnp.exp(_clean(logprobs, m) - _clean(old_logprobs, m))
    return _masked_sum(ratio, m), jnp.sum(m).astype(jnp.float32)


def kl_penalty(logprobs, ref_logprobs, kind, logits=None, ref_logits=None):
    """Per-token KL estimate [B, T] of π against π_ref, named as TRL's kl_penalty: "kl" lp − ref,
    "abs" |lp − ref|, "mse" ½(lp − ref)², "full" Σ_v p·(log p − log p_ref) from logits [B, T, V]."""
    if kind not in KL_KINDS:
        raise ValueError(f"unknown kl_penalty {kind!r}; choose one of {', '.join(KL_KINDS)}")
    if kind == "full":
        if logits is None or ref_logits is None:
            raise ValueError('kl_penalty "full" needs logits and ref_logits [B, T, V]')
        logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
        ref_logp = jax.nn.log_softmax(jnp.asarray(ref_logits, jnp.float32), axis=-1)
        return jnp.sum(jnp.exp(logp) * (logp - ref_logp), axis=-1)
    diff = jnp.asarray(logprobs, jnp.float32) - jnp.asarray(ref_logprobs, jnp.float32)
    if kind == "kl":
        return diff
    if kind == "abs":
        return jnp.abs(diff)
    return 0.5 * jnp.square(diff)


def entropy_from_logits(logits):
    """Entropy [B, T] float32 of softmax(logits): logsumexp(logits) − Σ softmax·logits."""
    logits = jnp.asarray(logits, jnp.float32)
    p = jax.nn.softmax(logits, axis=-1)
    return jax.nn.logsumexp(logits, axis=-1) - jnp.sum(p * logits, axis=-1)


def explained_variance(values, returns, mask):
    """1 − var(returns − values) / var(returns) over mask (a value-head metric; NaN when the
    returns have no variance)."""
    m = _mask(mask)
    n = jnp.maximum(jnp.sum(m).astype(jnp.float32), 1.0)

    values, returns = _clean(values, m), _clean(returns, m)

    def var(x):
        mean = _masked_sum(x, m) / n
        return _masked_sum(jnp.square(x - mean), m) / n

    var_r = var(returns)
    return jnp.where(var_r > 0, 1.0 - var(returns - values) / var_r, jnp.nan)
