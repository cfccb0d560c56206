"""One config dataclass for every supported backbone, with Hugging Face semantics.

Field names follow the paper/HF meaning rather than one family's spelling, so presets,
checkpoint import and the trainers share one vocabulary.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from ledex_jax.ops.choice import KERNEL_CHOICES

SUPPORTED_MODEL_TYPES = ("llama", "gpt_bigcode")
# "attention": keep every layer activation but the attention scores/probabilities, which the backward
# pass recomputes from q and k (saves B*H*T*T floats per layer; a fused flash kernel does the same).
REMAT_POLICIES = ("none", "attention", "full", "dots", "dots_with_no_batch_dims")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None  # None: hidden_size // num_heads
    max_position_embeddings: int = 4096
    norm_eps: float = 1e-5
    # Llama family
    rope_theta: float = 10000.0
    rope_scaling_factor: float | None = None  # HF rope_scaling {"type": "linear", "factor": f}
    attention_bias: bool = False  # q/k/v/o biases (HF LlamaConfig.attention_bias)
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    activation: str = "silu"
    # special tokens (carried into generation_config on export)
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    # numerics and memory
    param_dtype: str = "float32"
    dtype: str = "float32"  # compute dtype
    remat_policy: str = "none"
    # False: the layer scan fully unrolled (compile time grows with depth; XLA:CPU then writes each
    # layer's bf16 residuals in place instead of converting the whole stack per layer).
    scan_layers: bool = True
    # Which implementation each op uses: auto | xla | pallas | cudnn | cpu (ledex_jax/ops/choice.py).
    kernels: str = "auto"

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type={self.model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; set head_dim")
        for field in ("param_dtype", "dtype"):
            if getattr(self, field) not in _DTYPES:
                raise ValueError(f"{field}={getattr(self, field)!r}; choose one of {sorted(_DTYPES)}")
        if self.kernels not in KERNEL_CHOICES:
            raise ValueError(f"kernels={self.kernels!r}; choose one of {KERNEL_CHOICES} (table: ledex_jax/ops/choice.py)")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy={self.remat_policy!r}; choose one of {REMAT_POLICIES}")

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def jnp_dtype(self):
        return _DTYPES[self.dtype]

    @property
    def jnp_param_dtype(self):
        return _DTYPES[self.param_dtype]

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
