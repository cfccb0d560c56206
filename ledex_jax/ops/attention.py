"""Attention through the seam: `attend(ops, q, k, v, mask, scale, cache)` writes this step's keys
and values into the layer's cache (if any) and attends with the implementation `ops` names.

Layouts: q [B, T, H, D] and k, v [B, T, Hkv, D] as projected (query head i uses kv head
i // (H / Hkv): GQA, MQA when Hkv = 1); the cache holds [B, Hkv, S, D] per layer (heads before
slots, so attention over it is a batched product with no transposes).

Without a cache (training, scoring), or for a prompt written into a fresh cache (prefill: slot 0,
a static 0 offset), attention runs over the new tokens with the chosen training kernel. A step
over a cache that already holds tokens (decoding) reads the whole cache.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ledex_jax.kernels import decode_attention as cpu_decode_attention
from ledex_jax.kernels import flash_attention as cpu_flash_attention
from ledex_jax.ops import dense
from ledex_jax.ops.choice import Ops


class AttentionMask(NamedTuple):
    """Who sees whom, built once per forward pass (`AttentionMask.build`).

    visible: [B, T, S] bool — causal, key slot holds a token, same segment.
    key_mask: [B, S] — 1 where a key slot holds a real token.
    segment_ids: [B, T] or None — packed examples (only without a cache, T == S).
    q_offset: slot of the first query; a Python int 0 marks a prompt going into a fresh cache.
    """
    visible: jax.Array
    key_mask: jax.Array
    segment_ids: jax.Array | None
    q_offset: int | jax.Array

    @classmethod
    def build(cls, q_len: int, key_mask, segment_ids=None, q_offset=0) -> "AttentionMask":
        kv_len = key_mask.shape[-1]
        causal = jnp.arange(kv_len)[None, :] <= q_offset + jnp.arange(q_len)[:, None]  # [T, S]
        visible = causal[None] & key_mask.astype(bool)[:, None, :]
        if segment_ids is not None:
            visible = visible & (segment_ids[:, :, None] == segment_ids[:, None, :])
        return cls(visible, key_mask, segment_ids, q_offset)

    @property
    def fresh(self) -> bool:
        """Queries start at slot 0: keys past the queries are never visible."""
        return isinstance(self.q_offset, int) and self.q_offset == 0

    def first_keys(self, n: int) -> "AttentionMask":
        """The mask restricted to key slots [0, n) (a fresh prefill's own tokens)."""
        return self._replace(visible=self.visible[..., :n], key_mask=self.key_mask[:, :n])

    def segments(self):
        """(query, key) segment ids for segment-based kernels: padding 0, real tokens >= 1."""
        real = self.key_mask.astype(bool)
        ids = jnp.ones_like(self.key_mask, jnp.int32) if self.segment_ids is None else self.segment_ids + 1
        kv = jnp.where(real, ids.astype(jnp.int32), 0)
        return kv[:, :self.visible.shape[1]], kv


def attend(ops: Ops, q, k, v, mask: AttentionMask, scale: float, cache=None, recompute: bool = False):
    """Returns ([B, T, H, D] in q's dtype, the layer's updated cache (k, v) or None).

    recompute: the XLA path recomputes its scores in the backward pass instead of storing them
    (remat policy "attention")."""
    if cache is not None:
        cache = tuple(_write_slots(ops, c, _heads_first(x), mask.q_offset) for c, x in zip(cache, (k, v)))
    if cache is None or mask.fresh:
        t = q.shape[1]
        return _attend_new_tokens(ops, q, k, v, mask.first_keys(t) if cache is not None else mask, scale,
                                  recompute), cache
    k_cache, v_cache = cache
    if ops.cache_attention == "cpu" and cpu_decode_attention.applies(q, k_cache, v_cache):
        return cpu_decode_attention.decode_attention(q, k_cache, v_cache, mask.visible[:, 0], scale), cache
    if isinstance(mask.q_offset, int) and q.shape[1] > 1:  # many tokens after a static prefix
        return causal_block_attention(ops, q, k_cache, v_cache, mask.visible, scale, mask.q_offset), cache
    return dot_attention(ops, q, k_cache, v_cache, mask.visible, scale), cache


def _attend_new_tokens(ops: Ops, q, k, v, mask: AttentionMask, scale, recompute):
    if ops.attention == "pallas":
        from ledex_jax.ops.pallas_attention import pallas_attention

        q_segments, kv_segments = mask.segments()
        return pallas_attention(q, k, v, q_segments, kv_segments, scale, interpret=ops.interpret)
    if ops.attention == "cudnn" and q.dtype in (jnp.bfloat16, jnp.float16) and q.shape[-1] <= 128:
        return fused_attention(q, k, v, mask.visible, scale)
    if ops.attention == "cpu" and cpu_flash_attention.applies(q, k, v):
        return cpu_flash_attention.flash_attention(q, k, v, mask.visible, scale)
    xla = causal_block_attention if mask.fresh and q.shape[1] > CAUSAL_BLOCK else dot_attention
    attend = jax.checkpoint(xla, static_argnums=(0, 5)) if recompute else xla
    return attend(ops, q, _heads_first(k), _heads_first(v), mask.visible, scale)


# Query block of `causal_block_attention`: a prompt of T tokens computes ~(T/2 + 128) keys per
# query instead of T (768 tokens: 2/3 of the scores), and holds [block, <= T] scores at a time.
CAUSAL_BLOCK = 256


def causal_block_attention(ops: Ops, q, k, v, visible, scale: float, offset: int = 0):
    """`dot_attention` for T queries at slots offset..offset+T-1 (a static `offset`: 0 for a
    fresh prompt, the prefix's width for a prompt's rest after a shared prefix), one block of
    queries at a time over the keys up to its last query only: the keys after it are masked by
    causality, so real queries get the same result without their scores (and a block's scores
    are all that is held at once). (A padding query, which sees nothing, averages fewer slots; no
    real token reads it.)"""
    t = q.shape[1]
    parts = []
    for start in range(0, t, CAUSAL_BLOCK):
        end = min(t, start + CAUSAL_BLOCK)
        parts.append(dot_attention(ops, q[:, start:end], k[:, :, :offset + end], v[:, :, :offset + end],
                                   visible[:, start:end, :offset + end], scale))
    return jnp.concatenate(parts, axis=1)


def dot_attention(ops: Ops, q, k, v, visible, scale: float):
    """XLA attention. q [B, T, H, D]; k, v [B, Hkv, S, D]; visible [B, T, S] -> [B, T, H, D].

    Both products are batched over (B, Hkv) with the contracted axis minor on both sides, so a
    decode step reads the cache in place. A row that sees nothing averages every slot."""
    b, t, h, d = q.shape
    hkv = k.shape[1]
    k, v = k.astype(q.dtype), v.astype(q.dtype)  # a float32 cache under a bfloat16 model
    q = q.reshape(b, t, hkv, h // hkv, d).transpose(0, 2, 3, 1, 4)  # [B, Hkv, G, T, D]
    logits = dense.einsum(ops, "bkgtd,bksd->bkgts", q, k, jnp.float32) * scale
    logits = jnp.where(visible[:, None, None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = dense.einsum(ops, "bkgts,bksd->bkgtd", probs, v, v.dtype)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


def fused_attention(q, k, v, visible, scale, implementation="cudnn"):
    """cuDNN's flash attention through `jax.nn.dot_product_attention` (never stores the [T, S]
    scores). k, v [B, S, Hkv, D]. Rows with nothing visible (padding queries) see themselves, so
    no softmax row is empty; real tokens always see themselves."""
    t, s = visible.shape[-2:]
    mask = (visible | jnp.eye(t, s, dtype=bool))[:, None]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, implementation=implementation)


def _heads_first(x):
    """[B, T, Hkv, D] projections -> [B, Hkv, T, D], the cache layout."""
    return x.transpose(0, 2, 1, 3)


def _write_slots(ops: Ops, cache, new, end):
    """Writes new [B, Hkv, T, D] into a layer's cache [B, Hkv, S, D] at slot `end`, in place.
    XLA:CPU has no bfloat16 dynamic-update-slice (it converts the whole cache to float32 and
    back each step); the same bits written as uint16 stay an in-place write."""
    new = new.astype(cache.dtype)
    if cache.dtype == jnp.bfloat16 and ops.platform == "cpu":
        bits = jax.lax.dynamic_update_slice_in_dim(jax.lax.bitcast_convert_type(cache, jnp.uint16),
                                                   jax.lax.bitcast_convert_type(new, jnp.uint16), end, axis=2)
        return jax.lax.bitcast_convert_type(bits, jnp.bfloat16)
    return jax.lax.dynamic_update_slice_in_dim(cache, new, end, axis=2)
