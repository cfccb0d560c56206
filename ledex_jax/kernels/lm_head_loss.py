"""Token losses of the LM head for bfloat16 training on CPU (`lm_head_loss.cc`, XLA FFI custom
calls on Intel AMX tiles): -log p(target) from the final hidden states, without the [N, V]
float32 logits.

XLA:CPU writes the float32 logits, then runs the log-softmax and its gradient in several passes
over them. The kernel keeps each row's running log-sum-exp as the logits leave the tiles; the
backward recomputes them and writes the logits' gradient once, in bf16 (`amx.dense_grads`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ledex_jax.kernels import amx
from ledex_jax.kernels.build import require

FORWARD, BACKWARD = "ledex_lm_head_loss_fwd", "ledex_lm_head_loss_bwd"


def applies(h, w) -> bool:
    """bf16 hidden states and head, an embedding size of whole 32-element blocks."""
    return h.dtype == w.dtype == jnp.bfloat16 and amx.packable(w.shape[0])


@jax.custom_vjp
def token_nll(h, w, targets):
    """-log softmax(h @ w)[target] per row: h [N, E], w [E, V] bfloat16, targets [N] int -> float32 [N].
    A target outside [0, V) contributes the log-sum-exp alone (mask such rows out of the loss)."""
    return _forward(h, amx.pack(w), targets, w.shape[1])[0]


def _forward(h, packed, targets, vocab):
    if h.ndim != 2 or targets.shape != h.shape[:1] or packed.shape[1] * amx.K_BLOCK != h.shape[1]:
        raise ValueError(f"lm_head_loss: h {h.shape}, packed head {packed.shape}, targets {targets.shape}; expected "
                         "h [N, E], the head packed by amx.pack from [E, V], targets [N]")
    require("lm_head_loss", "lm_head_loss")
    rows = jax.ShapeDtypeStruct(h.shape[:1], np.dtype(np.float32))
    return jax.ffi.ffi_call(FORWARD, (rows, rows))(h, packed, targets.astype(jnp.int32), vocab=np.int64(vocab))


def _fwd(h, w, targets):
    packed = amx.pack(w)
    nll, lse = _forward(h, packed, targets, w.shape[1])
    return nll, (h, w, packed, targets, lse)


def _bwd(residuals, ct):
    h, w, packed, targets, lse = residuals
    dlogits = jax.ffi.ffi_call(BACKWARD, jax.ShapeDtypeStruct((h.shape[0], w.shape[1]), jnp.bfloat16))(
        h, packed, targets.astype(jnp.int32), lse, ct.astype(jnp.float32), vocab=np.int64(w.shape[1]))
    dh, dw = amx.dense_grads(h, w, dlogits)
    return dh, dw, None


token_nll.defvjp(_fwd, _bwd)
