"""Choosing the next token from logits: greedy, temperature, top-k, top-p, per-row PRNG keys.

Pure functions of arrays, so the decode loop stays readable and the math is testable alone.
`Mode` is the static part (it changes the program); temperature and top_p are traced scalars,
so changing them never recompiles.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Mode(NamedTuple):
    """Static sampling choices. top_k=0: no top-k; use_top_p=False skips the nucleus search."""
    greedy: bool = False
    top_k: int = 0
    use_top_p: bool = False


# How many top logits the nucleus is looked for among before searching the whole vocabulary
# (SmolLM2 at T = 0.8 on code: nuclei of up to ~250 tokens at top_p 0.95).
NUCLEUS_CANDIDATES = 512


def nucleus(sorted_logits, top_p, log_normalizer=None):
    """Masks (to -inf) tokens outside the smallest prefix of a descending-sorted row whose
    probability mass reaches top_p; the most likely token is always kept (HF semantics).
    `log_normalizer` [B, 1]: the row's logsumexp when `sorted_logits` is only its top entries."""
    if log_normalizer is None:
        log_normalizer = jax.nn.logsumexp(sorted_logits, axis=-1, keepdims=True)
    probs = jnp.exp(sorted_logits - log_normalizer)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep = (mass_before < top_p) | (jnp.arange(sorted_logits.shape[-1]) == 0)
    return jnp.where(keep, sorted_logits, -jnp.inf)


def _order_key(x):
    """uint32 keys that sort like the float32 values `x` (for bisection over floats)."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def _from_order_key(key):
    bits = jnp.where(key >> 31 == 1, key & jnp.uint32(0x7FFFFFFF), ~key)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def _mass_above(top, probs):
    """[B, k] probability of the candidates strictly above each one, for candidates sorted in
    descending order: the running sum before the first of its ties."""
    k = top.shape[-1]
    new_value = jnp.concatenate([jnp.ones_like(top[:, :1], bool), top[:, 1:] != top[:, :-1]], axis=-1)
    first_of_ties = jax.lax.cummax(jnp.where(new_value, jnp.arange(k), 0), axis=1)
    return jnp.take_along_axis(jnp.cumsum(probs, axis=-1) - probs, first_of_ties, axis=-1)


def nucleus_threshold(scaled, top_p, candidates: int = NUCLEUS_CANDIDATES):
    """Each row's smallest kept logit [B, 1]: token i is in the nucleus iff the probability of
    the tokens strictly more likely than it is below top_p (HF's sorted-prefix rule, with all
    tokens tied at the boundary kept, so the result never depends on a sort's tie order).

    No vocabulary sort: when every row's top `candidates` logits decide its nucleus (the mass
    above the smallest of them reaches top_p), it is read off them (~19 ms per decode step at
    64 rows, V=49152 on CPU); otherwise a 32-step bisection over float order finds the
    threshold exactly for the whole batch (~50 ms more; a full sort costs ~700 ms)."""
    log_normalizer = jax.nn.logsumexp(scaled, axis=-1, keepdims=True)
    k = min(candidates, scaled.shape[-1])
    # the values are gathered rather than taken from top_k: slicing its values output makes
    # XLA:CPU lower the top_k as a full sort (~600 ms here)
    _, index = jax.lax.top_k(scaled, k)
    top = jnp.take_along_axis(scaled, index, axis=-1)
    probs = jnp.exp(top - log_normalizer)
    from_top = jnp.min(jnp.where(_mass_above(top, probs) < top_p, top, jnp.inf), axis=-1, keepdims=True)
    smallest = jnp.min(top, axis=-1, keepdims=True)
    decided = jnp.sum(jnp.where(top > smallest, probs, 0.0), axis=-1) >= top_p

    def bisect():
        probs_all = jnp.exp(scaled - log_normalizer)

        def step(_, bounds):  # invariant: mass above `hi` < top_p <= mass above `lo`
            lo, hi = bounds
            mid = lo + (hi - lo) // 2
            mass = jnp.sum(jnp.where(scaled > _from_order_key(mid), probs_all, 0.0), axis=-1, keepdims=True)
            below, done = mass < top_p, hi - lo <= 1  # once adjacent, `hi` is the answer
            return jnp.where(below | done, lo, mid), jnp.where(below & ~done, mid, hi)

        lo = _order_key(jnp.min(scaled, axis=-1, keepdims=True)) - 1
        hi = _order_key(jnp.max(scaled, axis=-1, keepdims=True))
        return _from_order_key(jax.lax.fori_loop(0, 32, step, (lo, hi))[1])

    if k == scaled.shape[-1]:
        return from_top
    return jax.lax.cond(jnp.all(decided), lambda: from_top, bisect)


def step_keys(row_keys, step):
    """One key per row for this step: the row's key folded with the step index, so a row's
    random stream depends only on (seed, row id, step), never on the batch it sits in."""
    return jax.vmap(lambda k: jax.random.fold_in(jax.random.wrap_key_data(k), step))(row_keys)


def row_keys(seed, row_ids):
    """uint32 key data [B, 2] for rows `row_ids` of a run seeded with `seed`."""
    base = jax.random.key(seed)
    return jax.vmap(lambda r: jax.random.key_data(jax.random.fold_in(base, r)))(row_ids)


def categorical(keys, logits, block: int = 256):
    """One draw per row and its log-probability, by inverse-CDF sampling: a single uniform per
    row, then the first token whose cumulative probability reaches it. Gumbel-max needs a
    uniform per vocabulary entry (B x V threefry numbers each step: ~6x an argmax on CPU, V=49152).

    The cumulative sum is two-level: per-block sums of exp(logits - max) (fused with the one
    pass over the vocabulary that the normaliser needs anyway), a cumsum over the few blocks,
    then a cumsum inside the chosen block only. A full-vocabulary cumsum cost 3 ms per decode
    step on CPU (SmolLM2, batch 16), this ~1 ms. Zero-probability tokens are never drawn.
    """
    b, v = logits.shape
    u = 1.0 - jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys)  # (0, 1]
    top = jnp.max(logits, axis=-1, keepdims=True)
    padded = jnp.pad(logits - top, ((0, 0), (0, -v % block)), constant_values=-jnp.inf)
    block_mass = jnp.sum(jnp.exp(padded.reshape(b, -1, block)), axis=-1)  # [B, blocks]
    before_block = jnp.cumsum(block_mass, axis=-1)
    total = before_block[:, -1]
    target = (u * total)[:, None]
    j = jnp.minimum(jnp.sum(before_block < target, axis=-1), block_mass.shape[1] - 1)
    start = jnp.take_along_axis(before_block - block_mass, j[:, None], axis=-1)
    inside = jnp.exp(jnp.take_along_axis(padded, j[:, None] * block + jnp.arange(block)[None], axis=-1))
    reached = jnp.sum(start + jnp.cumsum(inside, axis=-1) < target, axis=-1)
    last_possible = block - 1 - jnp.argmax(inside[:, ::-1] > 0, axis=-1)  # rounding never lands past it
    index = j * block + jnp.minimum(reached, last_possible)
    logprob = jnp.take_along_axis(padded, index[:, None], axis=-1)[:, 0] - jnp.log(total)
    return index.astype(jnp.int32), logprob


def choose(logits, keys, mode: Mode, temperature, top_p):
    """Next tokens [B] and their log-probabilities under the sampling distribution (after
    temperature, top-k and top-p; 0 for greedy, a point mass)."""
    if mode.greedy:
        tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return tokens, jnp.zeros(tokens.shape, jnp.float32)
    scaled = logits / temperature
    if mode.top_k:
        k = min(mode.top_k, logits.shape[-1])
        scaled, index = jax.lax.top_k(scaled, k)  # sorted descending
        if mode.use_top_p:
            scaled = nucleus(scaled, top_p)
    elif mode.use_top_p:
        scaled = jnp.where(scaled >= nucleus_threshold(scaled, top_p), scaled, -jnp.inf)
        index = None
    else:
        index = None
    choice, logprob = categorical(keys, scaled)
    tokens = choice if index is None else jnp.take_along_axis(index, choice[:, None], axis=-1)[:, 0]
    return tokens.astype(jnp.int32), logprob
