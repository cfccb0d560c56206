"""Building blocks shared by the backbone families: params with logical axes, norms, RoPE,
attention with GQA/MQA + KV cache, and the scanned layer stack.

Everything here is a pure function of arrays except `param`, so the family modules stay short
and the math is easy to check against Hugging Face.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ledex_jax.kernels import amx
from ledex_jax.kernels.packed import PackedWeight, apply_flat
from ledex_jax.sharding import constrain


def param(rngs: nnx.Rngs | None, shape: Sequence[int], axes: Sequence[str], dtype, init: str = "normal",
          std: float = 0.02) -> nnx.Param:
    """A parameter carrying its logical axis names in metadata (`axes`)."""
    if len(shape) != len(axes):
        raise ValueError(f"shape {shape} and axes {axes} differ in rank")
    if init == "normal":
        value = std * jax.random.normal(rngs.params(), tuple(shape), jnp.float32)
    elif init == "ones":
        value = jnp.ones(tuple(shape), jnp.float32)
    elif init == "zeros":
        value = jnp.zeros(tuple(shape), jnp.float32)
    else:
        raise ValueError(f"unknown init {init!r}")
    return nnx.Param(value.astype(dtype), axes=tuple(axes))


class KVCache(NamedTuple):
    """Fixed-size key/value cache for all layers: k, v are [layers, batch, kv_heads, slots, head_dim]
    (heads before slots, so attention over the cache is a batched product with no transposes).

    `end` is the number of slots already written (same for every row: prompts are left-padded).
    """
    k: jax.Array
    v: jax.Array
    end: jax.Array

    @classmethod
    def zeros(cls, num_layers, batch, slots, kv_heads, head_dim, dtype) -> "KVCache":
        shape = (num_layers, batch, kv_heads, slots, head_dim)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((), jnp.int32))


class ModelOutput(NamedTuple):
    logits: jax.Array | None  # [batch, length, vocab], float32 (None: `forward(..., logits=False)`)
    hidden: jax.Array  # [batch, length, embed], final-norm hidden states (value heads read these)
    cache: KVCache | None


def rms_norm(x, weight, eps):
    """HF LlamaRMSNorm: normalise in float32, cast back, then scale.

    The scaling runs in float32 on the cast-back values and is rounded once: the same bits as
    HF's product in x's dtype (a product of two bf16 values is exact in float32), but the
    weight's gradient is then a float32 sum; as a bf16 sum XLA:CPU splits it into a slow
    precision-keeping reduce-window (~3 ns per element, 0.2 s of a bf16 SmolLM2 train step)."""
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return (weight.astype(jnp.float32) * xf.astype(x.dtype).astype(jnp.float32)).astype(x.dtype)


def layer_norm(x, weight, bias, eps):
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    return (y * weight.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


def rope_tables(positions, head_dim, theta, scaling_factor=None, max_positions: int = 4096):
    """cos/sin tables [batch, length, head_dim] for rotate-half RoPE (HF layout), looked up in a
    [max_positions, head_dim / 2] table built once at trace time. Computed in the graph, XLA fuses
    cos/sin into their consumers and evaluates them again for every head of every layer, forward
    and backward (8x slower RoPE on CPU: 0.4 s of a bf16 SmolLM2 train step). A position
    >= max_positions reads NaN (as a learned position table does); the sampler and trainer keep
    positions below the model's `max_position_embeddings`."""
    cos, sin = _rope_table(head_dim, float(theta), float(scaling_factor or 0.0), int(max_positions))
    cos, sin = jnp.take(cos, positions, axis=0), jnp.take(sin, positions, axis=0)
    return jnp.concatenate([cos, cos], axis=-1), jnp.concatenate([sin, sin], axis=-1)


@functools.lru_cache(maxsize=16)
def _rope_table(head_dim, theta, scaling_factor, max_positions):
    """Angles as HF computes them (inverse frequencies by XLA's float32 power, which rounds as
    torch's does; float32 positions x frequencies), then cos/sin rounded once from float64."""
    with jax.ensure_compile_time_eval():
        inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
        if scaling_factor:
            inv_freq = inv_freq / scaling_factor  # linear position interpolation
        inv_freq = np.asarray(jax.device_get(inv_freq), np.float32)
    angles = (np.arange(max_positions, dtype=np.float32)[:, None] * inv_freq[None, :]).astype(np.float64)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


@jax.custom_vjp
def apply_rope(x, cos, sin):
    """x: [batch, length, heads, head_dim]; rotate-half convention as in HF Llama.

    Its gradient is the rotation by the opposite angle (`rope_tables` repeats each angle in both
    halves, so rotate-half commutes with the tables): one fused pass, where XLA:CPU's own
    transpose of the concatenation ran ~8x slower (0.2 s of a bf16 SmolLM2 train step)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    return (x.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x.dtype)


def _rope_fwd(x, cos, sin):
    return apply_rope(x, cos, sin), (cos, sin)


def _rope_bwd(residuals, g):
    cos, sin = residuals
    return apply_rope(g, cos, -sin), None, None


apply_rope.defvjp(_rope_fwd, _rope_bwd)


def default_positions(attention_mask):
    """Position ids for left-padded rows: count of real tokens before each token (pads get 0)."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


def attention_mask_bias(q_len, attention_mask, segment_ids=None, q_offset=0):
    """Boolean [batch, 1, 1, q_len, kv_len] visibility: causal, key not padding, same segment.

    q_offset: cache slot of the first query (queries sit at slots q_offset .. q_offset+q_len-1).
    """
    kv_len = attention_mask.shape[-1]
    q_slots = q_offset + jnp.arange(q_len)[:, None]
    causal = jnp.arange(kv_len)[None, :] <= q_slots  # [q, kv]
    visible = causal[None] & attention_mask.astype(bool)[:, None, :]
    if segment_ids is not None:
        visible = visible & (segment_ids[:, :, None] == segment_ids[:, None, :])
    return visible[:, None, None]


@jax.tree_util.register_pytree_node_class
class Transposed:
    """A weight stored output-axes-first ([out..., in...], PyTorch's Linear layout) for `matmul`.

    The model keeps [in..., out...]; the CPU decode path (`sampling/loop.py`) re-lays its weights
    out this way once, because XLA:CPU's small-batch products run 1.3x faster when both operands
    contract their minor axes (SmolLM2-135M shapes, batch 16, float32 and bfloat16) and bfloat16
    products with fewer than 4 rows fall off the fast path (~7x slower): `min_rows` pads them.
    """

    def __init__(self, array, contracted: int, min_rows: int = 1):
        self.array, self.contracted, self.min_rows = array, contracted, min_rows

    @classmethod
    def of(cls, w, contracted: int, min_rows: int = 1) -> "Transposed":
        """w: [in..., out...] with `contracted` leading input axes."""
        return cls(jnp.moveaxis(w, tuple(range(contracted)), tuple(range(w.ndim - contracted, w.ndim))),
                   contracted, min_rows)

    def apply(self, x):
        """x [..., in...] -> [..., out...] as one 2-D product [rows, in] x [out, in]^T (XLA:CPU
        copies 3-D weights back to its preferred layout when given an einsum)."""
        ins = self.array.shape[self.array.ndim - self.contracted:]
        outs = self.array.shape[:self.array.ndim - self.contracted]
        w2 = self.array.reshape(-1, math.prod(ins))
        return apply_flat(x, ins, outs, lambda x2: product_nt(x2, w2, self.min_rows).astype(x.dtype),
                          "Transposed weight")

    def tree_flatten(self):
        return (self.array,), (self.contracted, self.min_rows)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)


# Weights re-laid out once for decoding (`sampling/loop.py:split_layers`); each has `apply(x)`.
DECODE_LAYOUTS = (Transposed, PackedWeight)


def cpu_min_rows(dtype) -> int:
    """Rows a product needs to stay on XLA:CPU's fast bfloat16 path (see `Transposed`); 1 elsewhere."""
    return 4 if jnp.dtype(dtype) == jnp.bfloat16 and jax.default_backend() == "cpu" else 1


def product_nt(x2, w2, min_rows: int = 1):
    """[rows, in] x [out, in]^T -> float32 [rows, out], rows zero-padded up to `min_rows` for the
    product and dropped again."""
    rows = x2.shape[0]
    if rows < min_rows:
        x2 = jnp.pad(x2, ((0, min_rows - rows), (0, 0)))
    y = jax.lax.dot_general(x2, w2, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    return y[:rows]


def matmul(spec: str, x, w):
    """einsum accumulated in float32, returned in x's dtype. Same result for float32; for bfloat16
    it is what TPUs/GPUs do anyway, and XLA:CPU runs bf16 x bf16 -> f32 products on its fast
    (AMX/avx512-bf16) path but bf16 -> bf16 ones ~8x slower (measured, batch 16).

    `w` may be a decode-layout weight (`DECODE_LAYOUTS`): same result.

    Leading axes of x that w lacks (batch, length) are merged into one before the product: XLA:CPU
    runs the 2-D forms of a training step's products faster (SmolLM2's MLP forward + backward 1.9x,
    the whole step 1.4x); with [B, T, ...] operands the weight gradients first transpose the
    activations with slow strided copies.
    """
    if isinstance(w, DECODE_LAYOUTS):
        return w.apply(x)
    return _accumulated_einsum(spec, x, w, x.dtype)


def _accumulated_einsum(spec: str, x, w, out_dtype):
    """float32-accumulated einsum in out_dtype: JAX's own gradients for float32 operands,
    `lowp_einsum`'s for low-precision ones; bf16 products of the form [rows, in] x [in, out] on
    CPU run on the AMX kernel (`amx.dense`, same gradients): with the weights packed on every
    call, 1.3-2x faster than XLA:CPU's at training shapes, and the bf16 output is written
    directly instead of converted from float32."""
    if x.dtype == jnp.float32:
        return _flat_einsum(spec, x, w).astype(out_dtype)
    flat = _as_matrix_product(spec, x, w)
    if flat is not None and amx.trains(x, w):
        x2, w2, out_shape = flat
        return amx.dense(x2, w2, out_dtype).reshape(out_shape)
    return lowp_einsum(spec, x, w, out_dtype)


def _as_matrix_product(spec: str, x, w):
    """(x2 [rows, in], w2 [in, out], out shape) when spec contracts x's trailing axes with w's
    leading ones and keeps the rest in order ("bte,ehd->bthd"); else None."""
    xs, ws, out = _operands(spec)
    n = len(ws) - len(ws.lstrip(xs))  # w's leading axes that x also has
    contracted = ws[:n]
    if not contracted or not xs.endswith(contracted) or out != xs[:len(xs) - n] + ws[n:]:
        return None
    lead, rest = x.shape[:x.ndim - n], w.shape[n:]
    return x.reshape(math.prod(lead), -1), w.reshape(-1, math.prod(rest)), (*lead, *rest)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def lowp_einsum(spec: str, x, w, out_dtype):
    """einsum of low-precision (bf16) operands accumulated in float32, returned in out_dtype, whose
    backward products also take low-precision operands: the output's cotangent is cast to x's
    dtype first. JAX's own transpose multiplies the float32 cotangent with the bf16 operand, and
    XLA:CPU runs such mixed products in float32 without its AMX path (bf16 SmolLM2 train step:
    products 2x slower). For a bf16 output the cast is exact (its cotangent is bf16-valued); for
    float32 logits/scores it rounds the cotangent to bf16, as mixed-precision training does
    (torch autocast's bf16 logits; flash attention's bf16 dS).

    spec: "x_axes,w_axes->out_axes" where every axis of x and w also appears in w/out or x/out.
    """
    return _flat_einsum(spec, x, w).astype(out_dtype)


def _lowp_einsum_fwd(spec, x, w, out_dtype):
    return lowp_einsum(spec, x, w, out_dtype), (x, w)


def _lowp_einsum_bwd(spec, out_dtype, residuals, ct):
    x, w = residuals
    xs, ws, out = _operands(spec)
    ct = ct.astype(x.dtype)
    dx = _flat_einsum(f"{out},{ws}->{xs}", ct, w).astype(x.dtype)
    dw = _merged_lead_einsum(f"{xs},{out}->{ws}", x, ct).astype(w.dtype)
    return dx, dw


lowp_einsum.defvjp(_lowp_einsum_fwd, _lowp_einsum_bwd)


def _merged_lead_einsum(spec: str, a, b):
    """einsum whose operands share leading axes that are summed away (a weight gradient over
    batch and length): those are merged into one first, so XLA:CPU gets a 2-D product instead
    of transposing [B, T, ...] activations (see `matmul`)."""
    sa, sb, out = _operands(spec)
    n = 0
    while n < min(len(sa), len(sb)) and sa[n] == sb[n] and sa[n] not in out:
        n += 1
    if n < 2:
        return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)
    a2, b2 = a.reshape(-1, *a.shape[n:]), b.reshape(-1, *b.shape[n:])
    if jax.default_backend() == "cpu" and out == sa[n:] + sb[n:]:
        y = _cpu_weight_grad(a2.reshape(a2.shape[0], -1), b2.reshape(b2.shape[0], -1))
        return y.reshape(a.shape[n:] + b.shape[n:])
    return jnp.einsum(f"N{sa[n:]},N{sb[n:]}->{out}", a2, b2, preferred_element_type=jnp.float32)


def _cpu_weight_grad(a, b):
    """a^T b for [tokens, in] x [tokens, out] in float32. XLA:CPU multiplies bf16 operands in this
    form (contracting their major axis) at ~280 GFLOP/s, 5x below its other forms, and inside a
    training step can reject it outright; the AMX kernel takes a^T and b in its tile layout
    (990 GFLOP/s with the transposes, SmolLM2 shapes). Without the kernels: float32 operands."""
    if amx.trains(a, b):
        return amx.weight_grad(a, b)
    return jnp.einsum("Ni,No->io", a.astype(jnp.float32), b.astype(jnp.float32))


def _operands(spec: str) -> tuple[str, str, str]:
    """"ab,bc->ac" -> ("ab", "bc", "ac")."""
    inputs, out = spec.split("->")
    a, b = inputs.split(",")
    return a, b, out


def _flat_einsum(spec: str, x, w, preferred_element_type=jnp.float32):
    xs, ws, out = _operands(spec)
    n = next((i for i, c in enumerate(xs) if c in ws), len(xs))
    if n < 2 or not out.startswith(xs[:n]):
        return jnp.einsum(spec, x, w, preferred_element_type=preferred_element_type)
    lead = x.shape[:n]
    y = jnp.einsum(f"N{xs[n:]},{ws}->N{out[n:]}", x.reshape(-1, *x.shape[n:]), w,
                   preferred_element_type=preferred_element_type)
    return y.reshape(*lead, *y.shape[1:])


def logits_matmul(h, w):
    """LM head [B, T, E] x [E, V] -> float32 logits (2-D product, see `matmul`; bf16 operands:
    `lowp_einsum`, or on CPU the AMX kernel: XLA:CPU runs this vocabulary-sized bf16 product in
    float32)."""
    return _accumulated_einsum("bte,ev->btv", h, w, jnp.float32)


def token_log_probs(logits, targets):
    """log p(target) per position, float32. logits [B,T,V], targets [B,T]."""
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def dot_attention(q, k, v, visible, scale):
    """Grouped-query attention. q: [B,T,H,D]; k, v: [B,Hkv,S,D] (`heads_first`); visible: [B,1,1,T,S].

    Both products are batched over (B, Hkv) with the contracted axis minor on both sides, the
    layout XLA runs without copying k or v (a decode step reads the whole cache in place).
    """
    b, t, h, d = q.shape
    hkv = k.shape[1]
    k, v = k.astype(q.dtype), v.astype(q.dtype)  # a float32 cache under a bfloat16 model
    q = q.reshape(b, t, hkv, h // hkv, d).transpose(0, 2, 3, 1, 4)  # [B,Hkv,G,T,D]
    logits = _accumulated_einsum("bkgtd,bksd->bkgts", q, k, jnp.float32) * scale
    logits = jnp.where(visible, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = matmul("bkgts,bksd->bkgtd", probs, v)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


def fused_attention_applies(q, kv_cache) -> bool:
    """cuDNN's flash attention (never stores the [T, S] scores) for GPU forward passes without a
    KV cache (training, scoring) in bf16/fp16; cached prefill/decode and other backends use
    `dot_attention`."""
    return (kv_cache is None and jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
            and q.shape[-1] <= 128)


def fused_attention(q, k, v, visible, scale, implementation="cudnn"):
    """`dot_attention` through `jax.nn.dot_product_attention`. q: [B,T,H,D]; k, v: [B,S,Hkv,D]
    (tokens first, as projected); visible: [B,1,1,T,S]. Rows with nothing visible (padding
    queries) see themselves, so no softmax row is empty; real tokens always see themselves."""
    t, s = visible.shape[-2:]
    mask = visible[:, 0] | jnp.eye(t, s, dtype=bool)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, implementation=implementation)


def attention_for(remat_policy: str) -> Callable:
    """`dot_attention`, recomputed in the backward pass under remat policy "attention" (its
    [B, Hkv, G, T, S] scores are then never stored: 1.1 GB per step for SmolLM2 at 4 x 512)."""
    if remat_policy == "attention":
        return jax.checkpoint(dot_attention, static_argnums=(4,))
    return dot_attention


def heads_first(x):
    """[B,T,Hkv,D] projections -> [B,Hkv,T,D], the key/value layout of `dot_attention` and the cache."""
    return x.transpose(0, 2, 1, 3)


def update_cache(cache_k, cache_v, k, v, end):
    """Writes this step's k, v [B,Hkv,T,D] into one layer's cache [B,Hkv,S,D] at slot `end`."""
    return _write_slots(cache_k, k, end), _write_slots(cache_v, v, end)


def _write_slots(cache, new, end):
    """In place. XLA:CPU has no bfloat16 dynamic-update-slice: it upcasts the whole cache to
    float32 and back each step (4 ms of a 38 ms SmolLM2 batch-16 decode step); the same bits
    written as uint16 stay an in-place write of the new slots."""
    new = new.astype(cache.dtype)
    if cache.dtype == jnp.bfloat16 and jax.default_backend() == "cpu":
        bits = jax.lax.dynamic_update_slice_in_dim(jax.lax.bitcast_convert_type(cache, jnp.uint16),
                                                   jax.lax.bitcast_convert_type(new, jnp.uint16), end, axis=2)
        return jax.lax.bitcast_convert_type(bits, jnp.bfloat16)
    return jax.lax.dynamic_update_slice_in_dim(cache, new, end, axis=2)


_REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def scan_layers(block: Callable, h, layer_params: dict, cache: KVCache | None, remat_policy: str,
                dtype=None, scan: bool = True):
    """Runs `block(h, params_i, (k_i, v_i) | None) -> (h, (k_i, v_i) | None)` over stacked layers.

    scan: one compiled layer body regardless of depth (else unrolled, `ModelConfig.scan_layers`);
    optional rematerialisation per layer. Weights are cast to `dtype` one layer at a time inside
    the loop, so the backward pass stacks their gradients in the stored (float32) dtype: XLA:CPU
    writes a bfloat16 [L, ...] gradient by converting the whole stack to float32 and back on every
    layer (bf16 train step 1.4x slower).
    """
    body = block
    if remat_policy not in ("none", "attention"):  # "attention": see `attention_for`
        body = jax.checkpoint(block, policy=_REMAT[remat_policy], prevent_cse=False)

    def step(carry, xs):
        params_i, kv_i = xs
        if dtype is not None:
            params_i = {name: x.astype(dtype) for name, x in params_i.items()}
        carry, kv_i = body(carry, params_i, kv_i)
        return carry, kv_i

    kv = (cache.k, cache.v) if cache is not None else None
    # Unrolled: the scan fully unrolled rather than a Python loop over slices, so each layer's
    # weight gradient is written into the stacked gradient in place; from slices, XLA:CPU builds
    # it as a 30-way concatenation fused into the optimizer (bf16 SmolLM2 step: AdamW 0.85 -> 0.48 s).
    return jax.lax.scan(step, h, (layer_params, kv), unroll=not scan)


def values(module_params: dict[str, nnx.Param], dtype=None) -> dict[str, jax.Array]:
    """Raw arrays of a dict of Params, cast to `dtype` (None: as stored)."""
    return {name: p[...] if dtype is None else p[...].astype(dtype) for name, p in module_params.items()}


def embedding_lookup(table, ids, dtype, rows_axis="vocab"):
    """Rows of `table` [rows_axis, embed] for `ids`. The table is first gathered over its `embed` (fsdp)
    shards, as FSDP does for every weight: gathering from an embed-sharded table yields embed-sharded
    rows, which the partitioner can only turn into batch-sharded activations by replicating them
    whole ("involuntary full rematerialization")."""
    return jnp.take(constrain(table.astype(dtype), (rows_axis, None)), ids, axis=0)


def constrain_hidden(h):
    return constrain(h, ("batch", "length", "act_embed"))
