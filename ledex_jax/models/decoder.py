"""The decoder-only forward pass shared by every family: masks, positions, KV cache, scanned
layers and the LM head. A family supplies its embedding, its layer body and its final norm."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ledex_jax.kernels import attention as decode_attention
from ledex_jax.kernels import flash_attention, lm_head_loss
from ledex_jax.models import layers as L
from ledex_jax.models.config import ModelConfig
from ledex_jax.sharding import constrain


class DecoderLM(nnx.Module):
    config: ModelConfig

    # --- supplied by each family ---------------------------------------------------------
    def embed(self, input_ids, positions, dtype):
        raise NotImplementedError

    def make_block(self, positions):
        """Returns block(h, layer_arrays, kv, visible, cache_end) -> (h, kv)."""
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

    def init_cache(self, batch: int, slots: int, dtype=None) -> L.KVCache:
        c = self.config
        return L.KVCache.zeros(c.num_layers, batch, slots, c.num_kv_heads, c.dim_per_head,
                               dtype or c.jnp_dtype)

    def forward(self, input_ids, attention_mask=None, *, positions=None, segment_ids=None,
                cache: L.KVCache | None = None, logits: bool = True) -> L.ModelOutput:
        """Without a cache, attention_mask is [B,T] (1 = token, left padding allowed). With a cache
        it covers all cache slots [B,S] and the T new tokens go to slots cache.end .. cache.end+T-1.
        logits=False: only the final hidden states (ModelOutput.logits is None)."""
        cfg, dtype = self.config, self.config.jnp_dtype
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = jnp.ones((b, t) if cache is None else (b, cache.k.shape[3]), jnp.int32)
        end = cache.end if cache is not None else 0
        if positions is None:
            positions = L.default_positions(attention_mask)
            if cache is not None:
                positions = jax.lax.dynamic_slice_in_dim(positions, end, t, axis=1)
        visible = L.attention_mask_bias(t, attention_mask, segment_ids, q_offset=end)

        h = L.constrain_hidden(self.embed(input_ids, positions, dtype))
        block = self.make_block(positions)
        h, new_kv = L.scan_layers(lambda h, p, kv: block(h, p, kv, visible, end), h,
                                  self.layers.arrays(None), cache, cfg.remat_policy, dtype, cfg.scan_layers)
        h = self.final_norm(h)
        new_cache = None if cache is None else L.KVCache(*new_kv, cache.end + t)
        if not logits:
            return L.ModelOutput(None, h, new_cache)
        return L.ModelOutput(self._logits(h, self.unembedding().astype(dtype)), h, new_cache)

    def target_log_probs(self, input_ids, targets, attention_mask=None, **kwargs):
        """log p(targets[b, t]) [B, T] float32 (the next-token log-probabilities a loss needs).

        On CPU in bfloat16 the LM head and log-softmax run as one kernel that never stores the
        [B, T, V] float32 logits (`kernels/lm_head_loss.py`); elsewhere `forward` then
        `layers.token_log_probs`. kwargs: as `forward`."""
        hidden = self.forward(input_ids, attention_mask, logits=False, **kwargs).hidden
        w = self.unembedding().astype(self.config.jnp_dtype)
        if lm_head_loss.applies(hidden, w):
            b, t, e = hidden.shape
            return -lm_head_loss.token_nll(hidden.reshape(b * t, e), w, targets.reshape(-1)).reshape(b, t)
        return L.token_log_probs(self._logits(hidden, w), targets)

    def _logits(self, h, w):
        return constrain(L.logits_matmul(h, w), ("batch", "length", "act_vocab"))


class StackedLayers(nnx.Module):
    """Base for a family's stacked per-layer weights (leading `layers` axis on every Param)."""

    def arrays(self, dtype) -> dict[str, jax.Array]:
        """The stacked weights, cast to `dtype` (None: as stored)."""
        return L.values({k: v for k, v in vars(self).items() if isinstance(v, nnx.Param)}, dtype)


def project_qkv(x, p, prefix=""):
    """q, k, v projections [B,T,heads,head_dim] with optional biases."""
    out = []
    for name in ("q", "k", "v"):
        y = L.matmul("bte,ehd->bthd", x, p[f"{name}_proj"])
        out.append(y + p[f"{name}_bias"] if f"{name}_bias" in p else y)
    q, k, v = out
    return constrain(q, ("batch", "length", "act_heads", None)), k, v


def attend(cfg: ModelConfig, q, k, v, kv, visible, cache_end):
    """Writes k, v [B,T,Hkv,D] into the layer's cache (if any) and attends; returns ([B,T,H,D], kv)."""
    if L.fused_attention_applies(q, kv):
        return L.fused_attention(q, k, v, visible, cfg.dim_per_head ** -0.5), kv
    if kv is None and flash_attention.applies(q, k, v):  # bf16 training/scoring, CPU kernel
        return flash_attention.flash_attention(q, k, v, visible[:, 0, 0], cfg.dim_per_head ** -0.5), kv
    k, v = L.heads_first(k), L.heads_first(v)
    if kv is not None:
        kv = L.update_cache(*kv, k, v, cache_end)
        k, v = kv
        if decode_attention.applies(q, k, v):  # one token over the cache, CPU kernel
            return decode_attention.decode_attention(q, k, v, visible, cfg.dim_per_head ** -0.5), kv
    return L.attention_for(cfg.remat_policy)(q, k, v, visible, cfg.dim_per_head ** -0.5), kv


def project_out(attn, p):
    # One 2-D product over (heads x head_dim) in storage order: a two-axis einsum contracts them
    # as (head_dim, heads), and XLA:CPU then transposes o_proj and the activations on every call.
    if isinstance(p["o_proj"], L.DECODE_LAYOUTS):
        y = p["o_proj"].apply(attn)
    else:
        b, t, h, d = attn.shape
        w = p["o_proj"]
        y = L.matmul("ni,ie->ne", attn.reshape(b * t, h * d), w.reshape(h * d, w.shape[-1])).reshape(b, t, -1)
    return y + p["o_bias"] if "o_bias" in p else y
