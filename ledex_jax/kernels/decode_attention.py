"""Attention of one new token over a bfloat16 or float32 KV cache on CPU (`decode_attention.cc`,
an XLA FFI custom call, AVX-512): XLA:CPU runs it as B x Hkv tiny batched products; the kernel
reads each row's cache once, with the XLA path's rounding points (see the .cc).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ledex_jax.kernels.build import require

TARGET = "ledex_decode_attention"


def applies(q, k, v) -> bool:
    """One new token, q/k/v all bfloat16 or all float32, a head size the kernel takes."""
    return (q.shape[1] == 1 and q.dtype in (jnp.bfloat16, jnp.float32) and k.dtype == v.dtype == q.dtype
            and q.shape[-1] % 32 == 0 and q.shape[-1] <= 256)


def decode_attention(q, k, v, visible, scale: float):
    """q [B, 1, H, D]; k, v [B, Hkv, S, D] (the cache layout); visible [B, S] bool
    -> [B, 1, H, D], as `ops.attention.dot_attention` computes it."""
    b, t, h, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    if t != 1 or h % hkv or visible.shape != (b, s):
        raise ValueError(f"decode_attention: q {q.shape}, cache {k.shape}, visible {visible.shape} "
                         "are not one new token over the cache")
    require("decode_attention", "decode_attention")
    grouped = q.reshape(b, hkv, h // hkv, d)  # head i = kv head i // G, as in dot_attention
    out = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(grouped.shape, q.dtype))(
        grouped, k, v, visible.astype(bool), scale=np.float32(scale))
    return out.reshape(b, 1, h, d)
