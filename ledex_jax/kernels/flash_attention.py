"""Attention for bfloat16 training and scoring on CPU (`flash_attention.cc`, XLA FFI custom calls on
Intel AMX tiles), forward and backward, as a differentiable JAX function.

XLA:CPU materialises the [B, Hkv, G, T, S] float32 scores and their transposes; the kernel keeps
32 query rows of scores at a time, visits only the key blocks the mask lets them see, and saves
just the rows' log-sum-exp for the backward. Same numerics as the XLA path up to summation order.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ledex_jax.kernels.build import require

FORWARD, BACKWARD = "ledex_flash_attention_fwd", "ledex_flash_attention_bwd"


def applies(q, k, v) -> bool:
    """bfloat16 q/k/v, head size a multiple of 64 (<= 256), whole query groups."""
    return (q.dtype == k.dtype == v.dtype == jnp.bfloat16 and q.shape[-1] % 64 == 0 and q.shape[-1] <= 256
            and q.shape[2] % k.shape[2] == 0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def flash_attention(q, k, v, visible, scale: float):
    """q [B, T, H, D]; k, v [B, S, Hkv, D] (as projected); visible [B, T, S] bool -> [B, T, H, D].

    Query head i uses kv head i // (H / Hkv), as `ops.attention.dot_attention`. A query row that sees no
    key gets zeros (padding; the XLA path averages all values there)."""
    return _forward(q, k, v, visible, scale)[0]


def _check(q, k, v, visible):
    b, t, h, d = q.shape
    if (k.shape != v.shape or k.ndim != 4 or k.shape[0] != b or k.shape[3] != d or h % k.shape[2]
            or visible.shape != (b, t, k.shape[1])):
        raise ValueError(f"flash_attention: q {q.shape}, k {k.shape}, v {v.shape}, visible {visible.shape}; "
                         "expected q [B, T, H, D], k, v [B, S, Hkv, D] with Hkv dividing H, visible [B, T, S]")
    require("flash_attention", "flash_attention")


def _forward(q, k, v, visible, scale):
    _check(q, k, v, visible)
    b, t, h, _ = q.shape
    out = (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, h, t), np.dtype(np.float32)))
    return jax.ffi.ffi_call(FORWARD, out)(q, k, v, visible.astype(bool), scale=np.float32(scale))


def _fwd(q, k, v, visible, scale):
    out, lse = _forward(q, k, v, visible, scale)
    return out, (q, k, v, visible, lse)


def _bwd(scale, residuals, dout):
    q, k, v, visible, lse = residuals
    shapes = (jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype),
              jax.ShapeDtypeStruct(v.shape, v.dtype))
    dq, dk, dv = jax.ffi.ffi_call(BACKWARD, shapes)(q, k, v, visible.astype(bool), lse,
                                                      dout.astype(q.dtype), scale=np.float32(scale))
    return dq, dk, dv, None


flash_attention.defvjp(_fwd, _bwd)
