"""Llama family (Llama-2, CodeLlama, DeepSeek-Coder, SmolLM2): RMSNorm, RoPE, GQA, SwiGLU.

Parameter names follow Hugging Face (`q_proj`, `gate_proj`, ...) with the layer index stacked as
the leading `layers` axis, so checkpoint conversion is reshapes and transposes only.
"""
from __future__ import annotations

import jax
from flax import nnx

from ledex_jax import ops as O
from ledex_jax.models.config import ModelConfig
from ledex_jax.models.decoder import DecoderLM, StackedLayers, constrain_hidden, linear, self_attention
from ledex_jax.models.embedding import embedding_lookup
from ledex_jax.models.norms import rms_norm
from ledex_jax.models.params import param
from ledex_jax.models.rope import apply_rope, rope_tables
from ledex_jax.sharding import constrain


class LlamaLayers(StackedLayers):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        n, e, f = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
        h, kv, d, pd = cfg.num_heads, cfg.num_kv_heads, cfg.dim_per_head, cfg.jnp_param_dtype
        p = lambda shape, axes, init="normal": param(rngs, (n, *shape), ("layers", *axes), pd, init)
        self.input_layernorm = p((e,), ("norm",), "ones")
        self.q_proj = p((e, h, d), ("embed", "heads", "head_dim"))
        self.k_proj = p((e, kv, d), ("embed", "kv_heads", "head_dim"))
        self.v_proj = p((e, kv, d), ("embed", "kv_heads", "head_dim"))
        self.o_proj = p((h, d, e), ("heads", "head_dim", "embed"))
        if cfg.attention_bias:
            self.q_bias = p((h, d), ("heads", "head_dim"), "zeros")
            self.k_bias = p((kv, d), ("kv_heads", "head_dim"), "zeros")
            self.v_bias = p((kv, d), ("kv_heads", "head_dim"), "zeros")
            self.o_bias = p((e,), ("norm",), "zeros")
        self.post_attention_layernorm = p((e,), ("norm",), "ones")
        self.gate_proj = p((e, f), ("embed", "mlp"))
        self.up_proj = p((e, f), ("embed", "mlp"))
        self.down_proj = p((f, e), ("mlp", "embed"))
        if cfg.mlp_bias:
            self.gate_bias = p((f,), ("mlp",), "zeros")
            self.up_bias = p((f,), ("mlp",), "zeros")
            self.down_bias = p((e,), ("norm",), "zeros")


class Llama(DecoderLM):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        pd = cfg.jnp_param_dtype
        self.embed_tokens = param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), pd)
        self.layers = LlamaLayers(cfg, rngs)
        self.norm = param(rngs, (cfg.hidden_size,), ("norm",), pd, "ones")
        if not cfg.tie_word_embeddings:
            self.lm_head = param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), pd)

    def embed(self, input_ids, positions, dtype):
        return embedding_lookup(self.embed_tokens[...], input_ids, dtype)

    def make_block(self, positions, mask: O.AttentionMask, ops: O.Ops):
        cfg = self.config
        cos, sin = rope_tables(positions, cfg.dim_per_head, cfg.rope_theta, cfg.rope_scaling_factor,
                               cfg.max_position_embeddings)
        rope = lambda x: apply_rope(x, cos, sin)

        def block(h, p, kv):
            x = rms_norm(h, p["input_layernorm"], cfg.norm_eps)
            attn, kv = self_attention(ops, cfg, x, p, mask, kv, rope)
            h = constrain_hidden(h + attn)
            x = rms_norm(h, p["post_attention_layernorm"], cfg.norm_eps)
            gate = linear(ops, "bte,ef->btf", x, p, "gate_proj", "gate_bias")
            act = jax.nn.silu(gate) * linear(ops, "bte,ef->btf", x, p, "up_proj", "up_bias")
            act = constrain(act, ("batch", "length", "act_mlp"))
            return constrain_hidden(h + linear(ops, "btf,fe->bte", act, p, "down_proj", "down_bias")), kv

        return block

    def final_norm(self, h):
        return rms_norm(h, self.norm[...].astype(h.dtype), self.config.norm_eps)

    def unembedding(self):
        return self.embed_tokens[...].T if self.config.tie_word_embeddings else self.lm_head[...]
