"""Attention of one new token over a bfloat16 or float32 KV cache on CPU (`decode_attention.cc`,
an XLA FFI custom call).

XLA:CPU runs decode attention as B x Hkv tiny batched products: for SmolLM2-135M at batch 16 its
two products took 0.35 ms per layer, a third of the whole bf16 decode step once the projections
ran on AMX (`amx.py`); in float32 16 ms of a 65 ms step. The kernel reads each row's cache once,
in float32 arithmetic with the XLA path's rounding points (see the .cc), so results agree to the
inputs' precision.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ledex_jax.kernels.build import available, unavailable_reason, usable_in_trace

TARGET = "ledex_decode_attention"


def applies(q, k, v) -> bool:
    """One new token, q/k/v all bfloat16 or all float32, a supported head size, no multi-device
    mesh (the custom call has no sharding rule) and the kernels built for this CPU."""
    return (q.shape[1] == 1 and q.dtype in (jnp.bfloat16, jnp.float32) and k.dtype == v.dtype == q.dtype
            and q.shape[-1] % 32 == 0 and q.shape[-1] <= 256
            and usable_in_trace())


def decode_attention(q, k, v, visible, scale: float):
    """q [B, 1, H, D]; k, v [B, Hkv, S, D] (the cache, `layers.heads_first`); visible [B, 1, 1, 1, S]
    -> [B, 1, H, D], as `layers.dot_attention` computes it."""
    b, t, h, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    if t != 1 or h % hkv or visible.shape[-2:] != (1, s):
        raise ValueError(f"decode_attention: q {q.shape}, cache {k.shape}, visible {visible.shape} "
                         "are not one new token over the cache")
    if not available():
        raise RuntimeError(f"decode_attention: the CPU kernels are unavailable ({unavailable_reason()})")
    grouped = q.reshape(b, hkv, h // hkv, d)  # head i = kv head i // G, as in dot_attention
    out = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(grouped.shape, q.dtype))(
        grouped, k, v, visible.reshape(b, s), scale=np.float32(scale))
    return out.reshape(b, 1, h, d)
