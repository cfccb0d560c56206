"""The compiled part of sampling: prefill a left-padded batch into a fixed-size KV cache, then a
`lax.while_loop` of single-token decode steps that runs until a step limit or until every row has
finished. Pure functions of (graphdef, params, arrays); `Sampler` jits them once per shape.

Cache layout: slots [0, P) hold the left-padded prompt, slot P + i holds generated token i, so
every row writes the same slot each step (the model's cache contract). The loop stops at a
*traced* `stop_at`, so the host can run it in chunks (for stop strings) without recompiling.

Two decode bodies with identical results:
- scanned: `model.forward` with the stacked [L, ...] cache (compile time independent of depth;
  right for TPU/GPU, where XLA fuses the per-layer dynamic slices).
- unrolled (`weights` given): a Python loop over layers with per-layer weights and per-layer
  cache buffers. XLA:CPU copies every dynamic slice of a scanned weight or cache each step and
  rebuilds the stacked cache; unrolled, weights are read in place and each step writes one slot.
  Its projection weights are re-laid out once by `split_layers`: [out, in] (`L.Transposed`), or
  packed for the CPU kernels (`kernels/amx.py` for bfloat16, `kernels/f32.py` for float32; LM
  head included); the prompt then goes through the same body, so prefill uses them too.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ledex_jax.kernels import amx
from ledex_jax.kernels.packed import PackedWeight
from ledex_jax.models import layers as L
from ledex_jax.sampling.processors import Mode, choose, raw_logprob, step_keys
from ledex_jax.sharding import constrain

CACHE_AXES = ("batch", "act_kv_heads", "cache_length", None)


class DecodeState(NamedTuple):
    """Everything the decode loop carries; donated between chunks so the cache is reused in place."""
    cache_k: jax.Array | tuple  # [L, B, Hkv, S, D] (scanned) or L arrays [B, Hkv, S, D] (unrolled)
    cache_v: jax.Array | tuple
    tokens: jax.Array           # [B, M] int32, pad after a row finishes
    logprobs: jax.Array         # [B, M] f32, under the raw model (temperature 1); 0 after the end
    sample_logprobs: jax.Array  # [B, M] f32, under the sampling distribution; 0 after the end
    finished: jax.Array         # [B] bool
    lengths: jax.Array          # [B] int32, generated tokens including a final EOS
    step: jax.Array             # scalar int32: tokens generated so far (same for all rows)
    prompt_mask: jax.Array      # [B, P] int32, 1 = real prompt token
    keys: jax.Array             # [B, 2] uint32 per-row key data


class Knobs(NamedTuple):
    """Traced sampling settings: changing them reuses the compiled program."""
    temperature: jax.Array  # scalar f32
    top_p: jax.Array        # scalar f32
    eos_ids: jax.Array      # [E] int32, padded with -1
    pad_id: jax.Array       # scalar int32


# Leading input axes of each projection weight, for its decode layout.
_CONTRACTED = {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 2, "gate_proj": 1, "up_proj": 1,
               "down_proj": 1, "c_fc": 1, "c_proj": 1}


class DecodeWeights(NamedTuple):
    """`split_layers`' result: per-layer weight dicts and, with the CPU kernels, the packed LM head."""
    layers: tuple
    lm_head: PackedWeight | None


def split_layers(model, use_kernels: bool = False) -> DecodeWeights:
    """Per-layer weights (in the compute dtype) for the unrolled body, each projection in its
    decode layout: packed for the CPU kernels when `use_kernels` (AMX for bfloat16, AVX-512 for
    float32; where the input size allows), else the output-first layout XLA:CPU multiplies
    fastest (`L.Transposed`)."""
    dtype = jnp.dtype(model.config.jnp_dtype)
    kind = {jnp.dtype(jnp.bfloat16): "amx", jnp.dtype(jnp.float32): "f32"}.get(dtype) if use_kernels else None
    if use_kernels and kind is None:
        raise ValueError(f"split_layers: the CPU kernels compute in bfloat16 or float32, the model in {dtype}")
    stacked = model.layers.arrays(dtype)
    min_rows = L.cpu_min_rows(dtype)

    def packs(w, contracted):
        return kind == "f32" or (kind == "amx" and amx.packable(math.prod(w.shape[:contracted])))

    def relaid(w, contracted):
        if packs(w, contracted):
            return PackedWeight.of(w, contracted, kind)
        return L.Transposed.of(w, contracted, min_rows)

    def layer(i):
        p = {name: x[i] for name, x in stacked.items()}
        for name, contracted in _CONTRACTED.items():
            if name in p:
                p[name] = relaid(p[name], contracted)
        return p

    head = model.unembedding().astype(dtype)  # [E, V]
    lm_head = PackedWeight.of(head, 1, kind) if packs(head, 1) else None
    return DecodeWeights(tuple(layer(i) for i in range(model.config.num_layers)), lm_head)


def _lm_logits(model, hidden, weights: DecodeWeights | None = None):
    """f32 logits for one position [B, E] -> [B, V]; the model's full-length logits are never
    used, so XLA drops them (prefill would otherwise build a [B, P, V] tensor)."""
    if weights is not None and weights.lm_head is not None:
        return weights.lm_head.product(hidden)
    w = model.unembedding().astype(hidden.dtype)  # [E, V]
    return L.product_nt(hidden, w.T, L.cpu_min_rows(hidden.dtype))


def _record(state: DecodeState, logits, knobs: Knobs, mode: Mode) -> DecodeState:
    """Chooses token `state.step` for every row and writes it (pad for finished rows)."""
    keys = step_keys(state.keys, state.step)
    tokens, sample_lp = choose(logits, keys, mode, knobs.temperature, knobs.top_p)
    live = ~state.finished
    tokens = jnp.where(live, tokens, knobs.pad_id)
    if mode.greedy or mode.top_k or mode.use_top_p:
        raw_lp = raw_logprob(logits, tokens)
    else:  # temperature 1 samples from the raw distribution: skip a second pass over the vocabulary
        raw_lp = jax.lax.cond(knobs.temperature == 1.0, lambda: sample_lp, lambda: raw_logprob(logits, tokens))
    raw_lp = jnp.where(live, raw_lp, 0.0)
    sample_lp = jnp.where(live, sample_lp, 0.0)
    put = lambda buf, col: constrain(
        jax.lax.dynamic_update_slice_in_dim(buf, col[:, None].astype(buf.dtype), state.step, axis=1),
        ("batch", None))
    hit_eos = jnp.any(tokens[:, None] == knobs.eos_ids[None, :], axis=-1)
    return state._replace(
        tokens=put(state.tokens, tokens), logprobs=put(state.logprobs, raw_lp),
        sample_logprobs=put(state.sample_logprobs, sample_lp),
        finished=state.finished | (live & hit_eos), lengths=state.lengths + live.astype(jnp.int32),
        step=state.step + 1)


def _slot_mask(state: DecodeState):
    b, m = state.tokens.shape
    return jnp.concatenate([state.prompt_mask, jnp.ones((b, m), state.prompt_mask.dtype)], axis=1)


def _constrain_cache(k, v):
    if isinstance(k, tuple):
        return tuple(constrain(x, CACHE_AXES) for x in k), tuple(constrain(x, CACHE_AXES) for x in v)
    return constrain(k, ("layers",) + CACHE_AXES), constrain(v, ("layers",) + CACHE_AXES)


def prefill(graphdef, params, weights: DecodeWeights | None, input_ids, prompt_mask, keys, active,
            knobs: Knobs, *, mode: Mode, max_new: int, cache_dtype=None) -> DecodeState:
    """Runs the prompt [B, P] through the model (unrolled when `weights` are given) and samples the
    first token of every active row."""
    model = nnx.merge(graphdef, params)
    b, p = input_ids.shape
    cache = model.init_cache(b, p + max_new, cache_dtype)
    zeros = jnp.zeros((b, max_new), jnp.float32)
    state = DecodeState(None, None, jnp.full((b, max_new), knobs.pad_id, jnp.int32), zeros, zeros, ~active,
                        jnp.zeros((b,), jnp.int32), jnp.zeros((), jnp.int32), prompt_mask, keys)
    slot_mask = _slot_mask(state)
    if weights is None:
        out = model.forward(input_ids, slot_mask, cache=L.KVCache(*_constrain_cache(cache.k, cache.v), cache.end))
        h, k, v = out.hidden, out.cache.k, out.cache.v
    else:
        k, v = _constrain_cache(tuple(cache.k), tuple(cache.v))  # per-layer buffers
        positions = L.default_positions(slot_mask)[:, :p]
        h, k, v = _unrolled_forward(model, weights, k, v, input_ids, positions, slot_mask, 0)
    k, v = _constrain_cache(k, v)
    state = state._replace(cache_k=k, cache_v=v)
    return _record(state, _lm_logits(model, h[:, -1], weights), knobs, mode)


def _unrolled_forward(model, weights: DecodeWeights, k, v, tokens, positions, slot_mask, end):
    """DecoderLM.forward for new tokens with per-layer weights and caches (see module docstring)."""
    h = L.constrain_hidden(model.embed(tokens, positions, model.config.jnp_dtype))
    block = model.make_block(positions)
    visible = L.attention_mask_bias(tokens.shape[1], slot_mask, q_offset=end)
    new_k, new_v = [], []
    for p, k_i, v_i in zip(weights.layers, k, v):
        h, (k_i, v_i) = block(h, p, (k_i, v_i), visible, end)
        new_k.append(k_i)
        new_v.append(v_i)
    return model.final_norm(h), tuple(new_k), tuple(new_v)


def decode(graphdef, params, weights: DecodeWeights | None, state: DecodeState, stop_at, knobs: Knobs, *,
           mode: Mode) -> DecodeState:
    """Generates tokens until `state.step == stop_at` or every row has finished.

    `weights` (from `split_layers`) selects the unrolled body; None selects the scanned one.
    """
    model = nnx.merge(graphdef, params)
    prompt_len = state.prompt_mask.shape[1]
    slot_mask = _slot_mask(state)
    prompt_lens = jnp.sum(state.prompt_mask, axis=1)
    stop_at = jnp.minimum(stop_at, state.tokens.shape[1])

    def cond(s: DecodeState):
        return (s.step < stop_at) & ~jnp.all(s.finished)

    def body(s: DecodeState):
        last = jax.lax.dynamic_slice_in_dim(s.tokens, s.step - 1, 1, axis=1)
        positions = (prompt_lens + s.step - 1)[:, None]
        end = prompt_len + s.step - 1
        if weights is None:
            out = model.forward(last, slot_mask, positions=positions,
                                cache=L.KVCache(s.cache_k, s.cache_v, end))
            h, k, v = out.hidden, out.cache.k, out.cache.v
        else:
            h, k, v = _unrolled_forward(model, weights, s.cache_k, s.cache_v, last, positions, slot_mask, end)
        k, v = _constrain_cache(k, v)
        s = s._replace(cache_k=k, cache_v=v)
        return _record(s, _lm_logits(model, h[:, 0], weights), knobs, mode)

    return jax.lax.while_loop(cond, body, state)
