"""RMSNorm (Llama) and LayerNorm (GPTBigCode), with Hugging Face's rounding points."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def rms_norm(x, weight, eps):
    """HF LlamaRMSNorm: normalise in float32, cast back, then scale. The scaling runs in float32 on
    the cast-back values and is rounded once: the same bits as HF's product in x's dtype (a
    product of two bf16 values is exact in float32), with a float32 weight-gradient sum."""
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return (weight.astype(jnp.float32) * xf.astype(x.dtype).astype(jnp.float32)).astype(x.dtype)


def layer_norm(x, weight, bias, eps):
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    return (y * weight.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)
