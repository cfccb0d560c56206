"""GPTBigCode family (StarCoder, StarCoderBase, SantaCoder): multi-query (or multi-head)
attention, learned absolute positions, LayerNorm with bias, tanh-GELU MLP, tied LM head.

HF fuses q/k/v into `c_attn`; we keep them as separate `q_proj`/`k_proj`/`v_proj` and split or
fuse on import/export (a reshape, no arithmetic).
"""
from __future__ import annotations

import jax
from flax import nnx

from ledex_jax import ops as O
from ledex_jax.models.config import ModelConfig
from ledex_jax.models.decoder import DecoderLM, StackedLayers, constrain_hidden, linear, self_attention
from ledex_jax.models.embedding import embedding_lookup
from ledex_jax.models.norms import layer_norm
from ledex_jax.models.params import param
from ledex_jax.sharding import constrain


class GPTBigCodeLayers(StackedLayers):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        n, e, f = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
        h, kv, d, pd = cfg.num_heads, cfg.num_kv_heads, cfg.dim_per_head, cfg.jnp_param_dtype
        p = lambda shape, axes, init="normal": param(rngs, (n, *shape), ("layers", *axes), pd, init)
        self.ln_1_weight = p((e,), ("norm",), "ones")
        self.ln_1_bias = p((e,), ("norm",), "zeros")
        self.q_proj = p((e, h, d), ("embed", "heads", "head_dim"))
        self.q_bias = p((h, d), ("heads", "head_dim"), "zeros")
        self.k_proj = p((e, kv, d), ("embed", "kv_heads", "head_dim"))
        self.k_bias = p((kv, d), ("kv_heads", "head_dim"), "zeros")
        self.v_proj = p((e, kv, d), ("embed", "kv_heads", "head_dim"))
        self.v_bias = p((kv, d), ("kv_heads", "head_dim"), "zeros")
        self.o_proj = p((h, d, e), ("heads", "head_dim", "embed"))
        self.o_bias = p((e,), ("norm",), "zeros")
        self.ln_2_weight = p((e,), ("norm",), "ones")
        self.ln_2_bias = p((e,), ("norm",), "zeros")
        self.c_fc = p((e, f), ("embed", "mlp"))
        self.c_fc_bias = p((f,), ("mlp",), "zeros")
        self.c_proj = p((f, e), ("mlp", "embed"))
        self.c_proj_bias = p((e,), ("norm",), "zeros")


class GPTBigCode(DecoderLM):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if cfg.num_kv_heads not in (1, cfg.num_heads):
            raise ValueError("gpt_bigcode supports multi-query (num_kv_heads=1) or multi-head attention "
                             f"(num_kv_heads=num_heads={cfg.num_heads}); got num_kv_heads={cfg.num_kv_heads}")
        self.config = cfg
        pd = cfg.jnp_param_dtype
        self.wte = param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), pd)
        self.wpe = param(rngs, (cfg.max_position_embeddings, cfg.hidden_size), ("positions", "embed"), pd)
        self.layers = GPTBigCodeLayers(cfg, rngs)
        self.ln_f_weight = param(rngs, (cfg.hidden_size,), ("norm",), pd, "ones")
        self.ln_f_bias = param(rngs, (cfg.hidden_size,), ("norm",), pd, "zeros")

    def embed(self, input_ids, positions, dtype):
        return (embedding_lookup(self.wte[...], input_ids, dtype)
                + embedding_lookup(self.wpe[...], positions, dtype, rows_axis="positions"))

    def make_block(self, positions, mask: O.AttentionMask, ops: O.Ops):
        cfg = self.config

        def block(h, p, kv):
            x = layer_norm(h, p["ln_1_weight"], p["ln_1_bias"], cfg.norm_eps)
            attn, kv = self_attention(ops, cfg, x, p, mask, kv)
            h = constrain_hidden(h + attn)
            x = layer_norm(h, p["ln_2_weight"], p["ln_2_bias"], cfg.norm_eps)
            act = jax.nn.gelu(linear(ops, "bte,ef->btf", x, p, "c_fc", "c_fc_bias"), approximate=True)
            act = constrain(act, ("batch", "length", "act_mlp"))
            return constrain_hidden(h + linear(ops, "btf,fe->bte", act, p, "c_proj", "c_proj_bias")), kv

        return block

    def final_norm(self, h):
        return layer_norm(h, self.ln_f_weight[...].astype(h.dtype), self.ln_f_bias[...].astype(h.dtype),
                            self.config.norm_eps)

    def unembedding(self):
        return self.wte[...].T
