"""Rotary position embeddings, rotate-half convention (HF Llama)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def rope_tables(positions, head_dim, theta, scaling_factor=None, max_positions: int = 4096):
    """cos/sin [batch, length, head_dim] for `positions`, looked up in a [max_positions, head_dim / 2]
    table built once at trace time (computed in the graph, XLA would re-evaluate cos/sin for every
    head of every layer). A position >= max_positions reads NaN, as a learned position table
    would fail; the sampler and trainer keep positions below `max_position_embeddings`."""
    cos, sin = _rope_table(head_dim, float(theta), float(scaling_factor or 0.0), int(max_positions))
    cos, sin = jnp.take(cos, positions, axis=0), jnp.take(sin, positions, axis=0)
    return jnp.concatenate([cos, cos], axis=-1), jnp.concatenate([sin, sin], axis=-1)


@functools.lru_cache(maxsize=16)
def _rope_table(head_dim, theta, scaling_factor, max_positions):
    """Angles as HF computes them (inverse frequencies by XLA's float32 power, which rounds as
    torch's does; float32 positions x frequencies), then cos/sin rounded once from float64."""
    with jax.ensure_compile_time_eval():
        inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
        if scaling_factor:
            inv_freq = inv_freq / scaling_factor  # linear position interpolation
        inv_freq = np.asarray(jax.device_get(inv_freq), np.float32)
    angles = (np.arange(max_positions, dtype=np.float32)[:, None] * inv_freq[None, :]).astype(np.float64)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


@jax.custom_vjp
def apply_rope(x, cos, sin):
    """x: [batch, length, heads, head_dim]. Its gradient is the rotation by the opposite angle
    (the tables repeat each angle in both halves, so rotate-half commutes with them): one fused
    pass instead of autodiff's transposed concatenation."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    return (x.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x.dtype)


def _rope_fwd(x, cos, sin):
    return apply_rope(x, cos, sin), (cos, sin)


def _rope_bwd(residuals, g):
    cos, sin = residuals
    return apply_rope(g, cos, -sin), None, None


apply_rope.defvjp(_rope_fwd, _rope_bwd)
