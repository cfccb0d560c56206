"""Causal, segment-masked attention on TPU through JAX's Pallas splash-attention kernels.

Splash attention takes one example at a time as [heads, length, head_dim] with the kv heads
grouped natively (GQA and MQA need no repeated k/v), runs its own backward kernels, and skips
whole blocks above the causal diagonal. Everything the kernel cannot take directly (batch,
lengths that are not a block multiple, sharded inputs) is adapted here.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask
from jax.sharding import PartitionSpec as P

from ledex_jax.sharding import active_mesh, logical_to_spec

_LANES = 128  # the kernel's segment-id masking needs every block to be a multiple of this
_BLOCKS = (512, 256, 128)


def _block(length: int) -> int:
    return next(b for b in _BLOCKS if length % b == 0)


def _kernel(heads: int, q_len: int, kv_len: int, interpret: bool):
    """Built inside each trace: its mask arrays become constants there (splash caches the
    numpy mask processing itself)."""
    bq, bkv = _block(q_len), _block(kv_len)
    sizes = splash.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv,
                              block_q_dkv=bq, block_kv_dkv=bkv, block_kv_dkv_compute=bkv,
                              block_q_dq=bq, block_kv_dq=bkv)
    mask = splash_mask.MultiHeadMask([splash_mask.CausalMask((q_len, kv_len))] * heads)
    return splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                  interpret=interpret)


def _pad_length(x, n):
    return jnp.pad(x, [(0, 0), (0, n - x.shape[1])] + [(0, 0)] * (x.ndim - 2))


def _attend(q, k, v, q_segment_ids, kv_segment_ids, *, interpret):
    """[B, T, H, D] (one shard) -> [B, T, H, D]; q already scaled."""
    t, s = q.shape[1], k.shape[1]
    tp, sp = -(-t // _LANES) * _LANES, -(-s // _LANES) * _LANES
    # Appended rows carry segment 0: appended keys lie causally after every original query
    # (T <= S), so they never reach a real row; appended query rows are sliced off below.
    q, q_segment_ids = _pad_length(q, tp), _pad_length(q_segment_ids, tp)
    k, v, kv_segment_ids = _pad_length(k, sp), _pad_length(v, sp), _pad_length(kv_segment_ids, sp)
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))  # the kernel wants [heads, length, D]
    kernel = _kernel(q.shape[1], tp, sp, interpret)
    out = jax.vmap(kernel)(q, k, v, splash.SegmentIds(q_segment_ids, kv_segment_ids))
    return jnp.swapaxes(out, 1, 2)[:, :t]


def _shard_specs(mesh, rules, q_shape, num_kv_heads):
    """Specs for the kernel's shard_map: batch as the rules say, heads only where each shard's
    query heads keep exactly their own kv heads (same split for both, or a single kv head)."""
    q_spec = logical_to_spec(("batch", None, "act_heads", None), rules, mesh, q_shape, "pallas_attention q")
    kv_spec = logical_to_spec(("batch", None, "act_kv_heads", None), rules, mesh, what="pallas_attention k/v")
    batch, heads, kv_heads = q_spec[0], q_spec[2], kv_spec[2]
    axes = (heads,) if isinstance(heads, str) else tuple(heads or ())
    if kv_heads != heads or num_kv_heads % math.prod(mesh.shape[a] for a in axes):
        kv_heads = None
        if num_kv_heads != 1:
            heads = None
    return P(batch, None, heads, None), P(batch, None, kv_heads, None), P(batch, None)


def pallas_attention(q, k, v, q_segment_ids, kv_segment_ids, scale: float, *, interpret: bool = False):
    """q [B, T, H, D]; k, v [B, S, Hkv, D] (Hkv divides H; query head i uses kv head i // (H // Hkv));
    q_segment_ids [B, T], kv_segment_ids [B, S] int32.

    Query t sees key s iff s <= t (both counted from position 0, so T <= S) and the segment ids
    match; padding carries segment 0. `scale` multiplies q.k. Returns [B, T, H, D] in q's dtype.
    Differentiable through the kernel's own backward; `interpret` runs the kernel on any backend.
    """
    shapes = (f"q {q.shape}, k {k.shape}, v {v.shape}, q_segment_ids {q_segment_ids.shape}, "
              f"kv_segment_ids {kv_segment_ids.shape}")
    if (q.ndim != 4 or k.ndim != 4 or v.shape != k.shape or k.shape[0] != q.shape[0]
            or k.shape[3] != q.shape[3] or q_segment_ids.shape != q.shape[:2]
            or kv_segment_ids.shape != k.shape[:2]):
        raise ValueError(f"pallas_attention: expected q [B, T, H, D], k and v [B, S, Hkv, D], "
                         f"segment ids [B, T] and [B, S]; got {shapes}")
    t, h, s, hkv = q.shape[1], q.shape[2], k.shape[1], k.shape[2]
    if h % hkv:
        raise ValueError(f"pallas_attention: kv heads {hkv} do not divide query heads {h}; got {shapes}")
    if t > s:
        raise ValueError(f"pallas_attention: query length {t} exceeds key length {s}; got {shapes}")
    q = (q.astype(jnp.float32) * scale).astype(q.dtype)  # the kernel computes plain q.k
    k, v = k.astype(q.dtype), v.astype(q.dtype)  # the kernel's products take one dtype
    q_segment_ids = q_segment_ids.astype(jnp.int32)
    kv_segment_ids = kv_segment_ids.astype(jnp.int32)
    attend = functools.partial(_attend, interpret=interpret)
    active = active_mesh()
    if active is None or active[0].size == 1:
        return attend(q, k, v, q_segment_ids, kv_segment_ids)
    mesh, rules = active
    q_spec, kv_spec, seg_spec = _shard_specs(mesh, rules, q.shape, hkv)
    # A pallas_call has no sharding rule: each device runs the kernel on its own shard. The
    # splash kernel declares no varying-axes info for its outputs, hence check_vma=False.
    sharded = jax.shard_map(attend, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, seg_spec, seg_spec),
                            out_specs=q_spec, check_vma=False)
    return sharded(q, k, v, q_segment_ids, kv_segment_ids)
