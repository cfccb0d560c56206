"""`Sampler`: the host side of generation — tokenise, left-pad into a length bucket, run the
compiled prefill + decode loop, watch for stop strings between chunks, return numpy results.

Compilation: one prefill and one decode program per (batch, prompt bucket, max_new_tokens,
static mode); `Mode` (greedy / top_k / whether top-p is on) is static, temperature, top_p, the
EOS ids (padded to a fixed count) and the seed are traced. `Sampler.traces` counts traces, so
tests can check that a second call with the same shapes compiles nothing.

Randomness: row r of a run seeded s uses key fold_in(fold_in(key(s), r), step), where r is the
prompt's index in the `generate` call (or `row_ids`), so a row's tokens do not depend on which
other prompts share its batch, on batch padding, or on the mesh.

Stop strings: the decode loop is run in chunks of `chunk_size` tokens; between chunks the host
decodes each live row's new tokens (with a short overlap, `stop.StopWatch`), marks rows whose
completion contains a stop string as finished (the loop exits early once every row is), and the
result is truncated (see `stop.py`). Without stop strings the whole generation is one device call.

n samples per prompt (`generate(..., n=k)`): the prompt is prefilled once and its cache
broadcast to its k rows; row i*k + j samples exactly as row i*k + j of the prompts repeated.

Shared prefixes (`shared_prefix=m`): prompts of one device call that begin with >= m equal
tokens (a problem's refinement prompts) have those tokens prefilled once (`prefix.py`), when
that costs less than the plain layout; the tokens drawn are the plain prefill's up to float
rounding of the logits.

Weights: the sampler keeps its own copy in the compute dtype (`update_params`), so a train step
that donates its buffers never deletes the sampler's.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ledex_jax import ops as O
from ledex_jax.sampling import loop, prefix
from ledex_jax.sampling.layout import RescoringBatch, left_pad, rescoring_batch
from ledex_jax.sampling.processors import Mode, row_keys
from ledex_jax.sampling.stop import StopWatch, cut_tokens, first_stop
from ledex_jax.sharding import (DEFAULT_RULES, logical_to_spec, named_sharding, param_shardings, spec_devices,
                                use_mesh)

MAX_EOS_IDS = 8


@dataclasses.dataclass
class SampleOutput:
    """One row per completion: prompt i's n samples are rows i*n .. i*n+n-1, prompts in input
    order. Columns past `lengths[r]` hold the pad id and 0 log-probs.

    logprobs: log p(token) under the raw model at temperature 1, no top-k/top-p (what PPO's
      ratio and KL need). sample_logprobs: under the distribution actually sampled from
      (temperature, top-k, top-p applied; 0 for greedy).
    stopped: the row ended on an EOS id or a stop string (False: it hit max_new_tokens).
    prompt_ids / prompt_mask: each row's prompt, left-padded to one width P (the largest prompt
      bucket of the call), what `rescoring_batch()` puts before the completion.
    """
    tokens: np.ndarray           # [N, max_new_tokens] int32
    logprobs: np.ndarray         # [N, max_new_tokens] float32
    sample_logprobs: np.ndarray  # [N, max_new_tokens] float32
    lengths: np.ndarray          # [N] int32, including a final EOS token
    stopped: np.ndarray          # [N] bool
    texts: list[str] | None      # decoded completions, cut before a stop string (needs a tokenizer)
    prompt_ids: np.ndarray       # [N, P] int32
    prompt_mask: np.ndarray      # [N, P] int32, 1 = real prompt token

    def rescoring_batch(self) -> RescoringBatch:
        """The [prompt | completion] layout a learner scores again (`layout.rescoring_batch`)."""
        return rescoring_batch(self.prompt_ids, self.prompt_mask, self.tokens, self.lengths)


def default_buckets(max_prompt_len: int, smallest: int = 16) -> tuple[int, ...]:
    """16, 24, 32, 48, 64, 96, ... (at most 50% padding, few programs) up to max_prompt_len."""
    out, b = [], smallest
    while b < max_prompt_len:
        out += [b] + ([b * 3 // 2] if b * 3 // 2 < max_prompt_len else [])
        b *= 2
    return tuple(out) + (max_prompt_len,)


class Sampler:
    """Batched KV-cache sampling for a `DecoderLM`.

    Args:
      model: an NNX model (`build_model` / `load_pretrained`); its weights are captured at
        construction (call `update_params(model)` after training steps).
      tokenizer: optional; needed for string prompts, stop strings and `texts`. Anything with
        `encode(text) -> ids` and `decode(ids, skip_special_tokens=...)` (HF tokenizers).
      max_prompt_len: longest accepted prompt (tokens); prompts are left-padded to a bucket.
      prompt_buckets: padded prompt lengths (default: `default_buckets(max_prompt_len)`).
      max_batch: prompts per device call; longer lists run in groups of this size, prompts of
        similar length together (results come back in the caller's order). A last group
        that is not full is padded only to the smallest halving of the group that holds it (at
        most log2(max_batch) more programs, instead of decoding up to ~2x dead rows). Default:
        the whole list in one group.
      chunk_size: tokens per decode chunk when stop strings are given.
      mesh, rules: run under this mesh with the batch sharded over the rules' `batch` axes.
      unrolled: decode with a Python loop over layers and per-layer weights/caches in the decode
        layouts the seam chooses (see `loop.py`; keeps a second, per-layer copy of the weights;
        compile time grows with depth). Default: on CPU only (also worth trying for small
        models on GPU, see docs/benchmarks.md).
      kernels: the implementation choice for this sampler's programs (`ModelConfig.kernels`
        values, table in `ledex_jax/ops/choice.py`); default: the model's.
      shared_prefix: prompts in one device call that begin with at least this many equal
        tokens share the prefill of those tokens (see the module docstring); 0: off.
    """

    def __init__(self, model, tokenizer=None, *, max_prompt_len: int = 1024,
                 prompt_buckets: Sequence[int] | None = None, max_batch: int | None = None,
                 chunk_size: int = 32, pad_id: int | None = None, mesh=None, rules=DEFAULT_RULES,
                 cache_dtype=None, unrolled: bool | None = None, kernels: str | None = None,
                 shared_prefix: int = 0):
        self.config = model.config
        self.tokenizer = tokenizer
        self.max_prompt_len = max_prompt_len
        self.buckets = tuple(sorted(prompt_buckets or default_buckets(max_prompt_len)))
        if self.buckets[-1] < max_prompt_len:
            raise ValueError(f"prompt_buckets {self.buckets} must reach max_prompt_len={max_prompt_len}")
        self.max_batch, self.chunk_size = max_batch, chunk_size
        if shared_prefix < 0:
            raise ValueError(f"shared_prefix={shared_prefix} must be >= 0 (0: off)")
        self.shared_prefix = int(shared_prefix)
        self.mesh, self.rules = mesh, tuple(rules)
        if pad_id is None:
            pad_id = getattr(tokenizer, "pad_token_id", None)
        if pad_id is None:
            pad_id = self.config.pad_token_id if self.config.pad_token_id is not None else 0
        self.pad_id = int(pad_id)
        self.unrolled = jax.default_backend() == "cpu" if unrolled is None else unrolled
        self.ops = O.select(kernels or self.config.kernels, self.config.dtype,
                            mesh_devices=1 if mesh is None else mesh.size)
        self.traces = collections.Counter()
        # graphdef is static (hashable); params and all arrays are traced; the decode state is donated.
        split = lambda g, p: loop.decode_weights(nnx.merge(g, p), self.ops)
        self._split = jax.jit(self._counted("decode_weights", split), static_argnums=(0,))
        self.prefill_fn = jax.jit(self._counted("prefill", loop.prefill), static_argnums=(0,),
                                  static_argnames=("ops", "mode", "max_new", "samples", "cache_dtype"))
        self.prefill_shared_fn = jax.jit(self._counted("prefill_shared", loop.prefill_shared), static_argnums=(0,),
                                         static_argnames=("ops", "mode", "max_new", "samples", "cache_dtype"))
        self.decode_fn = jax.jit(self._counted("decode", loop.decode), static_argnums=(0,),
                                 static_argnames=("ops", "mode"), donate_argnums=(3,))
        self.graphdef, self.params, self.layer_params = None, None, None
        self._copy = None  # the jitted weight copy (`update_params`)
        self.update_params(model)
        self._prefill = functools.partial(self.prefill_fn, self.graphdef, ops=self.ops, cache_dtype=cache_dtype)
        self._prefill_shared = functools.partial(self.prefill_shared_fn, self.graphdef, ops=self.ops,
                                                 cache_dtype=cache_dtype)
        self._decode = functools.partial(self.decode_fn, self.graphdef, ops=self.ops)
        self._row_keys = jax.jit(self._counted("row_keys", row_keys))

    # --- setup ---------------------------------------------------------------------------
    def update_params(self, weights):
        """Takes new weights: a model, or the trainer's `(graphdef, state)`. They are copied (into
        the compute dtype, which the forward casts to anyway), so the trainer may donate its
        buffers to its next step; same structure and shapes: no recompilation."""
        model = nnx.merge(*weights) if isinstance(weights, tuple) else weights
        graphdef, params = nnx.split(model)
        if self.graphdef is not None and graphdef != self.graphdef:
            raise ValueError("update_params: the model's structure differs from the one this Sampler was built for")
        if self._copy is None:
            dtype = self.config.jnp_dtype
            copy = lambda p: jax.tree.map(
                lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype else jnp.copy(x), p)
            shardings = None if self.mesh is None else param_shardings(params, self.mesh, self.rules)
            self._copy = jax.jit(self._counted("copy_params", copy), out_shardings=shardings)
        self.graphdef, self.params = graphdef, self._copy(params)
        if self.unrolled:
            with self._context():
                self.layer_params = self._split(graphdef, self.params)

    def _counted(self, name, fn):
        @functools.wraps(fn)
        def traced(*args, **kwargs):
            self.traces[name] += 1  # runs once per trace, i.e. per compilation
            return fn(*args, **kwargs)
        return traced

    @contextlib.contextmanager
    def _context(self):
        """Where this sampler's programs are traced and run: its mesh."""
        if self.mesh is None:
            yield
        else:
            with use_mesh(self.mesh, self.rules):
                yield

    @property
    def batch_shards(self) -> int:
        """How many ways the batch is split (the group size is padded to a multiple of it)."""
        if self.mesh is None:
            return 1
        return spec_devices(self.mesh, logical_to_spec(("batch",), self.rules, self.mesh)[0])

    def _put(self, x):
        x = np.asarray(x)
        if self.mesh is None:
            return jnp.asarray(x)
        axes = ("batch",) + (None,) * (x.ndim - 1)
        return jax.device_put(x, named_sharding(self.mesh, axes, self.rules, x.shape, "sampler input"))

    # --- prompts -------------------------------------------------------------------------
    def encode(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("string prompts need a tokenizer: Sampler(model, tokenizer=...)")
            return list(self.tokenizer.encode(prompt))
        return [int(t) for t in prompt]

    def decode_text(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def bucket(self, length: int) -> int:
        for b in self.buckets:
            if b >= length:
                return b
        raise ValueError(f"prompt of {length} tokens exceeds max_prompt_len={self.max_prompt_len}; "
                         "raise Sampler(max_prompt_len=...) or shorten the prompt")

    def _eos(self, eos_ids) -> list[int]:
        if eos_ids is None:  # default: the model's and the tokenizer's EOS
            eos_ids = [self.config.eos_token_id, getattr(self.tokenizer, "eos_token_id", None)]
            eos_ids = [e for x in eos_ids for e in (x if isinstance(x, (list, tuple)) else [x]) if e is not None]
        eos_ids = sorted({int(e) for e in eos_ids})
        if len(eos_ids) > MAX_EOS_IDS:
            raise ValueError(f"at most {MAX_EOS_IDS} eos_ids are supported, got {len(eos_ids)}")
        return eos_ids

    # --- generation ----------------------------------------------------------------------
    def generate(self, prompts, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 top_k: int = 0, greedy: bool = False, eos_ids: Sequence[int] | None = None,
                 stop: Sequence[str] | None = None, seed: int = 0, n: int = 1,
                 row_ids: Sequence[int] | None = None, progress: bool = False,
                 max_batch: int | None = None) -> SampleOutput:
        """Samples `n` completions of up to `max_new_tokens` per prompt (token-id lists or strings).

        temperature=0 means greedy. eos_ids=None uses the model's/tokenizer's EOS; [] disables
        EOS. `row_ids` (default 0..N*n-1) pick each row's random stream. progress=True shows a
        tqdm bar of finished rows (the loop then runs in chunks; results are unchanged).
        `max_batch` overrides the sampler's rows per device call for this call only.
        """
        ids = [self.encode(p) for p in prompts]
        stop = [s for s in (stop or []) if s]
        self._validate(ids, max_new_tokens, temperature, top_p, top_k, stop)
        if n < 1:
            raise ValueError(f"n={n}: the number of samples per prompt must be >= 1")
        greedy = greedy or temperature == 0
        mode = Mode(greedy=True) if greedy else Mode(top_k=int(top_k), use_top_p=top_p < 1.0)
        eos = self._eos(eos_ids)
        knobs = loop.Knobs(jnp.float32(temperature if not greedy else 1.0), jnp.float32(top_p),
                           jnp.asarray(eos + [-1] * (MAX_EOS_IDS - len(eos)), jnp.int32), jnp.int32(self.pad_id))
        rows = np.arange(len(ids) * n) if row_ids is None else np.asarray(row_ids)
        if rows.shape != (len(ids) * n,):
            raise ValueError(f"row_ids has {rows.size} entries; need one per completion ({len(ids)} prompts x n={n})")
        group = max(1, (max_batch or self.max_batch or len(ids) * n) // n)  # prompts per device call
        group = -(-group // self.batch_shards) * self.batch_shards
        # several device calls: each takes prompts of similar length (a shorter bucket for most),
        # prompts that share a prefix together
        order = np.arange(len(ids))
        if len(ids) > group:
            order = prefix.call_order(ids, self.shared_prefix)
        by_length, rows = [ids[i] for i in order], rows.reshape(len(ids), n)[order].reshape(-1)
        bar = _progress_bar(len(ids) * n, progress)
        parts = [self._run_group(by_length[i:i + group], rows[i * n:(i + group) * n],
                                 self._group_size(len(ids) - i, group), n, max_new_tokens, mode, knobs, seed, stop, bar)
                 for i in range(0, len(ids), group)]
        bar.close()
        back = np.argsort(order)  # sorted position of each prompt, in the caller's order
        restore = lambda x: x.reshape(len(ids), n, *x.shape[1:])[back].reshape(x.shape)
        tokens, raw, sampled, lengths = (restore(np.concatenate([part[j] for part in parts])) for j in range(4))
        width = self.bucket(max(map(len, ids)))
        prompt_ids, prompt_mask = left_pad([seq for seq in ids for _ in range(n)], self.pad_id, width)
        return self._finish(tokens, raw, sampled, lengths, eos, stop, prompt_ids, prompt_mask)

    def _group_size(self, prompts: int, group: int) -> int:
        """Prompts one device call is padded to: `group`, halved while the half still holds
        `prompts` and splits evenly over the batch shards."""
        while group // 2 >= prompts and (group // 2) % self.batch_shards == 0:
            group //= 2
        return group

    def _prefix_rows(self, prefixes: int) -> int:
        """Prefix rows one shared prefill is padded to: a power of two (few programs), split
        evenly over the batch shards."""
        rows = 1 << max(0, prefixes - 1).bit_length()
        return -(-rows // self.batch_shards) * self.batch_shards

    def _validate(self, ids, max_new_tokens, temperature, top_p, top_k, stop):
        if not ids:
            raise ValueError("generate: no prompts given")
        for i, seq in enumerate(ids):
            if not seq:
                raise ValueError(f"prompt {i} is empty; give at least one token (e.g. BOS)")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {temperature}, {top_p}, {top_k}")
        if stop and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer: Sampler(model, tokenizer=...)")
        longest = max(map(len, ids)) + max_new_tokens
        if longest > self.config.max_position_embeddings:
            raise ValueError(f"prompt + max_new_tokens = {longest} exceeds the model's max_position_embeddings="
                             f"{self.config.max_position_embeddings}; lower max_new_tokens or shorten prompts")

    def _run_group(self, ids, rows, group, n, max_new, mode, knobs, seed, stop, bar):
        """`ids`: up to `group` prompts (the group is padded to `group` so all share one program);
        `rows`: the random-stream ids of their len(ids) * n completions."""
        prompts, width = len(ids), self.bucket(max(map(len, ids)))
        padded = ids + [ids[0]] * (group - prompts)
        real = prompts * n
        row_ids = np.zeros(group * n, np.int32)
        row_ids[:real] = rows
        watch = StopWatch(stop, self.decode_text, group * n) if stop else None
        with self._context():
            keys = self._put(np.asarray(self._row_keys(jnp.int32(seed), jnp.asarray(row_ids))))
            active = self._put(np.arange(group * n) < real)
            plan = None if not self.shared_prefix else prefix.plan_prefixes(
                padded, min_shared=self.shared_prefix, samples=n, plain_width=width, bucket=prefix.block_width,
                prefix_rows=self._prefix_rows, pad_id=self.pad_id)
            if plan is None:
                input_ids, mask = left_pad(padded, self.pad_id, width)
                state = self._prefill(self.params, self.layer_params, self._put(input_ids), self._put(mask), keys,
                                      active, knobs, mode=mode, max_new=max_new, samples=n)
            else:
                state = self._prefill_shared(self.params, self.layer_params, *map(self._put, plan), keys, active,
                                             knobs, mode=mode, max_new=max_new, samples=n)
            chunked, done = bool(stop) or not bar.disable, 0
            while True:
                if watch is not None:
                    state = self._mark_stopped(state, watch)
                finished = np.asarray(state.finished)
                if chunked:
                    bar.update(int(finished[:real].sum()) - done)
                    done = int(finished[:real].sum())
                if int(state.step) >= max_new or finished.all():
                    break
                stop_at = min(int(state.step) + self.chunk_size, max_new) if chunked else max_new
                state = self._decode(self.params, self.layer_params, state, jnp.int32(stop_at), knobs, mode=mode)
        bar.update(real - done)
        return tuple(np.asarray(x)[:real] for x in (state.tokens, state.logprobs, state.sample_logprobs,
                                                     state.lengths))

    def _mark_stopped(self, state, watch: StopWatch):
        finished = np.asarray(state.finished)
        hit = watch.check(np.asarray(state.tokens), np.asarray(state.lengths), finished)
        if not hit.any():
            return state
        return state._replace(finished=jax.device_put(finished | hit, state.finished.sharding))

    def _finish(self, tokens, raw, sampled, lengths, eos, stop, prompt_ids, prompt_mask) -> SampleOutput:
        """Cuts each row after the token that completes its first stop string (even when the row
        went on to an EOS), sets `stopped`, decodes the texts and pads past each row's end."""
        lengths = lengths.astype(np.int32).copy()
        stopped = np.array([n > 0 and int(t[n - 1]) in eos for t, n in zip(tokens, lengths)], bool)
        texts = None
        if self.tokenizer is not None:
            texts = []
            for i in range(len(tokens)):
                if stop:
                    cut = cut_tokens(tokens[i, :lengths[i]].tolist(), stop, self.decode_text)
                    if cut < lengths[i] or first_stop(self.decode_text(tokens[i, :cut]), stop) >= 0:
                        stopped[i], lengths[i] = True, cut
                text = self.decode_text(tokens[i, :lengths[i]])
                at = first_stop(text, stop) if stop else -1
                texts.append(text if at < 0 else text[:at])
        past = np.arange(tokens.shape[1])[None, :] >= lengths[:, None]
        tokens = np.where(past, self.pad_id, tokens).astype(np.int32)
        raw, sampled = np.where(past, 0.0, raw).astype(np.float32), np.where(past, 0.0, sampled).astype(np.float32)
        return SampleOutput(tokens, raw, sampled, lengths, stopped, texts, prompt_ids, prompt_mask)


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="sampling", unit="prompt", disable=not enabled)
