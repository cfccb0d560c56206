"""bfloat16 products on Intel AMX tiles for JAX on CPU (`amx_matmul.cc`, an XLA FFI custom call):
XLA:CPU's bf16 products are slow at decode shapes, in the weight-gradient form and for the LM
head (figures in docs/benchmarks.md). Used through `ledex_jax/ops` only: decode products with
weights packed once (`ops.dense.DecodeLayout`), training products packed per call (`dense`).

    packed = pack(w)                    # [K, N] bf16 weight, once
    y = matmul(x, packed, n=N)          # x [M, K] bf16 -> [M, N] float32
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ledex_jax.kernels.build import require

TARGET, PACK_TARGET = "ledex_amx_matmul", "ledex_amx_pack"
K_BLOCK, N_BLOCK, N_CHUNK = 32, 16, 64


def packable(k: int) -> bool:
    """The kernel contracts whole 32-element blocks."""
    return k % K_BLOCK == 0


def pack(w, transposed: bool = False, reference: bool = False) -> jax.Array:
    """[K, N] weight -> bfloat16 [Np/16, K/32, 16, 32] AMX B tiles (Np = N rounded up to 64).
    transposed: w is given as w^T [N, K] (read in place by the kernel: no transposed copy).
    reference: XLA's reshape/transpose instead of the packing kernel (same tiles, slower)."""
    n, k = w.shape if transposed else w.shape[::-1]
    if not packable(k):
        raise ValueError(f"amx.pack: contracted size {k} is not a multiple of {K_BLOCK}; use XLA's product")
    n_pad = -(-n // N_CHUNK) * N_CHUNK
    shape = (n_pad // N_BLOCK, k // K_BLOCK, N_BLOCK, 2 * N_BLOCK)
    if not reference:
        require("amx_matmul", "amx.pack")
        return jax.ffi.ffi_call(PACK_TARGET, jax.ShapeDtypeStruct(shape, jnp.bfloat16))(
            w.astype(jnp.bfloat16), transposed=transposed)
    w = jnp.pad((w.T if transposed else w).astype(jnp.bfloat16), ((0, 0), (0, n_pad - n)))
    w = w.reshape(k // K_BLOCK, N_BLOCK, 2, n_pad // N_BLOCK, N_BLOCK)  # [kb, r, e, nb, c]
    return w.transpose(3, 0, 1, 4, 2).reshape(shape)


def matmul(x, packed, n: int, out_dtype=jnp.float32) -> jax.Array:
    """x [M, K] bfloat16 @ the packed [K, N] weight -> [M, N] in out_dtype (float32 accumulation)."""
    if x.ndim != 2 or x.dtype != jnp.bfloat16:
        raise ValueError(f"amx.matmul: x must be a 2-D bfloat16 array, got {x.dtype}{list(x.shape)}")
    if packed.shape[1] * K_BLOCK != x.shape[1] or not 0 <= packed.shape[0] * N_BLOCK - n < N_CHUNK:
        raise ValueError(f"amx.matmul: x {list(x.shape)} and n={n} do not match packed weight "
                         f"{list(packed.shape)}")
    require("amx_matmul", "amx.matmul")
    out = jax.ShapeDtypeStruct((x.shape[0], n), np.dtype(out_dtype))
    return jax.ffi.ffi_call(TARGET, out)(x, packed)


def _pad_rows(x, multiple: int):
    return jnp.pad(x, ((0, -x.shape[0] % multiple), (0, 0)))


def weight_grad(a, b):
    """a^T b: [tokens, in] x [tokens, out] bfloat16 -> float32 [in, out] (a weight gradient).
    Zero tokens pad the contraction to whole blocks."""
    a, b = _pad_rows(a, K_BLOCK), _pad_rows(b, K_BLOCK)
    return matmul(a.T, pack(b), b.shape[1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dense(x, w, out_dtype=jnp.float32):
    """x [M, K] @ w [K, N], bfloat16 -> out_dtype (float32 accumulation), differentiable: the
    weight is packed on every call (one pass over it), so it suits weights that change
    (training). Backward products take the cotangent in bfloat16 (see `ops.dense.lowp_einsum`)."""
    return matmul(_pad_cols(x), pack(_pad_rows(w, K_BLOCK)), w.shape[1], out_dtype)


def _pad_cols(x):
    return jnp.pad(x, ((0, 0), (0, -x.shape[1] % K_BLOCK)))


def _dense_fwd(x, w, out_dtype):
    return dense(x, w, out_dtype), (x, w)


def _dense_bwd(out_dtype, residuals, ct):
    return dense_grads(*residuals, ct)


def dense_grads(x, w, ct):
    """(dx, dw) of `dense` for the output cotangent ct [M, N], taken in bfloat16."""
    ct = ct.astype(jnp.bfloat16)
    # dx = ct @ w^T: the B operand w^T [out, in] is w itself read transposed, out padded to whole blocks.
    w_padded = jnp.pad(w, ((0, 0), (0, -w.shape[1] % K_BLOCK)))
    dx = matmul(_pad_cols(ct), pack(w_padded, transposed=True), w.shape[0], x.dtype)
    return dx, weight_grad(x, ct).astype(w.dtype)


dense.defvjp(_dense_fwd, _dense_bwd)
