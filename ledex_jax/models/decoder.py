"""The decoder-only forward pass shared by every family: masks, positions, KV cache, the layer
stack and the LM head. A family supplies its embedding, its layer body and its final norm; every
product and attention goes through `ledex_jax.ops`, which picks the implementation."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ledex_jax import ops as O
from ledex_jax.models.config import ModelConfig
from ledex_jax.models.kv_cache import KVCache, default_positions
from ledex_jax.models.layer_stack import run_layers
from ledex_jax.models.params import values
from ledex_jax.sharding import constrain


class ModelOutput(NamedTuple):
    logits: jax.Array | None  # [batch, length, vocab], float32 (None: `forward(..., logits=False)`)
    hidden: jax.Array  # [batch, length, embed], final-norm hidden states (value heads read these)
    cache: KVCache | None


class DecodeWeights(NamedTuple):
    """Per-layer weights in decode layouts (`sampling/loop.py:decode_weights`), for `forward(weights=...)`."""
    layers: tuple     # one dict of arrays / `ops.DecodeLayout`s per layer
    lm_head: object   # [embed, vocab] head or its `ops.DecodeLayout`


class DecoderLM(nnx.Module):
    config: ModelConfig

    # --- supplied by each family ---------------------------------------------------------
    def embed(self, input_ids, positions, dtype):
        raise NotImplementedError

    def make_block(self, positions, mask: O.AttentionMask, ops: O.Ops):
        """Returns block(h, layer_params, kv) -> (h, kv)."""
        raise NotImplementedError

    def final_norm(self, h):
        raise NotImplementedError

    def unembedding(self) -> jax.Array:
        """[embed, vocab] output projection."""
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------
    def __call__(self, input_ids, attention_mask=None, **kwargs):
        """Logits [batch, length, vocab] in float32."""
        return self.forward(input_ids, attention_mask, **kwargs).logits

    def ops(self) -> O.Ops:
        """The implementations `config.kernels` selects for the program being traced."""
        return O.select(self.config.kernels, self.config.dtype)

    def init_cache(self, batch: int, slots: int, dtype=None, per_layer: bool = False) -> KVCache:
        c = self.config
        return KVCache.zeros(c.num_layers, batch, slots, c.num_kv_heads, c.dim_per_head, dtype or c.jnp_dtype,
                             per_layer)

    def forward(self, input_ids, attention_mask=None, *, positions=None, segment_ids=None,
                cache: KVCache | None = None, logits: bool = True, ops: O.Ops | None = None,
                weights: DecodeWeights | None = None) -> ModelOutput:
        """Without a cache, attention_mask is [B,T] (1 = token, left padding allowed). With a cache
        it covers all cache slots [B,S] and the T new tokens go to slots cache.end .. cache.end+T-1.
        logits=False: only the final hidden states (ModelOutput.logits is None).
        ops: the implementations (default `self.ops()`); weights: per-layer decode weights."""
        cfg, dtype = self.config, self.config.jnp_dtype
        ops = ops or self.ops()
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = jnp.ones((b, t) if cache is None else (b, _slots(cache)), jnp.int32)
        end = cache.end if cache is not None else 0
        if positions is None:
            positions = default_positions(attention_mask)
            if cache is not None:
                positions = jax.lax.dynamic_slice_in_dim(positions, end, t, axis=1)
        mask = O.AttentionMask.build(t, attention_mask, segment_ids, q_offset=end)

        h = constrain_hidden(self.embed(input_ids, positions, dtype))
        block = self.make_block(positions, mask, ops)
        layer_params = weights.layers if weights is not None else self.layers.arrays(None)
        kv = None if cache is None else (cache.k, cache.v)
        h, new_kv = run_layers(block, h, layer_params, kv, cfg.remat_policy, dtype, cfg.scan_layers)
        h = self.final_norm(h)
        new_cache = None if cache is None else KVCache(*new_kv, end + t)
        if not logits:
            return ModelOutput(None, h, new_cache)
        return ModelOutput(self.logits(h, ops, weights), h, new_cache)

    def logits(self, hidden, ops: O.Ops | None = None, weights: DecodeWeights | None = None):
        """float32 logits [..., vocab] from final hidden states [..., embed]."""
        head = weights.lm_head if weights is not None else self.unembedding().astype(self.config.jnp_dtype)
        out = O.logits(ops or self.ops(), hidden, head)
        return constrain(out, ("batch", "length", "act_vocab")) if out.ndim == 3 else out

    def target_log_probs(self, input_ids, targets, attention_mask=None, **kwargs):
        """log p(targets[b, t]) [B, T] float32 (the next-token log-probabilities a loss needs),
        without materialising the logits where the implementation allows. kwargs: as `forward`."""
        ops = kwargs.pop("ops", None) or self.ops()
        hidden = self.forward(input_ids, attention_mask, logits=False, ops=ops, **kwargs).hidden
        return O.target_log_probs(ops, hidden, self.unembedding().astype(self.config.jnp_dtype), targets)


def _slots(cache: KVCache) -> int:
    return cache.k[0].shape[2] if isinstance(cache.k, tuple) else cache.k.shape[3]


class StackedLayers(nnx.Module):
    """Base for a family's stacked per-layer weights (leading `layers` axis on every Param)."""

    def arrays(self, dtype) -> dict[str, jax.Array]:
        """The stacked weights, cast to `dtype` (None: as stored)."""
        return values({k: v for k, v in vars(self).items() if isinstance(v, nnx.Param)}, dtype)


def constrain_hidden(h):
    return constrain(h, ("batch", "length", "act_embed"))


def linear(ops: O.Ops, spec: str, x, p, weight: str, bias: str):
    """x times p[weight], plus p[bias] when the layer has one."""
    y = O.matmul(ops, spec, x, p[weight])
    return y + p[bias] if bias in p else y


def self_attention(ops: O.Ops, cfg: ModelConfig, x, p, mask: O.AttentionMask, kv, rope=None):
    """q/k/v projections (optionally rotated by `rope(x)`), attention, output projection; returns
    ([B, T, embed], the layer's updated cache)."""
    q = constrain(linear(ops, "bte,ehd->bthd", x, p, "q_proj", "q_bias"), ("batch", "length", "act_heads", None))
    k = linear(ops, "bte,ehd->bthd", x, p, "k_proj", "k_bias")
    v = linear(ops, "bte,ehd->bthd", x, p, "v_proj", "v_bias")
    if rope is not None:
        q, k = rope(q), rope(k)
    attn, kv = O.attend(ops, q, k, v, mask, cfg.dim_per_head ** -0.5, kv,
                           recompute=cfg.remat_policy == "attention")
    return linear(ops, "bthd,hde->bte", attn, p, "o_proj", "o_bias"), kv
