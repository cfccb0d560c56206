"""float32 products with few rows (decode) for JAX on CPU (`f32_matmul.cc`, an XLA FFI custom call,
AVX-512): the kernel streams each packed weight once per 8 rows, where XLA:CPU's small products
fall far below the memory bandwidth. Used by the sampler's decode path through `ledex_jax/ops`.

    packed = pack(w)                    # [K, N] float32 weight, once
    y = matmul(x, packed, n=N)          # x [M, K] float32 -> [M, N] float32
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ledex_jax.kernels.build import require

TARGET = "ledex_f32_matmul"
PANEL, PAIR = 16, 32


def pack(w) -> jax.Array:
    """[K, N] weight -> float32 column panels [Np/16, K, 16] (Np = N rounded up to 32)."""
    k, n = w.shape
    w = jnp.pad(w.astype(jnp.float32), ((0, 0), (0, -n % PAIR)))
    return w.reshape(k, -1, PANEL).transpose(1, 0, 2)


def matmul(x, packed, n: int, out_dtype=jnp.float32) -> jax.Array:
    """x [M, K] float32 @ the packed [K, N] weight -> float32 [M, N] (out_dtype: float32 only,
    for the same signature as `amx.matmul`)."""
    if jnp.dtype(out_dtype) != jnp.float32:
        raise ValueError(f"f32.matmul: output dtype {out_dtype} requested; this kernel writes float32")
    if x.ndim != 2 or x.dtype != jnp.float32:
        raise ValueError(f"f32.matmul: x must be a 2-D float32 array, got {x.dtype}{list(x.shape)}")
    if packed.shape[1] != x.shape[1] or not 0 <= packed.shape[0] * PANEL - n < PAIR:
        raise ValueError(f"f32.matmul: x {list(x.shape)} and n={n} do not match packed weight {list(packed.shape)}")
    require("f32_matmul", "f32.matmul")
    return jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((x.shape[0], n), jnp.float32))(x, packed)
