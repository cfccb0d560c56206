"""The compiled part of sampling: prefill a left-padded batch into a fixed-size KV cache, then a
`lax.while_loop` of single-token decode steps that runs until a step limit or until every row has
finished. Pure functions of (graphdef, params, arrays); `Sampler` jits them once per shape.

Cache layout: slots [0, P) hold the left-padded prompt, slot P + i holds generated token i, so
every row writes the same slot each step (the model's cache contract). The loop stops at a
*traced* `stop_at`, so the host can run it in chunks (for stop strings) without recompiling.

Two ways through the layers, with identical results, both `model.forward`:
- scanned (`weights` None): the stacked [L, ...] weights and cache (compile time independent of
  depth; right for TPU/GPU, where XLA fuses the per-layer dynamic slices).
- per layer (`weights` from `decode_weights`): per-layer weights in the decode layouts the seam
  chooses (`ops.decode_layout`) and per-layer cache buffers. XLA:CPU copies every dynamic slice
  of a scanned weight or cache each step; per layer, weights are read in place and each step
  writes one slot.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ledex_jax import ops as O
from ledex_jax.models.decoder import DecodeWeights
from ledex_jax.models.kv_cache import KVCache, default_positions
from ledex_jax.sampling.processors import Mode, choose, step_keys
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


def decode_weights(model, ops: O.Ops) -> DecodeWeights:
    """Per-layer weights in the compute dtype, each projection and the LM head in the decode
    layout `ops` chooses (`ops.decode_layout`)."""
    dtype = model.config.jnp_dtype
    stacked = model.layers.arrays(dtype)

    def layer(i):
        p = {name: x[i] for name, x in stacked.items()}
        for name, contracted in _CONTRACTED.items():
            if name in p:
                p[name] = O.decode_layout(ops, p[name], contracted)
        return p

    head = O.decode_layout(ops, model.unembedding().astype(dtype), 1)
    return DecodeWeights(tuple(layer(i) for i in range(model.config.num_layers)), head)


def _record(state: DecodeState, logits, knobs: Knobs, mode: Mode) -> DecodeState:
    """Chooses token `state.step` for every row and writes it (pad for finished rows)."""
    keys = step_keys(state.keys, state.step)
    tokens, sample_lp = choose(logits, keys, mode, knobs.temperature, knobs.top_p)
    live = ~state.finished
    tokens = jnp.where(live, tokens, knobs.pad_id)
    if mode.greedy or mode.top_k or mode.use_top_p:
        raw_lp = O.token_log_probs(logits, tokens)
    else:  # temperature 1 samples from the raw distribution: skip a second pass over the vocabulary
        raw_lp = jax.lax.cond(knobs.temperature == 1.0, lambda: sample_lp, lambda: O.token_log_probs(logits, tokens))
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


def _slot_mask(prompt_mask, max_new: int):
    """[B, P + max_new]: the prompt's real slots, then every generated slot."""
    return jnp.concatenate([prompt_mask, jnp.ones((prompt_mask.shape[0], max_new), prompt_mask.dtype)], axis=1)


def _constrain_cache(k, v):
    if isinstance(k, tuple):
        return tuple(constrain(x, CACHE_AXES) for x in k), tuple(constrain(x, CACHE_AXES) for x in v)
    return constrain(k, ("layers",) + CACHE_AXES), constrain(v, ("layers",) + CACHE_AXES)


def prefill(graphdef, params, weights: DecodeWeights | None, input_ids, prompt_mask, keys, active,
            knobs: Knobs, *, ops: O.Ops, mode: Mode, max_new: int, samples: int = 1, cache_dtype=None) -> DecodeState:
    """Runs the prompts [B, P] into a fresh cache (per layer when `weights` are given), repeats
    each prompt's cache and last logits for its `samples` rows [B * samples] (prefilled once),
    and samples the first token of every active row. keys, active: [B * samples]."""
    model = nnx.merge(graphdef, params)
    b, p = input_ids.shape
    cache = model.init_cache(b, p + max_new, cache_dtype, per_layer=weights is not None)
    prompt_slots = _slot_mask(prompt_mask, max_new)
    out = model.forward(input_ids, prompt_slots, positions=default_positions(prompt_slots)[:, :p],
                        cache=KVCache(*_constrain_cache(cache.k, cache.v), cache.end), logits=False, ops=ops,
                        weights=weights)
    logits = model.logits(out.hidden[:, -1], ops, weights)
    return _first_tokens(out.cache.k, out.cache.v, logits, prompt_mask, keys, active, knobs, mode, max_new, samples)


def prefill_shared(graphdef, params, weights: DecodeWeights | None, prefix_ids, prefix_mask, row_prefix, rest_ids,
                   rest_mask, keys, active, knobs: Knobs, *, ops: O.Ops, mode: Mode, max_new: int, samples: int = 1,
                   cache_dtype=None) -> DecodeState:
    """`prefill` of prompts given as shared prefixes [U, Pp] and own rests [B, Pr] (prompt b is
    prefix `row_prefix[b]` + rest b; `prefix.plan_prefixes`): each prefix is prefilled once,
    its cache copied to the rows that continue it, then the rests attend to it. The cache holds
    [prefix | rest | generated]; positions count real tokens, so the result is the plain
    prefill's up to float rounding."""
    model = nnx.merge(graphdef, params)
    per_layer = weights is not None
    (u, pp), pr = prefix_ids.shape, rest_ids.shape[1]
    cache = model.init_cache(u, pp + pr, cache_dtype, per_layer=per_layer)
    prefix_slots = jnp.concatenate([prefix_mask, jnp.zeros((u, pr), prefix_mask.dtype)], axis=1)
    out = model.forward(prefix_ids, prefix_slots, positions=default_positions(prefix_mask),
                        cache=KVCache(*_constrain_cache(cache.k, cache.v), 0), logits=False, ops=ops, weights=weights)
    k, v = jax.tree.map(lambda x: jnp.take(x, row_prefix, axis=x.ndim - 4), (out.cache.k, out.cache.v))
    prompt_mask = jnp.concatenate([jnp.take(prefix_mask, row_prefix, axis=0), rest_mask], axis=1)
    out = model.forward(rest_ids, prompt_mask, positions=default_positions(prompt_mask)[:, pp:],
                        cache=KVCache(*_constrain_cache(k, v), pp), logits=False, ops=ops, weights=weights)
    logits = model.logits(out.hidden[:, -1], ops, weights)
    grow = lambda x: jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, max_new), (0, 0)])  # room for the generated slots
    k, v = jax.tree.map(grow, (out.cache.k, out.cache.v))
    return _first_tokens(k, v, logits, prompt_mask, keys, active, knobs, mode, max_new, samples)


def _first_tokens(k, v, logits, prompt_mask, keys, active, knobs: Knobs, mode: Mode, max_new: int,
                  samples: int) -> DecodeState:
    """The decode state after a prefill: each prompt's cache and last logits repeated for its
    `samples` rows, and every active row's first token chosen."""
    if samples > 1:
        per_row = lambda x, axis: jnp.repeat(x, samples, axis=axis)
        k, v = jax.tree.map(lambda x: per_row(x, x.ndim - 4), (k, v))  # the batch axis of [(L,) B, Hkv, S, D]
        logits, prompt_mask = per_row(logits, 0), per_row(prompt_mask, 0)
    rows = logits.shape[0]
    zeros = jnp.zeros((rows, max_new), jnp.float32)
    k, v = _constrain_cache(k, v)
    state = DecodeState(k, v, jnp.full((rows, max_new), knobs.pad_id, jnp.int32), zeros, zeros, ~active,
                        jnp.zeros((rows,), jnp.int32), jnp.zeros((), jnp.int32), prompt_mask, keys)
    return _record(state, logits, knobs, mode)


def decode(graphdef, params, weights: DecodeWeights | None, state: DecodeState, stop_at, knobs: Knobs, *,
           ops: O.Ops, mode: Mode) -> DecodeState:
    """Generates tokens until `state.step == stop_at` or every row has finished (per layer when
    `weights` are given, else scanned)."""
    model = nnx.merge(graphdef, params)
    prompt_len = state.prompt_mask.shape[1]
    slot_mask = _slot_mask(state.prompt_mask, state.tokens.shape[1])
    prompt_lens = jnp.sum(state.prompt_mask, axis=1)
    stop_at = jnp.minimum(stop_at, state.tokens.shape[1])

    def cond(s: DecodeState):
        return (s.step < stop_at) & ~jnp.all(s.finished)

    def body(s: DecodeState):
        last = jax.lax.dynamic_slice_in_dim(s.tokens, s.step - 1, 1, axis=1)
        positions = (prompt_lens + s.step - 1)[:, None]
        cache = KVCache(s.cache_k, s.cache_v, prompt_len + s.step - 1)
        out = model.forward(last, slot_mask, positions=positions, cache=cache, logits=False, ops=ops,
                            weights=weights)
        k, v = _constrain_cache(out.cache.k, out.cache.v)
        s = s._replace(cache_k=k, cache_v=v)
        return _record(s, model.logits(out.hidden[:, 0], ops, weights), knobs, mode)

    return jax.lax.while_loop(cond, body, state)
