"""The one seam where an implementation is chosen (XLA, Pallas on TPU, cuDNN on GPU, the CPU
kernels), by one config key (`ModelConfig.kernels`, table in `choice.py`). Models call these ops
and never import `ledex_jax.kernels`.

    ops = select(config.kernels, config.dtype)
    y = matmul(ops, "bte,ef->btf", x, w)
    out, cache = attend(ops, q, k, v, mask, scale, cache)
"""
from ledex_jax.ops.attention import AttentionMask, attend, dot_attention
from ledex_jax.ops.choice import KERNEL_CHOICES, Ops, select
from ledex_jax.ops.dense import DecodeLayout, decode_layout, matmul
from ledex_jax.ops.log_probs import logits, target_log_probs, token_log_probs

__all__ = ["AttentionMask", "DecodeLayout", "KERNEL_CHOICES", "Ops", "attend", "decode_layout", "dot_attention",
           "logits", "matmul", "select", "target_log_probs", "token_log_probs"]
