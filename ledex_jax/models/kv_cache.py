"""The key/value cache the forward pass writes during generation."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class KVCache(NamedTuple):
    """Fixed-size key/value cache of all layers. k, v: stacked [layers, batch, kv_heads, slots,
    head_dim] (heads before slots: attention over the cache is a batched product with no
    transposes), or tuples of per-layer [batch, kv_heads, slots, head_dim] buffers (the
    sampler's per-layer decode path).

    `end`: slots already written (the same for every row: prompts are left-padded). A Python
    int 0 marks a fresh cache, whose prompt attends over its own tokens only.
    """
    k: jax.Array | tuple
    v: jax.Array | tuple
    end: jax.Array | int

    @classmethod
    def zeros(cls, num_layers, batch, slots, kv_heads, head_dim, dtype, per_layer: bool = False) -> "KVCache":
        shape = (batch, kv_heads, slots, head_dim)
        if per_layer:
            k = tuple(jnp.zeros(shape, dtype) for _ in range(num_layers))
            v = tuple(jnp.zeros(shape, dtype) for _ in range(num_layers))
            return cls(k, v, 0)
        return cls(jnp.zeros((num_layers, *shape), dtype), jnp.zeros((num_layers, *shape), dtype), 0)


def default_positions(attention_mask):
    """Position ids for left-padded rows: count of real tokens before each token (pads get 0),
    as HF computes them (cumsum(mask) - 1, clipped)."""
    return jnp.maximum(jnp.cumsum(jnp.asarray(attention_mask).astype(jnp.int32), axis=-1) - 1, 0)
